"""Claude through Anthropic's Messages API and its own SDK (docs.anthropic.com/en/api/messages,
.../en/docs/build-with-claude/streaming).

Anthropic calls its OpenAI-SDK compatibility layer "not a long-term or production-ready
solution" (no prompt caching, some fields ignored), so Claude is called natively:
- The stream is server-sent events: message_start (usage.input_tokens), content_block_start,
  content_block_delta (text_delta; thinking_delta for extended thinking), content_block_stop,
  message_delta (stop_reason and the cumulative usage.output_tokens, thinking included),
  message_stop; ping events at any time; an `error` event may arrive mid-stream.
- max_tokens is required; system text is a top-level `system`, not a message.
- API version 2026-10-21, which the 2.x SDK sends, refuses temperature, top_p and top_k at
  any value (400 "Extra inputs are not permitted"), so they are never sent; the SDK sends
  the key as Authorization: Bearer.
- Images: JPEG, PNG, GIF, WebP as base64 or URL sources; about width x height / 750 tokens,
  images beyond 1.15 megapixels scaled down first (about 1,600 tokens at most).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
from django.conf import settings

from chat.providers.base import (
    ALL_IMAGE_FORMATS,
    Capabilities,
    ProviderError,
    ReplyStream,
    StreamChunk,
    Usage,
    interrupted_error,
    status_error,
    timeout_error,
    unreachable_error,
)
from chat.providers.images import ImageInfo

CAPABILITIES = Capabilities(
    stream_options=False,
    usage_unasked=True,
    output_tokens_param="max_tokens",
    image_formats=ALL_IMAGE_FORMATS,
    sampling_exclusive=True,
    sampling=False,
)
DEFAULT_BASE_URL = "https://api.anthropic.com"
IMAGE_MAX_TOKENS = 1_600
_DATA_URL = re.compile(r"^data:(image/[a-z]+);base64,(.*)$", re.S)
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}

_clients: dict[tuple[str, str, float], anthropic.Anthropic] = {}
_clients_lock = threading.Lock()


def image_tokens(upstream_id: str, image: ImageInfo) -> int:
    if image.width and image.height:
        return min(-(-image.width * image.height // 750), IMAGE_MAX_TOKENS)
    return IMAGE_MAX_TOKENS


def capabilities(upstream_id: str) -> Capabilities:
    return CAPABILITIES


def _client(*, base_url: str, api_key: str) -> anthropic.Anthropic:
    timeout = float(settings.MODEL_TIMEOUT_SECONDS)
    # The SDK adds /v1/messages itself; a catalog URL ending in /v1 is the same endpoint.
    base_url = base_url.rstrip("/").removesuffix("/v1")
    key = (base_url, api_key, timeout)
    found = _clients.get(key)
    if found is None:
        with _clients_lock:
            found = _clients.get(key)
            if found is None:
                found = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
                _clients[key] = found
    return found


def translate_error(exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, anthropic.APITimeoutError):
        return timeout_error(settings.MODEL_TIMEOUT_SECONDS)
    if isinstance(exc, anthropic.APIConnectionError):
        return unreachable_error()
    if isinstance(exc, anthropic.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        inner = body.get("error") if isinstance(body.get("error"), dict) else {}
        detail = str(inner.get("message") or exc.message)[:300]
        return status_error(status=exc.status_code, detail=detail, headers=exc.response.headers, timeout_seconds=None)
    if isinstance(exc, anthropic.APIError):
        # An `error` event inside an open stream (overloaded_error and the like).
        return ProviderError(code="provider_error", message=f"The model provider had an error: {exc}", transient=True)
    return interrupted_error(exc)


def _part(part: dict) -> dict | None:
    if part.get("type") == "text":
        return {"type": "text", "text": part.get("text", "")}
    if part.get("type") == "image_url":
        url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
        match = _DATA_URL.match(url)
        if match:
            data = "".join(match.group(2).split())
            return {"type": "image", "source": {"type": "base64", "media_type": match.group(1), "data": data}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    return None


def to_messages(messages: list[dict]) -> tuple[str, list[dict]]:
    """OpenAI-shaped messages to Anthropic's: system text hoisted, same-role turns joined."""
    system: list[str] = []
    out: list[dict] = []
    for m in messages:
        content = m.get("content")
        if m["role"] in ("system", "developer"):
            system.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content))
            continue
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else [_part(p) for p in content]
        parts = [p for p in parts if p is not None and not (p["type"] == "text" and not p["text"])]
        if not parts:
            continue
        if out and out[-1]["role"] == m["role"]:
            out[-1]["content"].extend(parts)
        else:
            out.append({"role": m["role"], "content": parts})
    return "\n\n".join(system), out


def _chunks(events: Any) -> Iterator[StreamChunk]:
    input_tokens = 0
    for event in events:
        kind = event.type
        if kind == "message_start":
            u = event.message.usage
            input_tokens = (
                (u.input_tokens or 0)
                + (getattr(u, "cache_creation_input_tokens", None) or 0)
                + (getattr(u, "cache_read_input_tokens", None) or 0)
            )
        elif kind == "content_block_delta" and event.delta.type == "text_delta":
            if event.delta.text:
                yield StreamChunk(text=event.delta.text)
        elif kind == "message_delta":
            reason = _STOP_REASONS.get(event.delta.stop_reason or "", event.delta.stop_reason)
            usage = Usage(input_tokens=input_tokens, output_tokens=event.usage.output_tokens or 0)
            yield StreamChunk(usage=usage, finish_reason=reason)


def stream(*, base_url: str, api_key: str, caps: Capabilities, body: dict, estimate_input: Any) -> ReplyStream:
    system, messages = to_messages(body["messages"])
    request: dict[str, Any] = {
        "model": body["model"],
        "messages": messages,
        "max_tokens": body[caps.output_tokens_param],
        "stream": True,
    }
    if system:
        request["system"] = system
    if body.get("stop"):
        request["stop_sequences"] = body["stop"]
    try:
        if "timeout" in body:
            request["timeout"] = body["timeout"]
        raw = _client(base_url=base_url, api_key=api_key).messages.create(**request)
    except Exception as exc:
        raise translate_error(exc) from exc
    return ReplyStream(_chunks(raw), close=raw.close, translate=translate_error, estimate_input=estimate_input)


def model_ids(*, base_url: str, api_key: str) -> set[str]:
    try:
        return {m.id for m in _client(base_url=base_url, api_key=api_key).models.list(limit=1000)}
    except Exception as exc:
        raise translate_error(exc) from exc
