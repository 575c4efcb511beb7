"""The model call for the OpenAI-compatible API, made from the web process: no queue and
no worker hop between the client and the model.

An OpenAI-shaped API (OpenAI, Gemini, Mistral, self-hosted servers) is called over raw
HTTP with `httpx2`, the `openai` SDK's own transport, and its server-sent events are read
here: the SDK built a typed object for every chunk (and an unused idempotency key for
every call), about a sixth of the web process's CPU per streamed reply under load. What a
failure looks like is still the SDK's: a refusal becomes its `APIStatusError` (built as
its client builds it), a transport failure its `APITimeoutError` or `APIConnectionError`,
an `error` event inside a stream its `APIError` (as `openai.AsyncStream` raises it), and
chat.providers.translate_error speaks of each as the chat path does. Claude goes through
the `anthropic` SDK (chat/providers), each read in a thread.

The events of one network read come out together (`UpstreamStream.batches`), so a view
writes them to its client in one frame rather than one write per token.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace

import httpx2
import openai
from django.conf import settings

from chat import providers
from chat.models import ModelSpec
from chat.providers import ProviderError, openai_sdk, translate_error
from openai_api.request import CompletionRequest


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Piece:
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


# An HTTP client (and its connection pool) belongs to the event loop it was first used
# on: one per loop and endpoint. The limits are the openai SDK's defaults.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, httpx2.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)


def _client(base_url: str) -> httpx2.AsyncClient:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    timeout = float(settings.MODEL_TIMEOUT_SECONDS)
    key = (base_url, timeout)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = httpx2.AsyncClient(
            base_url=base_url.rstrip("/") + "/", timeout=timeout, limits=_LIMITS, follow_redirects=True
        )
    return client


def _params(spec: ModelSpec, request: CompletionRequest, max_tokens: int) -> dict:
    # Only what this provider's API accepts (chat/providers: Mistral refuses stream_options and
    # max_completion_tokens, GPT-5 and o-series refuse max_tokens).
    params = openai_sdk.request_body(
        caps=providers.capabilities(spec),
        model=spec.upstream_id,
        messages=request.upstream_messages(),
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
    )
    if request.user and spec.api == ModelSpec.Api.OPENAI:
        params["user"] = request.user  # the others refuse or ignore it
    return params


def _usage(raw: object, spec: ModelSpec | None = None) -> Usage:
    details = getattr(raw, "completion_tokens_details", None)
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    # Reasoning tokens billed as output, whichever way the provider counts them (Gemini).
    billed = openai_sdk.usage_of(raw, providers.capabilities(spec)) if spec is not None else None
    return Usage(
        input_tokens=getattr(raw, "prompt_tokens", 0) or 0,
        output_tokens=billed.output_tokens if billed else (getattr(raw, "completion_tokens", 0) or 0),
        reasoning_tokens=getattr(details, "reasoning_tokens", None),
        cached_tokens=getattr(prompt_details, "cached_tokens", None),
    )


def _attrs(value: object) -> object:
    """A usage object's JSON as the attributes the SDK's objects have (once per reply)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{str(k): _attrs(v) for k, v in value.items()})
    return value


