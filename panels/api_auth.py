from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from panels.models import ApiKey


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pnl_…`; CSRF does not apply to key-authenticated calls."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, key = header.partition(" ")
        if keyword != self.keyword:
            return None
        api_key = ApiKey.authenticate(key.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("The API key is invalid or has been revoked.")
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now())
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
