"""What an API key spends, whichever way it spends: /v1 calls and chat replies sent with it.

Both paths place a wallet hold for the worst case; `key_hold` wraps that placement:

- before it, in the same transaction, the key's row is locked (FOR NO KEY UPDATE: it
  does not wait on the key-share locks that inserting rows which refer to the key take)
  and what the key spent in its limit's window plus this hold is checked against the
  limit, so two holds on one key, on either path, can't together pass it. The key is
  locked before the wallet (by the hold), on both paths: one lock order, no deadlock;
- after it, the hold is linked to the key (KeyHold) by a statement that inserts only
  while the key is still active (not revoked, not expired, its user active): a key
  revoked after it was verified (and cached, openai_api/cache.py) can't hold credits,
  and the transaction, hold included, rolls back.

A key's spend is read from its holds (openai_api/selectors.py). The chat API says which
key a request acts with by `acting_as`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from openai_api.models import KeyHold
from openai_api.selectors import key_spent
from panels.models import ApiKey
from wallet.models import Hold


class KeyLimitExceeded(Exception):
    def __init__(self, *, api_key: ApiKey, spent: int, amount: int) -> None:
        self.limit_label = api_key.limit_label
        self.spent = spent
        self.left = max((api_key.spend_limit or 0) - spent, 0)
        self.amount = amount
        super().__init__(
            f"This would pass this API key's spend limit of {self.limit_label}: {spent:,} credits are spent "
            f"or reserved, {self.left:,} are left, and this may cost up to {amount:,}."
        )


class KeyInactive(Exception):
    """The key was revoked or expired (or its user deactivated) after it was verified."""


def key_spend_check(*, api_key: ApiKey, amount: int) -> None:
    """In the hold's transaction, before the hold: refuse `amount` if it would pass the key's limit."""
    if api_key.spend_limit is None:
        return
    locked = ApiKey.objects.select_for_update(no_key=True).get(pk=api_key.pk)
    if locked.spend_limit is None:
        return
    spent = key_spent(api_key=locked, since=locked.period_start())
    if spent + amount > locked.spend_limit:
        raise KeyLimitExceeded(api_key=locked, spent=spent, amount=amount)


def _link(*, api_key: ApiKey, hold: Hold) -> None:
    user_table = get_user_model()._meta.db_table
    q = connection.ops.quote_name
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {q(KeyHold._meta.db_table)} (api_key_id, hold_id, created_at) "
            f"SELECT k.id, %s, %s FROM {q(ApiKey._meta.db_table)} k JOIN {q(user_table)} u ON u.id = k.user_id "
            "WHERE k.id = %s AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > %s) "
            "AND u.is_active = %s",
            [hold.pk, now, api_key.pk, now, True],
        )
        if cursor.rowcount != 1:
            raise KeyInactive(f"API key {api_key.prefix} is no longer active")


def key_hold(*, api_key: ApiKey | None, amount: int, place: Callable[[], Hold]) -> Hold:
    """`place()` (a wallet hold of `amount`) under `api_key`'s limit, linked to the key; inside
    the caller's transaction. Raises KeyLimitExceeded or KeyInactive, and what `place` raises."""
    if api_key is None:
        return place()
    key_spend_check(api_key=api_key, amount=amount)
    hold = place()
    _link(api_key=api_key, hold=hold)
    return hold


# --- which key a chat request acts with ----------------------------------------------

_acting: contextvars.ContextVar[Callable[[], ApiKey | None] | None] = contextvars.ContextVar(
    "panels_acting_key", default=None
)


@contextlib.contextmanager
def acting_as(key: Callable[[], ApiKey | None]) -> Iterator[None]:
    """Within this block, holds placed through `key_hold(api_key=acting_key(), ...)` count against
    the key `key()` returns (read lazily: an API view authenticates after it is entered)."""
    token = _acting.set(key)
    try:
        yield
    finally:
        _acting.reset(token)


def acting_key() -> ApiKey | None:
    getter = _acting.get()
    key = getter() if getter is not None else None
    return key if isinstance(key, ApiKey) else None
