"""The model call for the OpenAI-compatible API, made from the web process: no queue and
no worker hop between the client and the model.

An OpenAI-shaped API (OpenAI, Gemini, Mistral, self-hosted servers) is called through the
`openai` SDK's async client, as the worker's adapters call it (chat/providers/openai_sdk.py):
its custom-request path with the body built once, and the response unread, its server-sent
events read by chat/providers/sse.py. Its `AsyncStream` built a typed object for every chunk,
about a sixth of the web process's CPU per streamed reply under load. A refusal raises the
SDK's own `APIStatusError`, a transport failure its `APITimeoutError` or
`APIConnectionError`, an `error` event inside a stream its `APIError`, and
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
from openai._constants import RAW_RESPONSE_HEADER

from chat import providers
from chat.models import ModelSpec
from chat.providers import ProviderError, openai_sdk, sse, translate_error
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


# An SDK client (and its connection pool) belongs to the event loop it was first used on:
# one per loop, endpoint and key, as chat/providers/openai_sdk.client keeps one per endpoint.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def _client(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    timeout = float(settings.MODEL_TIMEOUT_SECONDS)
    key = (base_url, api_key, timeout)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
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
    """An OpenAI-shaped API's server-sent events (chat/providers/sse.py), read from the SDK's
    unread response as they come."""

    def __init__(self, response: httpx2.Response, spec: ModelSpec) -> None:
        self._response = response
        self._spec = spec
        self._bytes = response.aiter_bytes()
        self._reader = sse.EventReader()
        self._ended = False  # the body read to its end

    def _pieces(self, events: list[bytes]) -> list[Piece]:
        pieces: list[Piece] = []
        for event in events:
            fields = sse.delta(json.loads(event), self._response.request)
            if fields is None:
                continue
            text, finish, raw_usage = fields
            usage = _usage(_attrs(raw_usage), self._spec) if raw_usage is not None else None
            if text or usage is not None or finish is not None:
                pieces.append(Piece(text=text, finish_reason=finish, usage=usage))
        return pieces

    async def _next_batch(self) -> list[Piece] | None:
        try:
            while not self._reader.done and not self._ended:
                try:
                    data = await self._bytes.__anext__()
                except StopAsyncIteration:
                    self._ended = True
                    return self._pieces(self._reader.end()) or None
                if pieces := self._pieces(self._reader.feed(data)):
                    return pieces
            return None
        except (asyncio.CancelledError, ProviderError):
            raise
        except Exception as exc:  # the SDK's errors and the transport's, as the chat path words them
            raise translate_error(exc) from exc

    async def close(self) -> None:
        try:
            if self._reader.done and not self._ended:
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
    # OPENAI_BASE_URL and the like apply here too. As in chat/providers/openai_sdk.stream: the
    # SDK's custom-request path, the response unread; a refusal raises the SDK's own error.
    client = _client(providers.base_url(spec), spec.api_key)
    try:
        response = await client.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            body=_params(spec, request, max_tokens),
            options={"headers": {RAW_RESPONSE_HEADER: "stream"}},
        )
    except Exception as exc:
        raise translate_error(exc) from exc
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
