"""OpenAPI schema: names nested serializers after their view, documents Bearer keys and
the errors every operation can answer with, in their one JSON shape."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import permissions, serializers


class ApiErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable and machine-readable, e.g. insufficient_credits, not_found.")
    message = serializers.CharField(help_text="For people: what went wrong and what to do.")


class ApiErrorSerializer(serializers.Serializer):
    error = ApiErrorDetailSerializer(
        help_text="Some errors carry more: `fields` (per-field messages), `topup_url`, `needed`, `available`."
    )


# Answers the framework gives before or around a view, so no view documents them itself.
_AUTH = "not_authenticated or authentication_failed: no session and no API key, or a revoked key"
_CSRF = "csrf_failed: a session-authenticated write without its CSRF token (API keys need none)"
_NOT_FOUND = "not_found: no such object, or not yours"
_BAD_BODY = "invalid_request: the body is not valid JSON or its fields are wrong"
_TOO_LARGE = "too_large: the body is larger than the server accepts"
_MEDIA = "unsupported_media_type: send application/json"
_THROTTLED = "rate_limited: too many requests; wait for the time in Retry-After"


class PanelsAutoSchema(AutoSchema):
    def get_serializer_name(self, serializer: object, direction: str) -> str:
        name = super().get_serializer_name(serializer, direction)
        qualname = type(serializer).__qualname__
        owner = qualname.rsplit(".", 1)[0] if "." in qualname else ""
        if owner:
            return owner.removesuffix("Api") + name
        return name

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code, description in self._framework_errors().items():
            responses.setdefault(code, {"description": description})
        error = {"application/json": {"schema": self.resolve_serializer(ApiErrorSerializer, direction).ref}}
        for code, response in responses.items():
            if code >= "400" and not response.get("content"):
                response["content"] = error
        return dict(sorted(responses.items()))

    def _framework_errors(self) -> dict[str, str]:
        errors = {}
        if any(p is not permissions.AllowAny for p in getattr(self.view, "permission_classes", [])):
            errors["401"] = _AUTH
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            errors["403"] = _CSRF
        if "{" in self.path:
            errors["404"] = _NOT_FOUND
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            errors.update({"400": _BAD_BODY, "413": _TOO_LARGE, "415": _MEDIA})
        if getattr(self.view, "throttle_classes", None):
            errors["429"] = _THROTTLED
        return errors


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "panels.api_auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict:
        return {"type": "http", "scheme": "bearer", "description": "A Panels API key: `Bearer pnl_…`"}
