"""The `openai` SDK path, shared by every OpenAI-shaped API (OpenAI, Gemini, Mistral,
self-hosted servers); each provider module says what its API accepts.

The SDK's own retries are off: the worker decides what to retry, and never once text
has streamed.

A streamed reply's server-sent events are read from the SDK's unread response (as
`with_streaming_response` asks for it) by chat/providers/sse.py, not through its `Stream`:
that one stops reading at `data: [DONE]` and closes the response before the body's end (the
chunked terminator), which costs the connection (a new TCP, for a real provider a new TLS,
handshake on the next call). Read to the end, the connection goes back to the client's pool.

The request goes out through the client's documented custom-request path
(`client.post(path, cast_to=httpx.Response, body=...)`), with the body `request_body`
built: plain JSON values. `chat.completions.create` would first walk every message of
the body against the API's TypedDicts (the SDK's parameter transform, which changes
nothing in such a body; tests/test_chat_providers.py checks that): about 2.5 ms of CPU
for a four-message request, more for a long context, on every call.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
from django.conf import settings
from openai._constants import RAW_RESPONSE_HEADER

from chat.providers import sse
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

log = logging.getLogger(__name__)
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
    # A streamed body's read fails with the transport's own errors (as the SDK maps them).
    if isinstance(exc, httpx2.TimeoutException):
        return timeout_error(settings.MODEL_TIMEOUT_SECONDS)
    if isinstance(exc, httpx2.RequestError):
        return unreachable_error()
    return interrupted_error(exc)


def usage_of(raw: Any, caps: Capabilities) -> Usage:
    """Billable usage from an OpenAI-shaped usage object. Output includes reasoning tokens:
    OpenAI counts them inside completion_tokens; some OpenAI-compatible layers (Gemini's,
    per mozilla-ai/any-llm#1290) leave them out of it but not out of total_tokens."""
    details = getattr(raw, "completion_tokens_details", None)
    return _usage(
        caps,
        prompt=raw.prompt_tokens,
        output=raw.completion_tokens,
        total=getattr(raw, "total_tokens", None),
        reasoning=getattr(details, "reasoning_tokens", None) if details is not None else None,
    )


def _usage_of_json(raw: dict, caps: Capabilities) -> Usage:
    """`usage_of` for a usage object as the stream's JSON has it."""
    details = raw.get("completion_tokens_details")
    return _usage(
        caps,
        prompt=raw.get("prompt_tokens"),
        output=raw.get("completion_tokens"),
        total=raw.get("total_tokens"),
        reasoning=details.get("reasoning_tokens") if isinstance(details, dict) else None,
    )


def _usage(caps: Capabilities, *, prompt: Any, output: Any, total: Any, reasoning: Any) -> Usage:
    prompt, output, total, reasoning = prompt or 0, output or 0, total or 0, reasoning or 0
    if caps.reasoning_outside_completion and total - prompt < output + reasoning:
        output += reasoning
    output = max(output, total - prompt)
    return Usage(input_tokens=prompt, output_tokens=output)


def _events(response: httpx2.Response) -> Iterator[bytes]:
    """The data of each server-sent event up to `[DONE]` (chat/providers/sse.py); then the
    rest of the body is read (the chunked terminator), so the connection can be used again."""
    reader = sse.EventReader()
    body = response.iter_bytes()
    for data in body:
        yield from reader.feed(data)
        if reader.done:
            try:
                for _ in body:  # the body's end: nothing but the terminator is left
                    pass
            except Exception:  # the reply is whole; a body cut after it costs only the connection
                log.debug("a stream's body broke after [DONE]", exc_info=True)
            return
    yield from reader.end()


def _chunks(response: httpx2.Response, caps: Capabilities) -> Iterator[StreamChunk]:
    for event in _events(response):
        fields = sse.delta(json.loads(event), response.request)
        if fields is None:
            continue
        text, finish, raw_usage = fields
        usage = _usage_of_json(raw_usage, caps) if raw_usage is not None else None
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
    body = dict(body)
    # Unread (as `with_streaming_response` asks for it), so the events are read as they come.
    options: dict[str, Any] = {"headers": {RAW_RESPONSE_HEADER: "stream"}}
    if (timeout := body.pop("timeout", None)) is not None:
        options["timeout"] = timeout
    try:
        # An HTTP error status raises the SDK's own errors, as `create` would.
        http = client(base_url=base_url, api_key=api_key).post(
            "/chat/completions", cast_to=httpx2.Response, body=body, options=options
        )
    except Exception as exc:
        raise translate_error(exc) from exc
    return ReplyStream(_chunks(http, caps), close=http.close, translate=translate_error, estimate_input=estimate_input)


def model_ids(*, base_url: str, api_key: str) -> set[str]:
    """The ids GET /models lists (OpenAI, Gemini's compatibility layer, Mistral, most servers)."""
    try:
        page = client(base_url=base_url, api_key=api_key).models.list()
        return {m.id.removeprefix("models/") for m in page}
    except Exception as exc:
        raise translate_error(exc) from exc
