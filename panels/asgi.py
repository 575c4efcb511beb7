"""The ASGI application (uvicorn serves it, in production and in scripts/run.sh).

Django gives every request a thread of its own for its synchronous parts (middleware,
DRF views, the ORM) and keeps that thread, and the database connection opened in it,
until the response has been sent. For a reply stream that is the whole life of the
stream: 1,000 readers would hold 1,000 idle threads and 1,000 database connections,
and PostgreSQL's connection limit would refuse everyone else. A reply stream's
synchronous parts are short (authenticate, look the message up, a re-read every
keep-alive period), so stream requests share one thread instead, and while they wait
for the next event they hold no thread and no connection of their own
(chat/streams.py: `sse_events_async`). The common one, the first reader of a reply this
process has just accepted, with a key it has just verified, has no synchronous part: it is
answered on the event loop (chat/api.py: `MessageStreamApi.respond_on_loop`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

# Paths whose requests share one thread for their synchronous parts.
SHARED_THREAD_PATHS = re.compile(r"^/api/v1/messages/\d+/stream$")
# The OpenAI-compatible API, and the middleware it runs instead of the site's
# (openai_api/middleware.py: all of it on the event loop, none of the browser's).
API_PATH_PREFIX = "/v1/"
API_MIDDLEWARE = ["openai_api.middleware.ApiEdgeMiddleware"]
# Panels' own API called with a key (`Authorization: Bearer ...`): no browser session,
# so none of the browser's middleware either (panels/middleware.py: KeyApiEdgeMiddleware).
# Called from a browser (session and CSRF), it runs the site's middleware as any page does.
KEY_API_PATH_PREFIX = "/api/v1/"
KEY_API_MIDDLEWARE = ["panels.middleware.KeyApiEdgeMiddleware"]


# Request threads an API handler keeps between requests.
IDLE_REQUEST_THREADS = 32


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler with `middleware` in place of settings.MIDDLEWARE.

    A request's synchronous parts run on a thread of its own, as Django's handler runs
    them, but the thread is taken from those earlier requests left idle instead of made
    for this request and joined after it (thread start and join were about a tenth of
    the web process's CPU under the chat benchmark).
    """

    def __init__(self, middleware: list[str] | None = None) -> None:
        self.middleware = API_MIDDLEWARE if middleware is None else middleware
        self._idle: list[ThreadPoolExecutor] = []
        super().__init__()

    async def __call__(self, scope, receive, send):  # type: ignore[override]
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(1, thread_name_prefix="panels-request")
        try:
            # One request at a time on the thread; asgiref refuses a late call after the exit.
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self._idle) < IDLE_REQUEST_THREADS:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)

    async def handle(self, scope, receive, send):  # type: ignore[override]
        """ASGIHandler.handle, except that `request_started` is sent on the request's thread in
        the view's own hop (`_view_and_render`) rather than in a hop of its own before the
        middleware: its receivers (the database connections' and the query log's reset) act
        on that thread's state, and the edge middleware before the view touches neither. A
        response whose body is made (not a stream) is closed in that hop too, rather than in
        another after it is sent. A hop is a wake-up of the thread and a hand-over of the GIL
        each way."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            await signals.request_started.asend(sender=self.__class__, scope=scope)
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            if not getattr(request, "_started_sent", False):  # the middleware answered (a 413)
                await signals.request_started.asend(sender=self.__class__, scope=scope)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected while the response went out
            return response

        # As Django's handler: a disconnect while the response is made cancels it.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            if not getattr(request, "_finished_sent", False):
                await signals.request_finished.asend(sender=self.__class__)
        else:
            if not getattr(request, "_finished_sent", False):
                await sync_to_async(response.close)()
        body_file.close()

    async def _get_response_async(self, request):  # type: ignore[override]
        # BaseHandler._get_response_async with no view or template-response middleware (see
        # load_middleware), except that a synchronous view's response is rendered on the
        # view's thread in the same hop: Django renders a deferred response (DRF's Response)
        # in a hop of its own, onto the same thread, after the view's (about 0.1 ms of CPU).
        # `request_started` goes with the view too (see `handle`).
        callback, callback_args, callback_kwargs = self.resolve_request(request)
        on_loop = getattr(getattr(callback, "cls", None), "respond_on_loop", None)
        if on_loop is not None:
            response = on_loop(request, *callback_args, **callback_kwargs)
            if response is not None:
                # Answered from this process's memory on the event loop: no thread, no
                # database, so request_started's receivers (a thread's connections and query
                # log) have nothing to reset and the hop to send it is spared.
                request._started_sent = True
                return response
        view = self.make_view_atomic(callback)
        if iscoroutinefunction(view):
            request._started_sent = True
            await signals.request_started.asend(sender=self.__class__, scope=request.scope)
            response = await view(request, *callback_args, **callback_kwargs)
            self.check_response(response, callback)
            if callable(getattr(response, "render", None)):
                if iscoroutinefunction(response.render):
                    response = await response.render()
                else:
                    response = await sync_to_async(response.render, thread_sensitive=True)()
        else:
            response = await sync_to_async(self._view_and_render, thread_sensitive=True)(
                request, view, callback, callback_args, callback_kwargs
            )
        if asyncio.iscoroutine(response):
            raise RuntimeError("Response is still a coroutine.")
        return response

    def _view_and_render(self, request, view, callback, args, kwargs):
        request._started_sent = True
        signals.request_started.send(sender=self.__class__, scope=request.scope)
        response = view(request, *args, **kwargs)
        self.check_response(response, callback)
        if callable(getattr(response, "render", None)):
            response = response.render()
        if not response.streaming:
            # Its body is made: closing it (request_finished: the thread's connections back to
            # the pool) here spares the hop back to this thread after it is sent.
            response._handler_class = self.__class__
            request._finished_sent = True
            response.close()
        return response

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware, for a list of async-only middleware with no
        # view, template-response or exception hooks: nothing to adapt.
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(self.middleware):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._middleware_chain = handler


def _bearer(scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return value[:7].lower() == b"bearer "
    return False


class PanelsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.api = ApiASGIHandler()
        self.key_api = ApiASGIHandler(KEY_API_MIDDLEWARE)

    def handler_for(self, scope) -> ASGIHandler:
        """Which middleware a request runs: /v1's, the key API's, or the site's."""
        path = scope.get("path", "")
        if path.startswith(API_PATH_PREFIX):
            return self.api
        if path.startswith(KEY_API_PATH_PREFIX) and _bearer(scope):
            return self.key_api
        return self

    async def __call__(self, scope, receive, send):  # type: ignore[override]
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        handler = self.handler_for(scope)
        if SHARED_THREAD_PATHS.match(scope.get("path", "")):
            # Outside a ThreadSensitiveContext, asgiref runs thread-sensitive work on its
            # one shared thread rather than on a new thread for this request.
            await handler.handle(scope, receive, send)
            return
        if handler is self:
            await super().__call__(scope, receive, send)
        else:
            await handler(scope, receive, send)


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panels.settings")
django.setup(set_prefix=False)
application = PanelsASGIHandler()

# The Auto router's sentence encoder loads here, once per web process, so no
# request waits for it (a few seconds, measured by bench/route_eval.py).
from chat.router import warm  # noqa: E402

warm()


def settle_heap() -> None:
    """After start-up: what is alive then (Django, the URL patterns and every view module
    they import, the encoder and its weights: about 300,000 objects) lives as long as the
    process. Left in the collector's oldest generation, every full collection walked all of
    it with the GIL held (80-170 ms each on the busy 2-core machine, in the middle of some
    request: docs/chat.md); frozen (gc.freeze), collections walk only what requests have
    made since. The URL patterns are loaded here for that (Django loads them at the first
    request, which no longer waits for them). Collections keep Python's thresholds: higher
    ones made fewer but longer pauses (measured, docs/chat.md)."""
    from django.urls import reverse

    reverse("api_message_stream", args=[1])  # loads the URL patterns (importing every view)
    gc.collect()  # start-up's garbage first, or it would stay frozen for good
    gc.freeze()


settle_heap()
