"""The model call for the OpenAI-compatible API, made from the web process with the async
`openai` client: no queue and no worker hop between the client and the model.

Errors are translated by chat.providers.translate_error, so both paths speak of a
failed call the same way.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass

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


# An AsyncOpenAI client (and its connection pool) belongs to the event loop it was
# first used on: one set per loop, each keyed by endpoint and key.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def _client(spec: ModelSpec) -> openai.AsyncOpenAI:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    timeout = float(settings.MODEL_TIMEOUT_SECONDS)
    base_url = providers.base_url(spec)  # OPENAI_BASE_URL and the like apply here too
    key = (base_url, spec.api_key, timeout)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = openai.AsyncOpenAI(
            base_url=base_url, api_key=spec.api_key, max_retries=0, timeout=timeout
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


class UpstreamStream:
    """An open streamed reply: `async for piece in stream`; `close()` stops it early."""

    def __init__(self, raw: openai.AsyncStream, spec: ModelSpec | None = None) -> None:
        self._raw = raw
        self._spec = spec
        self._iter = raw.__aiter__()
        self._first: Piece | None = None

    async def first(self) -> Piece | None:
        """Wait for the first piece: errors before any text surface here, before a response starts."""
        self._first = await self._next()
        return self._first

    async def _next(self) -> Piece | None:
        """The next piece with text, a finish reason or usage; None at the end of the stream."""
        try:
            while True:
                try:
                    chunk = await self._iter.__anext__()
                except StopAsyncIteration:
                    return None
                usage = _usage(chunk.usage, self._spec) if chunk.usage is not None else None
                text, finish = "", None
                if chunk.choices:
                    choice = chunk.choices[0]
                    text = (choice.delta.content or "") if choice.delta else ""
                    finish = choice.finish_reason
                if text or usage is not None or finish is not None:
                    return Piece(text=text, finish_reason=finish, usage=usage)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc) from exc

    async def __aiter__(self) -> AsyncIterator[Piece]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while (piece := await self._next()) is not None:
            yield piece

    async def close(self) -> None:
        try:
            await self._raw.close()
        except Exception:  # closing a broken connection may fail; it is closed either way
            pass


class _AdapterStream(UpstreamStream):
    """A provider whose SDK is not the openai one (Claude, through `anthropic`): the sync
    adapter of chat/providers, each read done in a thread so the event loop never blocks."""

    def __init__(self, reply: providers.ReplyStream) -> None:
        self._reply = reply
        self._chunks = iter(reply)
        self._first = None

    def _step(self) -> providers.StreamChunk | None:
        return next(self._chunks, None)

    async def _next(self) -> Piece | None:
        while True:
            chunk = await asyncio.to_thread(self._step)
            if chunk is None:
                return None
            usage = Usage(chunk.usage.input_tokens, chunk.usage.output_tokens) if chunk.usage else None
            if chunk.text or usage is not None or chunk.finish_reason is not None:
                return Piece(text=chunk.text, finish_reason=chunk.finish_reason, usage=usage)

    async def close(self) -> None:
        await asyncio.to_thread(self._reply.close)


async def open_stream(*, spec: ModelSpec, request: CompletionRequest, max_tokens: int) -> UpstreamStream:
    """Start the call and wait for its first piece; raises ProviderError if it fails before any."""
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
        try:
            raw = await _client(spec).chat.completions.create(**_params(spec, request, max_tokens))
        except Exception as exc:
            raise translate_error(exc) from exc
        stream = UpstreamStream(raw, spec)
    try:
        await stream.first()
    except BaseException:
        await stream.close()
        raise
    return stream


__all__ = ["Piece", "ProviderError", "UpstreamStream", "Usage", "open_stream"]
