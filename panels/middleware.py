from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from panels.api_errors import error_body
from panels.logging import request_id_var

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "form-action 'self' https://checkout.stripe.com",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)

# Swagger UI (the API docs page) sets styles inline; its scripts are still files of our own.
DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


class RequestIdMiddleware:
    """Tags each request (and its log lines, and the tasks it enqueues) with an id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


class ContentSecurityPolicyMiddleware:
    """No inline script anywhere: model output cannot run even if it slipped past sanitising."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith("/api/docs/"):
            response.setdefault("Content-Security-Policy", DOCS_CONTENT_SECURITY_POLICY)
        elif not request.path.startswith("/admin/"):
            response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


class RequestSizeLimitMiddleware:
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 before anything reads it.

    Left to Django, reading such a body raises RequestDataTooBig deep inside DRF's
    parsing: a 500 for the API and a bare 400 page for forms.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is None or length <= limit:
            return self.get_response(request)
        message = f"The request body is larger than the {limit:,} bytes this server accepts."
        if request.path.startswith("/api/"):
            return JsonResponse(error_body("too_large", message), status=413)
        page = f"<!doctype html><title>Request too large</title><h1>Request too large</h1><p>{message}</p>"
        return HttpResponse(page, status=413, content_type="text/html; charset=utf-8")


class EdgeMiddleware:
    """The request id, SecurityMiddleware and the body size limit, on the event loop: what an
    API authenticated by key on every call keeps of the site's middleware (panels/asgi.py
    routes such requests around the browser stack). Subclasses say how a too-large body is
    answered and what else goes on the response."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response) -> None:
        from asgiref.sync import markcoroutinefunction
        from django.middleware.security import SecurityMiddleware

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
        response = self.finish(request, self.security.process_response(request, response))
        response["X-Request-ID"] = request_id
        return response

    async def _sized(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            return self.too_large(f"The request body is larger than the {limit:,} bytes this server accepts.")
        return await self.get_response(request)

    def too_large(self, message: str) -> HttpResponse:
        raise NotImplementedError

    def finish(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response


class KeyApiEdgeMiddleware(EdgeMiddleware):
    """What a key-authenticated /api/v1/ request keeps of the site's middleware, on the event
    loop (panels/asgi.py routes `Authorization: Bearer` requests here).

    The site's middleware is for browsers (sessions, CSRF, login, messages, static files)
    and under ASGI runs in a thread of its own around the view, with hops in and out. A
    request authenticated by key on every call needs none of it but what shapes the
    response: the request id (RequestIdMiddleware's rules), SecurityMiddleware's headers
    (and HTTPS redirect), the CSP and X-Frame-Options headers, and the body limit
    (RequestSizeLimitMiddleware's 413, in the API's error shape).
    """

    def __init__(self, get_response) -> None:
        from django.middleware.clickjacking import XFrameOptionsMiddleware

        super().__init__(get_response)
        self.frames = XFrameOptionsMiddleware(get_response)

    def too_large(self, message: str) -> HttpResponse:
        return JsonResponse(error_body("too_large", message), status=413)

    def finish(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response = self.frames.process_response(request, response)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
