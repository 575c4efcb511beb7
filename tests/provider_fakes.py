"""Fixtures that point each provider adapter at its conformance fake (tests/fakes/)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.gemini_api import FakeGemini
from tests.fakes.mistral_api import FakeMistral
from tests.fakes.model_api import FakeModelApi
from tests.fakes.openai_api import FakeOpenAI


@dataclass(frozen=True)
class Family:
    slug: str
    api: str
    key_env: str
    fake: type[FakeModelApi]
    path: str  # the base URL's path after the fake's origin


FAMILIES = [
    Family("gpt-4o-mini", "openai", "OPENAI_API_KEY", FakeOpenAI, "/v1"),
    Family("gpt-4o", "openai", "OPENAI_API_KEY", FakeOpenAI, "/v1"),
    Family("claude-sonnet", "anthropic", "ANTHROPIC_API_KEY", FakeAnthropic, ""),
    Family("gemini-flash", "gemini", "GEMINI_API_KEY", FakeGemini, "/v1beta/openai"),
    Family("mistral-small", "mistral", "MISTRAL_API_KEY", FakeMistral, "/v1"),
]


@pytest.fixture
def fakes(settings, monkeypatch) -> Iterator[dict[str, FakeModelApi]]:
    """One running fake per provider, with every provider's base URL and key pointing at them."""
    started: dict[str, FakeModelApi] = {}
    urls = dict(settings.PROVIDER_BASE_URLS)
    for family in FAMILIES:
        if family.api not in started:
            started[family.api] = family.fake(api_key=f"key-{family.api}").start()
            urls[family.api] = started[family.api].origin + family.path
            monkeypatch.setenv(family.key_env, f"key-{family.api}")
    settings.PROVIDER_BASE_URLS = urls
    try:
        yield started
    finally:
        for fake in started.values():
            fake.stop()


def png(width: int, height: int, *, kind: str = "png") -> str:
    """A real image of that size, as a data URL (grey, so it compresses to almost nothing)."""
    import base64

    if kind == "gif":
        data = b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"
        return "data:image/gif;base64," + base64.b64encode(data).decode()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    raw = (b"\x00" + b"\x80" * width) * height
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(data).decode()
