"""The /v1 path's model call (openai_api/upstream.py) against each provider's conformance
fake: only what each API accepts is sent, Claude goes through Anthropic's SDK, and reasoning
tokens are counted as output."""

# ruff: noqa: F811  (pytest fixtures imported from tests.provider_fakes)
from __future__ import annotations

import asyncio

import pytest

from chat.models import ModelSpec
from openai_api.request import CompletionRequest, Turn
from openai_api.upstream import open_stream
from tests.fakes.model_api import reply_words
from tests.provider_fakes import FAMILIES, fakes  # noqa: F401

pytestmark = pytest.mark.django_db


def call(spec: ModelSpec, text: str, **options) -> tuple[str, object]:
    request = CompletionRequest(
        model=spec.slug, turns=[Turn(role="user", text=text, images=0, content=text)], **options
    )

    async def run() -> tuple[str, object]:
        stream = await open_stream(spec=spec, request=request, max_tokens=100)
        parts, usage = [], None
        try:
            async for piece in stream:
                parts.append(piece.text)
                usage = piece.usage or usage
        finally:
            await stream.close()
        return "".join(parts), usage

    return asyncio.run(run())


@pytest.mark.parametrize("family", FAMILIES, ids=[f.slug for f in FAMILIES])
def test_each_family_answers_on_the_v1_path(fakes, family):
    spec = ModelSpec.objects.get(slug=family.slug)
    text, usage = call(spec, "[fake:words=4] hi", temperature=0.5)
    assert text == " ".join(reply_words(spec.upstream_id, 4))
    assert usage.output_tokens == 4 and usage.input_tokens > 0
    if family.api == "mistral":
        body = fakes["mistral"].bodies("/chat/completions")[-1]
        assert "stream_options" not in body and body["max_tokens"] == 100
    if family.api == "anthropic":
        assert "temperature" not in fakes["anthropic"].bodies("/messages")[-1]


def test_gpt5_gets_max_completion_tokens_and_gemini_thoughts_are_billed(fakes):
    spec = ModelSpec.objects.get(slug="gpt-4o")
    spec.upstream_id = "gpt-5"
    text, usage = call(spec, "[fake:words=3][fake:reasoning=40] hi")
    assert text and usage.output_tokens == 3 + 40
    assert fakes["openai"].bodies("/chat/completions")[-1]["max_completion_tokens"] == 100
    gemini = ModelSpec.objects.get(slug="gemini-flash")
    _, usage = call(gemini, "[fake:words=3][fake:reasoning=40] hi")
    assert usage.output_tokens == 3 + 40
