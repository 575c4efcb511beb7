"""OpenAPI schema: names nested serializers after their view, documents Bearer keys."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema


class PanelsAutoSchema(AutoSchema):
    def get_serializer_name(self, serializer: object, direction: str) -> str:
        name = super().get_serializer_name(serializer, direction)
        qualname = type(serializer).__qualname__
        owner = qualname.rsplit(".", 1)[0] if "." in qualname else ""
        if owner:
            return owner.removesuffix("Api") + name
        return name


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "panels.api_auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict:
        return {"type": "http", "scheme": "bearer", "description": "A Panels API key: `Bearer pnl_…`"}
