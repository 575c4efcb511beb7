"""PostgreSQL's hot path: hold, post, void and expire, each one SQL statement.

Each statement locks, checks and writes at once (a conditional UPDATE ... RETURNING
feeding an INSERT in one CTE; `INSERT ... ON CONFLICT (idempotency_key)` for a
repeat), so in autocommit a phase is one round trip and one commit. The entry's
content digest is computed here before the call; the chain step (sha256 of the
wallet's head and that digest) happens in the statement that moves the head.

Lock order, everywhere: hold rows before account rows, accounts by id. A statement
that finds nothing to do (a repeat, an expired or resolved hold, a post above its
hold, a wallet with a take-back waiting for its holds) returns None and the service
falls back to its ORM path, which tells the cases apart and keeps the same rules.
SQLite always takes the ORM path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from wallet import digests
from wallet.models import Account, Entry, Hold

_system_ids: dict[str, int] = {}


def enabled() -> bool:
    return connection.vendor == "postgresql"


def system_account_id(code: str) -> int:
    """System accounts never go away (entries protect them; migration 0006 seeds them),
    so their ids are cached per process. One created inside a transaction is not cached
    until it is seen committed: a rollback would take it away."""
    pk = _system_ids.get(code)
    if pk is None:
        account, created = Account.objects.get_or_create(kind=Account.Kind.SYSTEM, code=code)
        pk = account.pk
        if not (created and connection.in_atomic_block):
            _system_ids[code] = pk
    return pk


def forget_system_accounts(*, known: dict[str, int] | None = None) -> None:
    """For tests, whose tables are emptied and refilled between cases."""
    _system_ids.clear()
    _system_ids.update(known or {})


def _one(sql: str, params: dict[str, object]) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


_HOLD = """
WITH a AS (
    SELECT id, balance - held AS available, frozen_reason
    FROM wallet_account WHERE id = %(account)s FOR UPDATE
), h AS (
    INSERT INTO wallet_hold (account_id, amount, status, posted_amount, excess, idempotency_key,
                             reference, reason, expires_at, created_at, resolved_at)
    SELECT a.id, %(amount)s,
           CASE WHEN a.available >= %(amount)s THEN 'pending' ELSE 'rejected' END,
           NULL, 0, %(key)s, %(reference)s,
           CASE WHEN a.available >= %(amount)s THEN '' ELSE 'only ' || a.available || ' credits available' END,
           now() + %(ttl)s * interval '1 second', now(),
           CASE WHEN a.available >= %(amount)s THEN NULL ELSE now() END
    FROM a WHERE a.frozen_reason = ''
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, status, reason, expires_at, created_at, resolved_at
), u AS (
    UPDATE wallet_account SET held = held + %(amount)s
    FROM h WHERE wallet_account.id = %(account)s AND h.status = 'pending'
    RETURNING 1
){attach}
SELECT h.id, h.status, h.reason, h.expires_at, h.created_at, h.resolved_at, a.available, a.frozen_reason
FROM a LEFT JOIN h ON true
"""
# What a hold is placed for (a chat reply) can point at it in the same statement.
_ATTACH = """, t AS (
    UPDATE {table} SET hold_id = h.id FROM h WHERE {table}.id = %(attach)s AND h.status = 'pending'
    RETURNING 1
)"""
ATTACHABLE = {"chat_message"}


@dataclass(frozen=True)
class HoldAttempt:
    hold: Hold | None  # None: the key was taken already, or the wallet is frozen
    available: int
    frozen_reason: str


def hold(
    *,
    account_id: int,
    amount: int,
    idempotency_key: str,
    reference: str,
    ttl_seconds: int,
    attach: tuple[str, int] | None = None,
) -> HoldAttempt:
    """`attach=(table, row id)`: a placed hold also becomes that row's `hold_id`, in the statement."""
    params = {"account": account_id, "amount": amount, "key": idempotency_key, "reference": reference}
    if attach is None:
        sql = _HOLD.format(attach="")
    else:
        table, params["attach"] = attach
        if table not in ATTACHABLE:
            raise ValueError(f"a hold can't be attached to {table!r}")
        sql = _HOLD.format(attach=_ATTACH.format(table=table))
    row = _one(sql, {**params, "ttl": ttl_seconds})
    if row is None:
        raise Account.DoesNotExist(f"no account {account_id}")
    pk, status, reason, expires_at, created_at, resolved_at, available, frozen_reason = row
    if pk is None:
        return HoldAttempt(None, available, frozen_reason)
    placed = Hold(
        pk=pk,
        account_id=account_id,
        amount=amount,
        status=status,
        idempotency_key=idempotency_key,
        reference=reference,
        reason=reason,
        expires_at=expires_at,
        created_at=created_at,
        resolved_at=resolved_at,
    )
    placed._state.adding = False
    placed._state.db = connection.alias
    return HoldAttempt(placed, available, frozen_reason)


