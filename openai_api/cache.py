"""What a /v1 call looks up before its hold, kept per process for a few seconds.

Each lookup is a database round trip on the path to the first token (the key by its
prefix with its user, the model by its slug, the user's wallet): together about 8 of the
25 ms the view spent before the first token (profiled under load, median). Kept for
API_CACHE_SECONDS (default 10 s) per web process:

- A key is cached only once verified (its secret's digest compared), under that digest,
  so a wrong secret never matches a cached key. Its expiry is checked on every use.
  Revocation still works at once: the transaction that holds credits links the hold to
  the key only while the key is active (not revoked, not expired, its user active), else
  the call is refused and nothing stays (openai_api/key_spend.py). The spend limit is
  read again under the key's row lock in that transaction; a limit set on a key that had
  none reaches /v1 within API_CACHE_SECONDS. The LiteLLM proxy keeps verified keys in
  memory for 60 s by default (proxy_server.py, UserAPIKeyCacheTTLEnum).
- A model: an operator's change (disabled, new prices) reaches /v1 within the same time;
  a call keeps the prices it was held at, as before.
- A wallet: kept with the key that reached it (its id never changes); its balance,
  frozen state and holds are never cached.

Nothing here is shared between processes (DESIGN.md: no in-memory state another process
needs): a miss costs what every call cost before.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings

from chat.models import ModelSpec
from panels.models import ApiKey
from wallet.models import Account

T = TypeVar("T")

# Bounded: a flood of distinct (verified) keys can't grow a process without limit.
MAX_ENTRIES = 10_000

_keys: dict[str, tuple[float, ApiKey]] = {}
_models: dict[str, tuple[float, ModelSpec | None]] = {}
_accounts: dict[int, tuple[float, Account]] = {}


def _fresh(store: dict, name, load: Callable[[], T]) -> T:
    ttl = settings.API_CACHE_SECONDS
    now = time.monotonic()
    hit = store.get(name)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    value = load()
    if ttl > 0:
        if len(store) >= MAX_ENTRIES:
            store.clear()
        store[name] = (now, value)
    return value


def key_verified(secret: str) -> ApiKey | None:
    """The active key for this secret, or None (a miss is not cached: a new key works at once)."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    hit = _keys.get(digest)
    if hit is not None and time.monotonic() - hit[0] < settings.API_CACHE_SECONDS:
        api_key = hit[1]
        return None if api_key.expired else api_key
    api_key = ApiKey.authenticate(secret)
    if api_key is None:
        _keys.pop(digest, None)
        return None
    if settings.API_CACHE_SECONDS > 0:
        if len(_keys) >= MAX_ENTRIES:
            _keys.clear()
        _keys[digest] = (time.monotonic(), api_key)
    return api_key


def key_cached(secret: str) -> ApiKey | None:
    """`key_verified` without the database: the key only if this process verified it within
    API_CACHE_SECONDS and it has not expired since; None otherwise (not that it is wrong)."""
    hit = _keys.get(hashlib.sha256(secret.encode()).hexdigest())
    if hit is None or time.monotonic() - hit[0] >= settings.API_CACHE_SECONDS:
        return None
    api_key = hit[1]
    return None if api_key.expired else api_key


def model_enabled(slug: str) -> ModelSpec | None:
    return _fresh(_models, slug, lambda: ModelSpec.objects.filter(slug=slug, enabled=True).first())


def wallet_of(user) -> Account:
    """The user's wallet account (created on first use, outside any transaction); only its id is relied on."""
    from wallet.services import wallet_for_user

    return _fresh(_accounts, user.pk, lambda: wallet_for_user(user=user))


def clear() -> None:
    """Forget everything (tests that change keys or models underneath a running process)."""
    _keys.clear()
    _models.clear()
    _accounts.clear()
