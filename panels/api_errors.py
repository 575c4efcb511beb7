"""One JSON error shape for the API: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """A domain error with its own code and status, raised from views."""

    def __init__(
        self,
        *,
        code: str,
        message: str,
        status_code: int = 400,
        extra: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}


_CODES = {
    400: "invalid_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _message(detail: Any) -> str:
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            text = _message(value)
            parts.append(text if field == "non_field_errors" else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_message(item) for item in detail)
    return str(detail)


def error_body(code: str, message: str, **extra: Any) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(error_body(exc.code, exc.message, **exc.extra), status=exc.status_code, headers=exc.headers)
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable (a restart, a failover) or the connection broke: the
        # transaction rolled back, so the client may try again in a moment.
        log.warning("database unavailable", exc_info=exc)
        return Response(
            error_body("service_unavailable", "The service is temporarily unavailable; please try again in a moment."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = _CODES.get(response.status_code, "error")
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("invalid_request", _message(exc.detail), fields=exc.detail)
    elif isinstance(exc, exceptions.Throttled):
        body = error_body("rate_limited", f"Too many requests; try again in {exc.wait or 1:.0f} s.")
    else:
        body = error_body(code, _message(getattr(exc, "detail", str(exc))))
    response.data = body
    if response.status_code == status.HTTP_403_FORBIDDEN and "CSRF" in body["error"]["message"]:
        response.data = error_body("csrf_failed", body["error"]["message"])
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: an unknown /api/ URL (or an id that is not a number) answers in the API's shape."""
    if _is_api(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the API's clients parse JSON, even from a crash."""
    if _is_api(request):
        return JsonResponse(error_body("server_error", "Something went wrong on our side."), status=500)
    return defaults.server_error(request)
