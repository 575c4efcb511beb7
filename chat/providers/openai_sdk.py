"""The `openai` SDK path, shared by every OpenAI-shaped API (OpenAI, Gemini, Mistral,
self-hosted servers); each provider module says what its API accepts.

The SDK's own retries are off: the worker decides what to retry, and never once text
has streamed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import openai
from django.conf import settings

from chat.providers.base import (
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

_clients: dict[tuple[str, str, float], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def client(*, base_url: str, api_key: str) -> openai.OpenAI:
    """One client (and connection pool) per endpoint and key: building one costs milliseconds."""
    timeout = float(settings.MODEL_TIMEOUT_SECONDS)
    key = (base_url, api_key, timeout)
    found = _clients.get(key)
    if found is None:
        with _clients_lock:
            found = _clients.get(key)
            if found is None:
                found = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
                _clients[key] = found
    return found


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:300]
        detail = body.get("message", {}).get("detail") if isinstance(body.get("message"), dict) else None
        if detail:  # Mistral's 422: {"message": {"detail": [field errors]}}
            return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)[:300]
    return str(exc.message)[:300]


def translate_error(exc: Exception) -> ProviderError:
    """Map an SDK or transport error to a ProviderError with a message a user can read."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return timeout_error(settings.MODEL_TIMEOUT_SECONDS)
    if isinstance(exc, openai.APIConnectionError):
        return unreachable_error()
    if isinstance(exc, openai.APIStatusError):
        return status_error(
            status=exc.status_code,
            detail=_provider_message(exc),
            headers=exc.response.headers,
            timeout_seconds=settings.MODEL_TIMEOUT_SECONDS,
        )
    if isinstance(exc, openai.APIError):
        return ProviderError(code="provider_error", message=f"The model provider had an error: {exc}", transient=True)
    return interrupted_error(exc)


def usage_of(raw: Any, caps: Capabilities) -> Usage:
    """Billable usage from an OpenAI-shaped usage object. Output includes reasoning tokens:
    OpenAI counts them inside completion_tokens; some OpenAI-compatible layers (Gemini's,
    per mozilla-ai/any-llm#1290) leave them out of it but not out of total_tokens."""
    prompt = raw.prompt_tokens or 0
    output = raw.completion_tokens or 0
    total = getattr(raw, "total_tokens", None) or 0
    details = getattr(raw, "completion_tokens_details", None)
    reasoning = (getattr(details, "reasoning_tokens", None) or 0) if details is not None else 0
    if caps.reasoning_outside_completion and total - prompt < output + reasoning:
        output += reasoning
    output = max(output, total - prompt)
    return Usage(input_tokens=prompt, output_tokens=output)


def _chunks(raw: Any, caps: Capabilities) -> Iterator[StreamChunk]:
    for chunk in raw:
        usage = usage_of(chunk.usage, caps) if getattr(chunk, "usage", None) is not None else None
        text = ""
        finish = None
        if chunk.choices:
            choice = chunk.choices[0]
            text = (choice.delta.content or "") if choice.delta else ""
            finish = choice.finish_reason
        if text or usage is not None or finish is not None:
            yield StreamChunk(text=text, usage=usage, finish_reason=finish)


def request_body(
    *,
    caps: Capabilities,
    model: str,
    messages: list[dict],
    max_tokens: int,
    temperature: float | None,
    top_p: float | None,
    stop: list[str] | None,
) -> dict:
    """The chat-completions request, with only the fields this API accepts."""
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True, caps.output_tokens_param: max_tokens}
    if caps.stream_options:
        body["stream_options"] = {"include_usage": True}
    if temperature is not None and caps.sampling:
        body["temperature"] = temperature
    if top_p is not None and caps.sampling and not (caps.sampling_exclusive and temperature is not None):
        body["top_p"] = top_p
    if stop:
        body["stop"] = stop
    return body


def stream(*, base_url: str, api_key: str, caps: Capabilities, body: dict, estimate_input: Any) -> ReplyStream:
    try:
        raw = client(base_url=base_url, api_key=api_key).chat.completions.create(**body)
    except Exception as exc:
        raise translate_error(exc) from exc
    return ReplyStream(_chunks(raw, caps), close=raw.close, translate=translate_error, estimate_input=estimate_input)


def model_ids(*, base_url: str, api_key: str) -> set[str]:
    """The ids GET /models lists (OpenAI, Gemini's compatibility layer, Mistral, most servers)."""
    try:
        page = client(base_url=base_url, api_key=api_key).models.list()
        return {m.id.removeprefix("models/") for m in page}
    except Exception as exc:
        raise translate_error(exc) from exc
