"""The OpenAI-compatible endpoints: POST /v1/chat/completions and GET /v1/models.

Async views under uvicorn: the model is called from the web process (openai_api/upstream.py),
so a reply's first token crosses one process. Database work runs in
threads (`sync_to_async`), one hop before the call and one after it. Settling runs
shielded in a `finally`, so a client that disconnects mid-stream (Django cancels the
view's task) still pays for the part generated, and only once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chat.providers import ProviderError
from chat.selectors import models_catalog
from openai_api import services, shapes
from openai_api.errors import OpenAIError, error_response
from openai_api.limits import key_rate_check
from openai_api.services import AUTO, Begun, Finished, Replay
from openai_api.upstream import UpstreamStream, Usage, open_stream

log = logging.getLogger(__name__)


def _method_not_allowed(allowed: str) -> JsonResponse:
    response = OpenAIError(405, f"Use {allowed} on this endpoint.", code="method_not_allowed").response()
    response["Allow"] = allowed
    return response


def _release_connection() -> None:
    # A stream can last minutes: its database connection goes back (to the pool) as soon
    # as the step that needed it is done. (Inside a test's transaction it must stay.)
    if not connection.in_atomic_block:
        connection.close()


def _in_own_thread(fn, **kwargs):
    """Run `fn` in a pool thread that gives its database connection back when done: used to
    settle, which must finish even when the request's own context is being torn down."""

    def run():
        try:
            return fn(**kwargs)
        finally:
            _release_connection()

    return sync_to_async(run, thread_sensitive=False)()


