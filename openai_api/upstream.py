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

from chat.models import ModelSpec
from chat.providers import ProviderError, translate_error
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
    key = (spec.base_url, spec.api_key, timeout)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = openai.AsyncOpenAI(
            base_url=spec.base_url, api_key=spec.api_key, max_retries=0, timeout=timeout
        )
    return client


def _params(spec: ModelSpec, request: CompletionRequest, max_tokens: int) -> dict:
    params: dict = {
        "model": spec.upstream_id,
        "messages": request.upstream_messages(),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
    }
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.top_p is not None:
        params["top_p"] = request.top_p
    if request.stop:
        params["stop"] = request.stop
    if request.user and spec.provider == "OpenAI":
        params["user"] = request.user  # the others refuse or ignore it
    return params


def _usage(raw: object) -> Usage:
    details = getattr(raw, "completion_tokens_details", None)
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    return Usage(
        input_tokens=getattr(raw, "prompt_tokens", 0) or 0,
        output_tokens=getattr(raw, "completion_tokens", 0) or 0,
        reasoning_tokens=getattr(details, "reasoning_tokens", None),
        cached_tokens=getattr(prompt_details, "cached_tokens", None),
    )


class UpstreamStream:
    """An open streamed reply: `async for piece in stream`; `close()` stops it early."""

    def __init__(self, raw: openai.AsyncStream) -> None:
        self._raw = raw
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
                usage = _usage(chunk.usage) if chunk.usage is not None else None
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


async def open_stream(*, spec: ModelSpec, request: CompletionRequest, max_tokens: int) -> UpstreamStream:
    """Start the call and wait for its first piece; raises ProviderError if it fails before any."""
    if spec.is_demo and not settings.DEMO_ALLOWED:
        raise ProviderError(code="model_unavailable", message=spec.unavailable_reason, transient=False)
    try:
        raw = await _client(spec).chat.completions.create(**_params(spec, request, max_tokens))
    except Exception as exc:
        raise translate_error(exc) from exc
    stream = UpstreamStream(raw)
    try:
        await stream.first()
    except BaseException:
        await stream.close()
        raise
    return stream


__all__ = ["Piece", "ProviderError", "UpstreamStream", "Usage", "open_stream"]