# The SDK's classes for a refused call, by status (openai/_client.py, _make_status_error).
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def _status_error(response: httpx2.Response) -> openai.APIStatusError:
    """What the openai SDK raises for this refusal (openai/_base_client.py,
    _make_status_error_from_response): the body as JSON when it is, else as text."""
    message = f"Error code: {response.status_code}"
    text = response.text.strip()
    body: object = text
    try:
        body = json.loads(text)
    except ValueError:
        pass
    else:
        error = body.get("error", body) if isinstance(body, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        if isinstance(detail, str) and detail:
            message += f" - {detail}"
    data = body.get("error", body) if isinstance(body, dict) else body
    status = response.status_code
    kind = _STATUS_ERRORS.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return kind(message, response=response, body=data)


def _transport_error(exc: Exception, request: httpx2.Request) -> ProviderError:
    # As the SDK wraps them (openai/_base_client.py and _streaming.py).
    if isinstance(exc, httpx2.TimeoutException):
        return translate_error(openai.APITimeoutError(request=request))
    if isinstance(exc, (httpx2.HTTPError, OSError)):
        return translate_error(openai.APIConnectionError(request=request))
    return translate_error(exc)


class UpstreamStream:
    """An open streamed reply: `async for batch in stream.batches()` (the pieces that came
    in one read), or `async for piece in stream`; `close()` stops it early."""

    _first: list[Piece] | None = None
    _started = False

    async def first(self) -> list[Piece] | None:
        """Wait for the first pieces: errors before any text surface here, before a response starts."""
        self._first = await self._next_batch()
        self._started = True
        return self._first

    async def _next_batch(self) -> list[Piece] | None:
        """The next pieces with text, a finish reason or usage; None at the end of the stream."""
        raise NotImplementedError

    async def batches(self) -> AsyncIterator[list[Piece]]:
        if self._started:
            first, self._first, self._started = self._first, None, False
            if first is None:
                return
            yield first
        while (batch := await self._next_batch()) is not None:
            yield batch

    async def __aiter__(self) -> AsyncIterator[Piece]:
        async for batch in self.batches():
            for piece in batch:
                yield piece

    async def close(self) -> None:
        raise NotImplementedError


class _EventStream(UpstreamStream):
    """An OpenAI-shaped API's server-sent events, read as `openai.AsyncStream` reads them:
    `data:` lines joined, `[DONE]` ends the stream, an event whose data has an `error`
    raises APIError; other fields (event, id, retry, comments) are ignored."""

    def __init__(self, response: httpx2.Response, spec: ModelSpec) -> None:
        self._response = response
        self._spec = spec
        self._bytes = response.aiter_bytes()
        self._buffer = b""
        self._done = False  # [DONE] seen, or the body ended
        self._ended = False  # the body read to its end

    def _events(self) -> list[Piece]:
        """The pieces of the complete events in the buffer (the rest waits for more bytes)."""
        buffer = self._buffer
        if b"\r" in buffer:  # CRLF or CR line ends (a CR at the end may be half of a CRLF)
            held = b"\r" if buffer.endswith(b"\r") else b""
            buffer = buffer[: len(buffer) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            end = buffer.rfind(b"\n\n")
            if end < 0:
                self._buffer = buffer + held
                return []
            self._buffer = buffer[end + 2 :] + held
        else:
            end = buffer.rfind(b"\n\n")
            if end < 0:
                return []
            self._buffer = buffer[end + 2 :]
        pieces: list[Piece] = []
        for event in buffer[:end].split(b"\n\n"):
            lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
            if not lines:
                continue
            data = b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)
            if data.startswith(b"[DONE]"):
                self._done = True
                break
            piece = self._piece(json.loads(data))
            if piece is not None:
                pieces.append(piece)
        return pieces

    def _piece(self, chunk: object) -> Piece | None:
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            if not message or not isinstance(message, str):
                message = "An error occurred during streaming"
            raise openai.APIError(message=message, request=self._response.request, body=error)
        raw_usage = chunk.get("usage")
        usage = _usage(_attrs(raw_usage), self._spec) if raw_usage is not None else None
        text, finish = "", None
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            text = (delta.get("content") or "") if delta else ""
            finish = choice.get("finish_reason")
        if text or usage is not None or finish is not None:
            return Piece(text=text, finish_reason=finish, usage=usage)
        return None

    async def _next_batch(self) -> list[Piece] | None:
        try:
            while not self._done:
                try:
                    data = await self._bytes.__anext__()
                except StopAsyncIteration:
                    self._done = self._ended = True
                    return None
                self._buffer += data
                pieces = self._events()
                if pieces:
                    return pieces
            return None
        except asyncio.CancelledError:
            raise
        except ProviderError:
            raise
        except httpx2.HTTPError as exc:
            raise _transport_error(exc, self._response.request) from exc
        except Exception as exc:
            raise translate_error(exc) from exc

    async def close(self) -> None:
        try:
            if self._done and not self._ended:
                # HTTP/1.1 reuses the connection only once the body is read to its end (what
                # follows [DONE]: the chunked body's last, empty chunk).
                async for _ in self._bytes:
                    pass
            await self._response.aclose()
        except Exception:  # closing a broken connection may fail; it is closed either way
            pass


class _AdapterStream(UpstreamStream):
    """A provider whose SDK is not the openai one (Claude, through `anthropic`): the sync
    adapter of chat/providers, each read done in a thread so the event loop never blocks."""

    def __init__(self, reply: providers.ReplyStream) -> None:
        self._reply = reply
        self._chunks = iter(reply)

    def _step(self) -> providers.StreamChunk | None:
        return next(self._chunks, None)

    async def _next_batch(self) -> list[Piece] | None:
        while True:
            chunk = await asyncio.to_thread(self._step)
            if chunk is None:
                return None
            usage = Usage(chunk.usage.input_tokens, chunk.usage.output_tokens) if chunk.usage else None
            if chunk.text or usage is not None or chunk.finish_reason is not None:
                return [Piece(text=chunk.text, finish_reason=chunk.finish_reason, usage=usage)]

    async def close(self) -> None:
        await asyncio.to_thread(self._reply.close)


async def _open_events(spec: ModelSpec, request: CompletionRequest, max_tokens: int) -> _EventStream:
    client = _client(providers.base_url(spec))  # OPENAI_BASE_URL and the like apply here too
    headers = {"Accept": "text/event-stream"}
    if api_key := spec.api_key:  # as the SDK: no key, no Authorization header
        headers["Authorization"] = f"Bearer {api_key}"
    call = client.build_request("POST", "chat/completions", json=_params(spec, request, max_tokens), headers=headers)
    try:
        response = await client.send(call, stream=True)
    except Exception as exc:
        raise _transport_error(exc, call) from exc
    if response.status_code >= 400:
        try:
            await response.aread()
        except Exception as exc:
            raise _transport_error(exc, call) from exc
        finally:
            await response.aclose()
        raise translate_error(_status_error(response))
    return _EventStream(response, spec)


async def open_stream(*, spec: ModelSpec, request: CompletionRequest, max_tokens: int) -> UpstreamStream:
    """Start the call and wait for its first pieces; raises ProviderError if it fails before any."""
    if spec.is_demo and not settings.DEMO_ALLOWED:
        raise ProviderError(code="model_unavailable", message=spec.operator_reason, transient=False)
    if spec.api == ModelSpec.Api.ANTHROPIC:
        reply = await asyncio.to_thread(
            providers.chat_stream,
            spec=spec,
            messages=request.upstream_messages(),
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop,
        )
        stream: UpstreamStream = _AdapterStream(reply)
    else:
        stream = await _open_events(spec, request, max_tokens)
    try:
        await stream.first()
    except BaseException:
        await stream.close()
        raise
    return stream


__all__ = ["Piece", "ProviderError", "UpstreamStream", "Usage", "open_stream"]
