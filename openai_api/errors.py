"""OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}` with its status.

Types as OpenAI's API reference lists them (invalid_request_error, authentication_error,
not_found_error, rate_limit_error, insufficient_quota, server_error); `code` is the
machine-readable reason.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPE_FOR_STATUS.get(status, "server_error")
        self.retry_after = retry_after
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code, **self.extra}
        }

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        if self.retry_after is not None:
            response["Retry-After"] = str(max(1, round(self.retry_after)))
        return response


def error_response(status: int, body: dict[str, Any], retry_after: str | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status)
    if retry_after:
        response["Retry-After"] = retry_after
    return response
