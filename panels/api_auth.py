from __future__ import annotations

import datetime as dt

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from panels.models import ApiKey

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pnl_…`; CSRF does not apply to key-authenticated calls.

    A view with `api_key_cache = True` (the sends) takes the key as verified within
    API_CACHE_SECONDS in this process (openai_api/cache.py): what a send spends is held in
    a transaction that links the hold to the key only while the key is active, so a key
    revoked meanwhile still spends nothing (401). One class, so the API schema has one
    key scheme.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, key = header.partition(" ")
        if keyword != self.keyword:
            return None
        api_key = self.verify(key.strip(), cached=_view_caches_keys(request))
        if api_key is None:
            raise exceptions.AuthenticationFailed("The API key is invalid or has been revoked.")
        now = timezone.now()
        # One write per key per minute at most: a write on every call would cost each
        # API request a commit.
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now
        return api_key.user, api_key

    def verify(self, secret: str, *, cached: bool = False) -> ApiKey | None:
        if cached:
            from openai_api.cache import key_verified

            return key_verified(secret)
        return ApiKey.authenticate(secret)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def _view_caches_keys(request: Request) -> bool:
    view = (getattr(request, "parser_context", None) or {}).get("view")
    return bool(getattr(view, "api_key_cache", False))
