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
        secret = bearer_secret(authentication.get_authorization_header(request).decode("latin-1"))
        if secret is None:
            return None
        api_key = self.verify(secret, cached=_view_caches_keys(request))
        if api_key is None:
            raise exceptions.AuthenticationFailed("The API key is invalid or has been revoked.")
        now = timezone.now()
        if last_use_due(api_key, now):
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


def bearer_secret(header: str) -> str | None:
    """The key in an `Authorization` header's value, or None when it is not `Bearer <key>`."""
    keyword, _, key = header.partition(" ")
    return key.strip() if keyword == ApiKeyAuthentication.keyword else None


def last_use_due(api_key: ApiKey, now) -> bool:
    # One write per key per minute at most: a write on every call would cost each API
    # request a commit.
    return api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION


def key_in_memory(request) -> ApiKey | None:
    """The request's key as `ApiKeyAuthentication` would take it for a view with
    `api_key_cache`, when that needs no database: verified by this process within
    API_CACHE_SECONDS (openai_api/cache.py), active, and no `last_used_at` write due.
    None: let the view authenticate (a miss, a wrong or revoked key, a write due)."""
    from openai_api.cache import key_cached

    header = request.META.get("HTTP_AUTHORIZATION", "")
    secret = bearer_secret(header) if header else None
    if not secret:
        return None
    api_key = key_cached(secret)
    if api_key is None or last_use_due(api_key, timezone.now()):
        return None
    return api_key


def _view_caches_keys(request: Request) -> bool:
    view = (getattr(request, "parser_context", None) or {}).get("view")
    return bool(getattr(view, "api_key_cache", False))