_POST = f"""
WITH h AS (
    UPDATE wallet_hold SET status = 'posted', posted_amount = %(amount)s, excess = 0, resolved_at = now()
    WHERE id = %(hold)s AND account_id = %(account)s AND status = 'pending'
      AND expires_at > now() AND amount >= %(amount)s
      AND NOT EXISTS (SELECT 1 FROM wallet_takeback t WHERE t.account_id = %(account)s AND t.resolved_at IS NULL)
    RETURNING id, amount, resolved_at
), a AS (
    UPDATE wallet_account
    SET held = held - h.amount,
        balance = balance - %(amount)s,
        chain_head = CASE WHEN %(amount)s > 0
                          THEN {digests.CHAIN_SQL.format(previous="chain_head", content="%(content)s")}
                          ELSE chain_head END
    FROM h WHERE wallet_account.id = %(account)s
    RETURNING wallet_account.chain_head
), e AS (
    INSERT INTO wallet_entry (kind, debit_account_id, credit_account_id, amount, idempotency_key, reference,
                              memo, hold_id, wallet_id, created_at, digest)
    SELECT 'usage', %(account)s, %(revenue)s, %(amount)s, %(key)s, %(reference)s,
           %(memo)s, %(hold)s, %(account)s, %(created)s, a.chain_head
    FROM a WHERE %(amount)s > 0
    RETURNING id
)
SELECT h.resolved_at, (SELECT count(*) FROM e) FROM h
"""


def post(*, held: Hold, amount: int, revenue_id: int, reference: str, memo: str) -> Hold | None:
    """Post a pending, unexpired hold at `amount` (not above it); None if it is not that."""
    created = timezone.now()
    key = f"hold:{held.pk}:post"
    content = digests.content_digest(
        kind=Entry.Kind.USAGE,
        debit_account_id=held.account_id,
        credit_account_id=revenue_id,
        amount=amount,
        idempotency_key=key,
        reference=reference,
        memo=memo,
        hold_id=held.pk,
        created_at=created,
    )
    row = _one(
        _POST,
        {
            "hold": held.pk,
            "account": held.account_id,
            "amount": amount,
            "content": content,
            "revenue": revenue_id,
            "key": key,
            "reference": reference,
            "memo": memo,
            "created": created,
        },
    )
    if row is None:
        return None
    held.status = Hold.Status.POSTED
    held.posted_amount = amount
    held.excess = 0
    held.resolved_at = row[0]
    return held


_VOID = """
WITH h AS (
    UPDATE wallet_hold SET status = 'voided', reason = %(reason)s, resolved_at = now()
    WHERE id = %(hold)s AND status = 'pending'
      AND NOT EXISTS (
          SELECT 1 FROM wallet_takeback t WHERE t.account_id = wallet_hold.account_id AND t.resolved_at IS NULL
      )
    RETURNING account_id, amount, resolved_at
), a AS (
    UPDATE wallet_account SET held = held - h.amount FROM h WHERE wallet_account.id = h.account_id
    RETURNING 1
)
SELECT resolved_at FROM h
"""


def void(*, held: Hold, reason: str) -> Hold | None:
    """Void a pending hold; None if it is not pending."""
    row = _one(_VOID, {"hold": held.pk, "reason": reason})
    if row is None:
        return None
    held.status = Hold.Status.VOIDED
    held.reason = reason
    held.resolved_at = row[0]
    return held


_EXPIRE = """
WITH due AS (
    SELECT id FROM wallet_hold
    WHERE status = 'pending' AND expires_at <= %(now)s
    ORDER BY id LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), h AS (
    UPDATE wallet_hold SET status = 'expired', reason = 'not settled within its time limit', resolved_at = now()
    FROM due WHERE wallet_hold.id = due.id
    RETURNING wallet_hold.account_id, wallet_hold.amount
), per AS (
    SELECT account_id, sum(amount) AS amount FROM h GROUP BY account_id
), locked AS (
    SELECT wallet_account.id FROM wallet_account
    WHERE wallet_account.id IN (SELECT account_id FROM per)
    ORDER BY wallet_account.id FOR UPDATE
), a AS (
    UPDATE wallet_account SET held = held - per.amount
    FROM per JOIN locked ON locked.id = per.account_id
    WHERE wallet_account.id = per.account_id
    RETURNING 1
)
SELECT count(*) FROM h
"""


def expire_batch(*, now: dt.datetime, batch: int) -> int:
    """Expire up to `batch` due holds and release them from their wallets; how many."""
    row = _one(_EXPIRE, {"now": now, "batch": batch})
    return row[0] if row else 0
