"""What the /v1 API keeps of the site's middleware, on the event loop (panels/asgi.py).

The site's middleware stack is for browsers: sessions, CSRF, login, messages, CSP, frame
options, static files. Under ASGI it runs in a thread made for each request, with a hop
from the event loop into it and back around the view, and a hop back for the response:
about 5 ms of the latency /v1 added before its first token (median, profiled under
load). /v1 is a JSON API authenticated by key on every call, so it needs none of it
except: the request id (RequestIdMiddleware's rules), the body size limit
(RequestSizeLimitMiddleware's, answered in OpenAI's error shape) and SecurityMiddleware's
response headers (and HTTPS redirect), whose work is a few dictionary operations, done
here inline rather than in a thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware

from openai_api.errors import OpenAIError
from panels.logging import request_id_var
from panels.middleware import _VALID_ID


class ApiEdgeMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        self.security = SecurityMiddleware(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.security.process_request(request) or await self._sized(request)
        finally:
            request_id_var.reset(token)
        response = self.security.process_response(request, response)
        response["X-Request-ID"] = request_id
        return response

    async def _sized(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            return OpenAIError(
                413, f"The request body is larger than the {limit:,} bytes this server accepts.", code="too_large"
            ).response()
        return await self.get_response(request)