async def _settle(begun: Begun, **kwargs) -> Finished:
    # Shielded: a second cancellation must not stop a settlement that has begun.
    return await asyncio.shield(_in_own_thread(services.call_finish, begun=begun, **kwargs))


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        begun = await sync_to_async(_begin)(request)
    except OpenAIError as err:
        return err.response()
    if isinstance(begun, Replay):
        return _replay(begun)
    try:
        upstream = await open_stream(spec=begun.spec, request=begun.request, max_tokens=begun.max_tokens)
    except ProviderError as err:
        finished = await _settle(begun, text="", usage=None, finish_reason="", disconnected=False, failure=err)
        return finished.error.response()
    except asyncio.CancelledError:
        await _settle(begun, text="", usage=None, finish_reason="", disconnected=True, failure=None)
        raise
    if begun.request.stream:
        response = StreamingHttpResponse(_stream(begun, upstream), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    return await _complete(begun, upstream)


def _begin(request: HttpRequest) -> Begun | Replay:
    try:
        return services.call_begin(
            authorization=request.headers.get("Authorization", ""),
            body=request.body,
            idempotency_key=request.headers.get("Idempotency-Key", ""),
        )
    finally:
        _release_connection()


class _Reading:
    """What has arrived from the model so far."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.finish_reason = "stop"
        self.failure: ProviderError | None = None
        self.ended = False

    def add(self, piece) -> None:
        if piece.text:
            self.parts.append(piece.text)
        if piece.finish_reason:
            self.finish_reason = piece.finish_reason
        if piece.usage is not None:
            self.usage = piece.usage

    @property
    def text(self) -> str:
        return "".join(self.parts)


async def _read(begun: Begun, upstream: UpstreamStream, reading: _Reading) -> AsyncIterator[list[str]]:
    """The pieces of text of each read from the model, as they arrive; stops (as `length`)
    before the hold's time limit."""
    try:
        async for batch in upstream.batches():
            texts = []
            for piece in batch:
                reading.add(piece)
                if piece.text:
                    texts.append(piece.text)
            if texts:
                yield texts
            if time.monotonic() >= begun.deadline:
                reading.finish_reason = "length"
                break
        reading.ended = True
    except ProviderError as err:
        reading.failure = err
        reading.ended = True


async def _finish(begun: Begun, upstream: UpstreamStream, reading: _Reading) -> Finished:
    await asyncio.shield(upstream.close())
    return await _settle(
        begun,
        text=reading.text,
        usage=reading.usage,
        finish_reason=reading.finish_reason,
        disconnected=not reading.ended,
        failure=reading.failure,
    )


async def _complete(begun: Begun, upstream: UpstreamStream) -> HttpResponse:
    reading = _Reading()
    try:
        async for _ in _read(begun, upstream, reading):
            pass
    finally:
        finished = await _finish(begun, upstream, reading)
    if finished.error is not None:
        return finished.error.response()
    if reading.failure is not None:
        log.warning("API call cut off; billed for the part received", extra={"call_id": begun.call.pk})
    call = begun.call
    return JsonResponse(
        shapes.completion(
            id=call.completion_id,
            created=int(call.created_at.timestamp()),
            model=begun.spec.slug,
            text=reading.text,
            finish_reason=reading.finish_reason if reading.failure is None else "length",
            usage=finished.usage,
            panels={**begun.panels, "cost": finished.cost, "usage_estimated": finished.estimated},
        )
    )


async def _stream(begun: Begun, upstream: UpstreamStream) -> AsyncIterator[bytes]:
    # What is ready at once goes out in one write (the role chunk with the first text; the
    # chunks of one read from the model; the finish, usage and [DONE]): each write costs
    # the web process a pass through Django's and uvicorn's response machinery.
    call = begun.call
    chunks = shapes.Chunks(
        id=call.completion_id,
        created=int(call.created_at.timestamp()),
        model=begun.spec.slug,
        include_usage=begun.request.include_usage,
    )
    reading = _Reading()
    head = chunks.role(begun.panels)
    try:
        async for texts in _read(begun, upstream, reading):
            frames = b"".join([chunks.text(text) for text in texts])
            if head:
                frames, head = head + frames, b""
            yield frames
    finally:
        # Runs on a normal end, a model failure, and a client that went away (cancelled).
        finished = await _finish(begun, upstream, reading)
    if reading.failure is not None:
        error = services.provider_error(reading.failure)
        yield head + chunks.error(error.body())
        return
    tail = [head, chunks.finish(reading.finish_reason)]
    if chunks.include_usage:
        tail.append(
            chunks.usage(finished.usage, {**begun.panels, "cost": finished.cost, "usage_estimated": finished.estimated})
        )
    tail.append(chunks.done())
    yield b"".join(tail)


def _replay(replay: Replay) -> HttpResponse:
    """The first outcome of an Idempotency-Key, as a body or (for a stream) as chunks."""
    if replay.status != 200 or not replay.stream:
        response = error_response(replay.status, replay.body)
        response["Idempotent-Replayed"] = "true"
        return response
    body = replay.body
    choice = body["choices"][0]
    chunks = shapes.Chunks(id=body["id"], created=body["created"], model=body["model"], include_usage=True)

    async def frames() -> AsyncIterator[bytes]:
        yield chunks.role(body.get("panels", {}))
        if choice["message"]["content"]:
            yield chunks.text(choice["message"]["content"])
        yield chunks.finish(choice["finish_reason"])
        yield (
            "data: "
            + json.dumps({**chunks.head, "system_fingerprint": None, "choices": [], "usage": body["usage"],
                          "panels": body.get("panels", {})}, separators=(",", ":"))
            + "\n\n"
        ).encode()  # fmt: skip
        yield chunks.done()

    response = StreamingHttpResponse(frames(), content_type="text/event-stream")
    response["Idempotent-Replayed"] = "true"
    return response


def _models(authorization: str) -> dict:
    try:
        key_rate_check(services.key_authenticate(authorization))
        data = [
            {"id": AUTO, "object": "model", "created": 0, "owned_by": "panels"},
        ]
        for spec in models_catalog():
            if spec.available:
                data.append({"id": spec.slug, "object": "model", "created": 0, "owned_by": spec.provider})
        return {"object": "list", "data": data}
    finally:
        _release_connection()


async def models(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        body = await sync_to_async(_models)(request.headers.get("Authorization", ""))
    except OpenAIError as err:
        return err.response()
    return JsonResponse(body)
