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

The statements run as server-side prepared statements (parsed and planned once per
connection, not on every call: planning these CTEs cost as much as running them),
through Django's cursor wrapper so query logging and execute wrappers still see
them. `LEDGER_PREPARED_STATEMENTS=0` turns that off behind a transaction-pooling
PgBouncer, which does not keep a connection's prepared statements.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_str

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models.base import ModelState
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


class _PreparedCursor(psycopg.Cursor):
    """Server-side binding, each statement prepared on its first use on a connection."""

    def execute(self, query, params=None, **kwargs):
        return super().execute(query, params, prepare=True, **kwargs)

    def _send_query_prepared(self, name, pgq, **kwargs):
        # psycopg leaves `_query` unset when it runs a statement prepared before;
        # Django's query log (CaptureQueriesContext, DEBUG) reads the SQL from there.
        self._query = pgq
        return super()._send_query_prepared(name, pgq, **kwargs)


def prepare_connection(*, batch: bool = False) -> None:
    """Set the connection up for the ledger's prepared statements, once.

    Django turns psycopg's preparing off (prepare_threshold None), which also refuses an
    explicit prepare=True; a threshold never reached turns it back on for explicit
    requests only (Django's own cursors bind on the client and never prepare). Plan
    once: a custom plan per call would cost what preparing saves; only prepared
    statements are affected. The SET waits for a moment outside a transaction, whose
    rollback would undo it (the batcher calls this before its transaction).

    `batch=True`: the batcher's own connection, which runs only the batch's statements,
    each looking rows up by key. Its session never scans a table sequentially where an
    index serves: a generic plan is made once, on the first batch, and a fresh
    database's tables are empty then, where a scan looks cheapest; the plan was kept
    while the table grew (a hot wallet's batch read scanned every hold: 1,677 pairs/s
    without the benchmark's warm-up against 3,080 with it)."""
    if connection.vendor != "postgresql" or not settings.LEDGER_PREPARED_STATEMENTS:
        return
    connection.ensure_connection()
    conn = connection.connection
    if conn.prepare_threshold is None:
        conn.prepare_threshold = 2**31 - 1
    # psycopg's own errors as Django's (a restart's OperationalError, which the callers
    # retry or answer with a 503), and the connection marked for closing, as for any query.
    with connection.wrap_database_errors:
        if not getattr(conn, "_ledger_generic_plans", False) and connection.get_autocommit():
            conn.execute("SET plan_cache_mode = force_generic_plan")
            conn._ledger_generic_plans = True
        if batch and not getattr(conn, "_ledger_index_only", False) and connection.get_autocommit():
            conn.execute(BATCH_SESSION)
            conn._ledger_index_only = True


BATCH_SESSION = "SET enable_seqscan = off"  # the batch connection's session (`prepare_connection`)


def cursor():
    """A cursor for the ledger's own statements: prepared on PostgreSQL (unless
    LEDGER_PREPARED_STATEMENTS is off), Django's plain cursor elsewhere."""
    if connection.vendor != "postgresql" or not settings.LEDGER_PREPARED_STATEMENTS:
        return connection.cursor()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    conn = connection.connection
    prepare_connection()
    raw = _PreparedCursor(conn)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


def _one(sql: str, params: dict[str, object]) -> tuple | None:
    with cursor() as c:
        c.execute(sql, params)
        return c.fetchone()


def hold_steps(*, key: str = "%(key)s", reference: str = "%(reference)s", also_from: str = "") -> str:
    """The hold's rule as a statement's first steps: `a` locks the account and reads what is
    available, `h` inserts the hold (pending if it fits, rejected with the reason if not;
    nothing on a frozen wallet or a key taken already), `u` raises `held` for a pending one.
    `key` and `reference` are SQL expressions (parameters by default); `also_from` adds
    relations they read (the chat send's drawn ids, chat/send_sql.py)."""
    return f"""a AS (
    SELECT id, balance - held AS available, frozen_reason
    FROM wallet_account WHERE id = %(account)s FOR UPDATE
), h AS (
    INSERT INTO wallet_hold (account_id, amount, status, posted_amount, excess, idempotency_key,
                             reference, reason, expires_at, created_at, resolved_at)
    SELECT a.id, %(amount)s,
           CASE WHEN a.available >= %(amount)s THEN 'pending' ELSE 'rejected' END,
           NULL, 0, {key}, {reference},
           CASE WHEN a.available >= %(amount)s THEN '' ELSE 'only ' || a.available || ' credits available' END,
           now() + %(ttl)s * interval '1 second', now(),
           CASE WHEN a.available >= %(amount)s THEN NULL ELSE now() END
    FROM a{also_from} WHERE a.frozen_reason = ''
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, status, reason, expires_at, created_at, resolved_at
), u AS (
    UPDATE wallet_account SET held = held + %(amount)s
    FROM h WHERE wallet_account.id = %(account)s AND h.status = 'pending'
    RETURNING 1
)"""


_HOLD = (
    "\nWITH "
    + hold_steps()
    + """{attach}
SELECT h.id, h.status, h.reason, h.expires_at, h.created_at, h.resolved_at, a.available, a.frozen_reason
FROM a LEFT JOIN h ON true
"""
)
# What a hold is placed for (a chat reply) can point at it in the same statement.
_ATTACH = """, t AS (
    UPDATE {table} SET hold_id = h.id FROM h WHERE {table}.id = %(attach)s AND h.status = 'pending'
    RETURNING 1
)"""
ATTACHABLE = {"chat_message", "openai_api_apicall"}


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
    placed = placed_hold(
        pk, account_id, amount, idempotency_key, reference, (status, reason, expires_at, created_at, resolved_at)
    )
    return HoldAttempt(placed, available, frozen_reason)


def placed_hold(pk: int, account_id: int, amount: int, key: str, reference: str, outcome: tuple) -> Hold:
    """The Hold a hold statement placed, from its RETURNING row's `outcome` (status, reason,
    expires_at, created_at, resolved_at), as loaded from the database."""
    status, reason, expires_at, created_at, resolved_at = outcome
    placed = Hold(
        pk=pk,
        account_id=account_id,
        amount=amount,
        status=status,
        idempotency_key=key,
        reference=reference,
        reason=reason,
        expires_at=expires_at,
        created_at=created_at,
        resolved_at=resolved_at,
    )
    placed._state.adding = False
    placed._state.db = connection.alias
    return placed


_POST = f"""
WITH {{before}}h AS (
    UPDATE wallet_hold SET status = 'posted', posted_amount = %(amount)s, excess = 0, resolved_at = now()
    WHERE id = %(hold)s AND account_id = %(account)s AND status = 'pending'
      AND expires_at > now() AND amount >= %(amount)s
      AND NOT EXISTS (SELECT 1 FROM wallet_takeback t WHERE t.account_id = %(account)s AND t.resolved_at IS NULL)
      {{guard}}
    RETURNING id, amount, resolved_at
), a AS (
    UPDATE wallet_account
    SET held = held - h.amount,
        balance = balance - %(amount)s,
        chain_head = CASE WHEN %(amount)s > 0
                          THEN {digests.CHAIN_SQL.format(previous="chain_head", content="%(content)s")}
                          ELSE chain_head END
    FROM h WHERE wallet_account.id = %(account)s
    RETURNING wallet_account.chain_head, wallet_account.balance, wallet_account.held
), e AS (
    INSERT INTO wallet_entry (kind, debit_account_id, credit_account_id, amount, idempotency_key, reference,
                              memo, hold_id, wallet_id, created_at, digest)
    SELECT 'usage', %(account)s, %(revenue)s, %(amount)s, %(key)s, %(reference)s,
           %(memo)s, %(hold)s, %(account)s, %(created)s, a.chain_head
    FROM a WHERE %(amount)s > 0
    RETURNING id
){{after}}
SELECT h.resolved_at, (SELECT count(*) FROM e), (SELECT balance FROM a), (SELECT held FROM a),
       EXISTS (SELECT 1 FROM wallet_autotopup u WHERE u.account_id = %(account)s AND u.enabled)
FROM h
"""
_POST_ALONE = _POST.format(before="", guard="", after="")


@dataclass
class Along:
    """What must change with a post, in its statement, or not at all (a chat reply's end).

    `first` is a CTE body named `g`, run before the hold is touched (lock what the post
    depends on there): the post happens only if it returns a row. `then` is a CTE body
    named `t`, run only for a post that happened (it may read `h`). Their parameters are
    named, and must not clash with the post's. After a post, `balance` and `held` are the
    wallet's as this post left them.
    """

    first: str
    then: str
    params: dict[str, object]
    balance: int | None = None
    held: int | None = None


def post(
    *, held: Hold, amount: int, revenue_id: int, reference: str, memo: str, along: Along | None = None
) -> Hold | None:
    """Post a pending, unexpired hold at `amount` (not above it); None if it is not that
    (or `along.first` found nothing: then nothing changed)."""
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
    params = {
        "hold": held.pk,
        "account": held.account_id,
        "amount": amount,
        "content": content,
        "revenue": revenue_id,
        "key": key,
        "reference": reference,
        "memo": memo,
        "created": created,
    }
    if along is None:
        sql = _POST_ALONE
    else:
        sql = _POST.format(
            before=f"g AS ({along.first}), ",
            guard="AND EXISTS (SELECT 1 FROM g)",
            after=f", t AS ({along.then})",
        )
        params.update(along.params)
    row = _one(sql, params)
    if row is None:
        return None
    if along is not None:
        along.balance, along.held = row[2], row[3]
    held.status = Hold.Status.POSTED
    held.posted_amount = amount
    held.excess = 0
    held.resolved_at = row[0]
    held.autotopup_on = row[4]  # see `autotopup_on`
    return held


def autotopup_on(posted: Hold) -> bool:
    """Whether the wallet a hold was just posted on has an automatic top-up on, as the
    post's own statement saw it (True when it is not known: the ORM path). Only then is
    the top-up's check worth its query after the post (about 2 ms of ORM per post)."""
    return getattr(posted, "autotopup_on", True)


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


# Group commit (wallet/batching.py): a batch of holds and posts is applied with a few
# set-based statements in one transaction, whatever its size. The rows are locked
# first (holds by id, then accounts by id: the ledger's lock order) and read; each
# operation is then decided here, in arrival order, by the rules the one-statement
# paths apply in SQL; one statement writes every decided row at once.
# One statement, one round trip: the holds locked by id, then (the `hl` count makes
# the accounts wait for them) the accounts by id, then the hold keys already taken.
# Rows are tagged: 0 a hold (id, account, amount, status, live), 1 an account (id,
# balance, held, frozen_reason, chain_head, take-back waiting, automatic top-up on),
# 2 a taken key, 3 the transaction's now().
_READ_BATCH = """
WITH hl AS MATERIALIZED (
    SELECT id, account_id, amount, status, expires_at > now() AS live FROM wallet_hold
    WHERE id = ANY(%(holds)s::bigint[]) ORDER BY id FOR UPDATE
), al AS MATERIALIZED (
    SELECT id, balance, held, frozen_reason, chain_head,
           EXISTS (SELECT 1 FROM wallet_takeback t WHERE t.account_id = wallet_account.id AND t.resolved_at IS NULL)
               AS owing,
           EXISTS (SELECT 1 FROM wallet_autotopup u WHERE u.account_id = wallet_account.id AND u.enabled) AS autotopup
    FROM wallet_account
    WHERE id = ANY(%(accounts)s::bigint[]) AND (SELECT count(*) FROM hl) >= 0
    ORDER BY id FOR UPDATE
)
SELECT 0, id, account_id, amount, status, NULL::text, live, NULL::boolean, NULL::timestamptz FROM hl
UNION ALL
SELECT 1, id, balance, held, frozen_reason, chain_head, owing, autotopup, NULL FROM al
UNION ALL
SELECT 2, NULL, NULL, NULL, idempotency_key, NULL, NULL, NULL, NULL FROM wallet_hold
WHERE idempotency_key = ANY(%(keys)s::text[])
UNION ALL
SELECT 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, now()
"""

# A batch that would write other rows than it decided fails in its write statement,
# before any commit: the text cast to an integer raises with this in its message. A hold
# key taken by a concurrent transaction between the read and the write fails the hold's
# INSERT on the key's unique index instead (no ON CONFLICT: the read looked the keys up,
# and a speculative insert costs an index probe and a WAL record more a hold); both are
# a BatchMismatch (`_mismatch_raised`).
_MISMATCH = "the batch wrote"
_HOLD_KEY_INDEX = "wallet_hold_idempotency_key_key"

# The `id = ANY(...)` beside each join, from the ids sent as an array (`post_ids`,
# `wallet_ids`: parsed once, where the JSON rows' ids were parsed a second time before),
# keeps the prepared (generic) plan on the primary key: without it the planner guesses
# 100 rows from a JSON set and may scan the whole table (5 ms a batch on 4,000 wallets).
_WRITE_BATCH = """
WITH nh AS (
    INSERT INTO wallet_hold (account_id, amount, status, posted_amount, excess, idempotency_key,
                             reference, reason, expires_at, created_at, resolved_at)
    SELECT x.account, x.amount, x.status, NULL, 0, x.key, x.reference, x.reason,
           now() + x.ttl * interval '1 second', now(), CASE WHEN x.status = 'pending' THEN NULL ELSE now() END
    FROM json_to_recordset(%(holds)s::json)
         AS x(account bigint, amount bigint, status text, key text, reference text, reason text, ttl bigint)
    RETURNING id, idempotency_key
), ph AS (
    UPDATE wallet_hold SET status = 'posted', posted_amount = x.amount, excess = 0, resolved_at = now()
    FROM json_to_recordset(%(posts)s::json) AS x(hold bigint, amount bigint)
    WHERE wallet_hold.id = x.hold AND coalesce(wallet_hold.status, '') = 'pending'  -- not by the status index
      AND wallet_hold.id = ANY(%(post_ids)s::bigint[])
    RETURNING 1
), ne AS (
    INSERT INTO wallet_entry (kind, debit_account_id, credit_account_id, amount, idempotency_key, reference,
                              memo, hold_id, wallet_id, created_at, digest)
    SELECT 'usage', x.account, %(revenue)s, x.amount, x.key, x.reference, x.memo, x.hold, x.account,
           x.created, x.digest
    FROM json_to_recordset(%(entries)s::json) AS x(account bigint, amount bigint, key text, reference text,
                                                   memo text, hold bigint, created timestamptz, digest text)
    RETURNING 1
), ua AS (
    UPDATE wallet_account
    SET balance = wallet_account.balance + x.d_balance, held = wallet_account.held + x.d_held, chain_head = x.head
    FROM json_to_recordset(%(wallets)s::json) AS x(account bigint, d_balance bigint, d_held bigint, head text)
    WHERE wallet_account.id = x.account
      AND wallet_account.id = ANY(%(wallet_ids)s::bigint[])
    RETURNING 1
), wrote AS (
    SELECT ARRAY[(SELECT count(*) FROM nh), (SELECT count(*) FROM ph), (SELECT count(*) FROM ne),
                 (SELECT count(*) FROM ua)]::bigint[] AS n
)
SELECT nh.id, nh.idempotency_key,
       CASE WHEN wrote.n = %(decided)s::bigint[] THEN 0
            ELSE ('{mismatch} ' || wrote.n::text || ' (holds, posts, entries, wallets), decided '
                  || %(decided)s::text)::int END
FROM wrote LEFT JOIN nh ON true
""".replace("{mismatch}", _MISMATCH)


@dataclass(slots=True)
class HoldOp:
    account_id: int
    amount: int
    idempotency_key: str
    reference: str
    ttl_seconds: int
    row: str = ""  # its JSON row for the write, less status and reason: `prepared`

    def prepared(self) -> HoldOp:
        """Build the row the batch writes, before the batch (in the caller's thread,
        outside the batch's locks); the batch adds only what it decides."""
        # json.dumps(...)[:-1] of the same object, written out: the same text for less
        # than half the time (its string escaping is the same C function).
        self.row = (
            f'{{"account": {self.account_id}, "amount": {self.amount}, "key": {_json_str(self.idempotency_key)}, '
            f'"reference": {_json_str(self.reference)}, "ttl": {self.ttl_seconds}'
        )
        return self


@dataclass(slots=True)
class PostOp:
    held: Hold
    amount: int
    reference: str
    memo: str
    along: Along | None = None  # what must change with the post, or not at all
    # (revenue account id, the entry's content digest, its JSON row less the chained digest): `prepared`
    entry: tuple[int, str, str] | None = None

    def prepared(self, revenue_id: int) -> PostOp:
        """Compute the entry's content digest and row before the batch (in the caller's
        thread, outside the batch's locks); the batch only chains the digest. (`held.id`,
        not `held.pk`: the same field, without Django's property and its look-ups.)"""
        if self.amount:
            created = timezone.now()
            key = f"hold:{self.held.id}:post"
            content = digests.content_digest(
                kind=Entry.Kind.USAGE,
                debit_account_id=self.held.account_id,
                credit_account_id=revenue_id,
                amount=self.amount,
                idempotency_key=key,
                reference=self.reference,
                memo=self.memo,
                hold_id=self.held.id,
                created_at=created,
            )
            row = (  # json.dumps(...)[:-1], written out as a hold's row is
                f'{{"account": {self.held.account_id}, "amount": {self.amount}, "key": {_json_str(key)}, '
                f'"reference": {_json_str(self.reference)}, "memo": {_json_str(self.memo)}, '
                f'"hold": {self.held.id}, "created": "{created.isoformat()}"'
            )
            self.entry = (revenue_id, content, row)
        return self


class BatchMismatch(RuntimeError):
    """A batch wrote other rows than it decided (a key taken by a concurrent transaction
    between the look-up and the insert): it is rolled back and its callers run alone."""


@dataclass(slots=True)
class _Wallet:
    balance: int
    held: int
    frozen: bool
    head: str
    owing: bool  # a take-back waits for this wallet's holds: posts go the unbatched way
    autotopup: bool  # an automatic top-up is on: a post is followed by its check
    d_balance: int = 0
    d_held: int = 0
    moved: bool = False


@dataclass(slots=True)
class _Plan:
    """What a batch decided: the rows to write (JSON objects, one parameter per table,
    parsed by PostgreSQL in C, where psycopg adapts Python lists element by element;
    each row's text mostly built by its caller before the batch), and which operation
    gets which outcome."""

    holds: list[str] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    placed: dict[str, int] = field(default_factory=dict)  # key of a pending hold -> its operation's index
    posted: list[int] = field(default_factory=list)  # indexes of posted operations


class Placed(tuple):
    """A hold the batch placed, as its raw outcome: (id, created_at), created_at being the
    batch's now(), from which its expiry follows; `outcome` makes the Hold."""

    __slots__ = ()


def apply_batch(
    ops: list[HoldOp | PostOp], *, revenue_id: int, autotopups: set[int] | None = None, raw: bool = False
) -> list:
    """`_apply_batch`, with the posts' `along`: each one's `first` runs before any ledger row
    is locked (a post whose `first` finds nothing is left out, its outcome None), and each
    posted one's `then` after the write, in the batch's transaction; `then` must change
    its row, or the whole batch rolls back (BatchMismatch). `along.balance`/`held` are the
    wallet's as the batch left it.

    One outcome per operation: the placed or posted Hold, or None. `raw=True`: a placed
    hold's outcome is left `Placed`, for `outcome` to make the Hold later (its caller's
    thread, after the commit), and posted holds are not yet marked posted."""
    alongs = [i for i, op in enumerate(ops) if isinstance(op, PostOp) and op.along is not None]
    if not alongs:
        out = _apply_batch(ops, revenue_id=revenue_id, autotopups=autotopups)
        return out if raw else [outcome(op, result) for op, result in zip(ops, out, strict=True)]
    with cursor() as c:
        live = []
        for i in alongs:
            along = ops[i].along
            c.execute(f"WITH g AS ({along.first}) SELECT count(*) FROM g", along.params)
            if c.fetchone()[0]:
                live.append(i)
    kept = [i for i in range(len(ops)) if i not in set(alongs) - set(live)]
    results = _apply_batch([ops[i] for i in kept], revenue_id=revenue_id, autotopups=autotopups)
    out: list = [None] * len(ops)
    for i, result in zip(kept, results, strict=True):
        out[i] = result
    with cursor() as c:
        for i in live:
            if out[i] is None:
                continue
            op = ops[i]
            c.execute(
                f"WITH h AS (SELECT 1), t AS ({op.along.then}) SELECT (SELECT count(*) FROM t), balance, held "
                "FROM wallet_account WHERE id = %(along_account)s",
                {**op.along.params, "along_account": op.held.account_id},
            )
            changed, op.along.balance, op.along.held = c.fetchone()
            if changed != 1:
                raise BatchMismatch(f"a post's `then` changed {changed} rows, not 1")
    return out if raw else [outcome(op, result) for op, result in zip(ops, out, strict=True)]


def outcome(op: HoldOp | PostOp, result: object) -> Hold | None:
    """The Hold an operation's raw outcome (`apply_batch(raw=True)`) stands for."""
    if result is None:
        return None
    if isinstance(op, PostOp):
        held = op.held
        held.status, held.posted_amount, held.excess, held.resolved_at = Hold.Status.POSTED, op.amount, 0, result
        return held
    pk, created_at = result
    # As Django loads a model it unpickles (no field-by-field __init__): a dozen
    # fields' setattr cost more than the rest of a hold's share of its batch.
    placed = Hold.__new__(Hold)
    placed.__dict__.update(
        id=pk,
        account_id=op.account_id,
        amount=op.amount,
        status=Hold.Status.PENDING,
        posted_amount=None,
        excess=0,
        idempotency_key=op.idempotency_key,
        reference=op.reference,
        reason="",
        expires_at=created_at + dt.timedelta(seconds=op.ttl_seconds),  # now() + ttl, as inserted
        created_at=created_at,
        resolved_at=None,
    )
    state = placed._state = ModelState()
    state.adding = False
    state.db = DEFAULT_DB_ALIAS  # the alias of `connection`, without its thread-local look-up
    return placed


def _apply_batch(ops: list[HoldOp | PostOp], *, revenue_id: int, autotopups: set[int] | None = None) -> list:
    """Apply holds and posts in the caller's transaction (rows locked here, in the ledger's
    order); one raw outcome per operation: `Placed` for a placed hold, the database's
    `now()` for a posted one, or None for one this path does not settle (a refusal, a
    repeat, a frozen wallet, a take-back waiting, an expired or resolved hold), which the
    caller answers with the unbatched service. `autotopups` receives the wallets posted
    to that have an automatic top-up on."""
    with cursor() as c:
        c.execute(_READ_BATCH, _read_params(ops))
        decided = _decided(ops, c.fetchall(), revenue_id, autotopups)
        if decided.write is None:
            return decided.out
        with _mismatch_raised():
            c.execute(_WRITE_BATCH, decided.write)
        return decided.settle(c.fetchall())


def commit_batch(ops: list[HoldOp | PostOp], *, revenue_id: int, autotopups: set[int] | None = None) -> list:
    """`apply_batch(raw=True)` in a transaction of its own, committed here, in two round
    trips (PostgreSQL's pipeline mode): BEGIN, the posts' `along.first` and the read that
    locks the rows; then the write, each posted `along.then` and COMMIT. The rows stay
    locked only for the write, the commit and deciding in between, so a hot wallet's
    next batch (another process's) waits less. A `then` that does not change its one
    row fails its statement, before the commit (BatchMismatch). The connection must be
    in autocommit and only this thread's (the batcher's); if anything fails, the caller
    closes it (a transaction may be left open on it). Without prepared statements
    (`LEDGER_PREPARED_STATEMENTS=0`), `apply_batch` in a Django transaction."""
    if not (settings.LEDGER_PREPARED_STATEMENTS and connection.vendor == "postgresql"):
        with transaction.atomic():
            return apply_batch(ops, revenue_id=revenue_id, autotopups=autotopups, raw=True)
    prepare_connection()
    db = connections[DEFAULT_DB_ALIAS]  # looked up once: each `connection.x` costs a thread-local look-up
    conn = db.connection
    wrap = db.make_debug_cursor if db.queries_logged else db.make_cursor
    alongs = [i for i, op in enumerate(ops) if isinstance(op, PostOp) and op.along is not None]
    with contextlib.ExitStack() as cursors:

        def batch_cursor():  # on the connection set up above, closed with the batch
            return cursors.enter_context(wrap(_PreparedCursor(conn)))

        c = batch_cursor()
        thens: list[tuple[PostOp, object]] = []
        with _mismatch_raised(), conn.pipeline():  # leaving it sends what is queued and waits for every result
            conn.execute("BEGIN")
            firsts = []
            for i in alongs:  # before any ledger row is locked, as in apply_batch
                along = ops[i].along
                fc = batch_cursor()
                fc.execute(f"WITH g AS ({along.first}) SELECT count(*) FROM g", along.params)
                firsts.append((i, fc))
            c.execute(_READ_BATCH, _read_params(ops))
            rows = c.fetchall()  # the first round trip
            dead = {i for i, fc in firsts if not fc.fetchone()[0]}
            kept = [i for i in range(len(ops)) if i not in dead]
            kept_ops = [ops[i] for i in kept]
            decided = _decided(kept_ops, rows, revenue_id, autotopups)
            if decided.write is None:
                conn.execute("ROLLBACK")  # nothing to write: let the locks go
            else:
                c.execute(_WRITE_BATCH, decided.write)
                for j in decided.plan.posted:
                    op = kept_ops[j]
                    if op.along is not None:
                        tc = batch_cursor()
                        tc.execute(
                            _THEN.format(then=op.along.then), {**op.along.params, "along_account": op.held.account_id}
                        )
                        thens.append((op, tc))
                conn.execute("COMMIT")
        results = decided.out if decided.write is None else decided.settle(c.fetchall())
        for op, tc in thens:
            _, op.along.balance, op.along.held = tc.fetchone()
    out: list = [None] * len(ops)
    for i, result in zip(kept, results, strict=True):
        out[i] = result
    return out


# A posted operation's `along.then`, checked in its statement: anything but one row changed
# fails it (the text cast to an integer raises), so the batch rolls back before its commit.
_THEN = (
    "WITH h AS (SELECT 1), t AS ({then}) "
    "SELECT CASE WHEN (SELECT count(*) FROM t) = 1 THEN 0 "
    "ELSE ('" + _MISMATCH + ": a post''s then changed ' || (SELECT count(*) FROM t) || ' rows, not 1')::int END, "
    "balance, held FROM wallet_account WHERE id = %(along_account)s"
)


@contextlib.contextmanager
def _mismatch_raised():
    try:
        yield
    except Exception as exc:
        if _MISMATCH in str(exc) or _hold_key_taken(exc):
            raise BatchMismatch(str(exc)) from exc
        raise


def _hold_key_taken(exc: BaseException) -> bool:
    """A hold's key was taken by a concurrent transaction since the batch's read."""
    while exc is not None:
        if isinstance(exc, psycopg.errors.UniqueViolation) and exc.diag.constraint_name == _HOLD_KEY_INDEX:
            return True
        exc = exc.__cause__
    return False


def _read_params(ops: list[HoldOp | PostOp]) -> dict[str, str]:
    """The read's parameters as array literals (`{1,2}`, `{"a","b"}`), which psycopg sends as
    they are and PostgreSQL parses in C: psycopg adapts a list element by element in Python
    (about a sixth of a batch's Python with three lists)."""
    holds: set[int] = set()
    accounts: set[int] = set()
    keys: list[str] = []
    for op in ops:
        if type(op) is HoldOp:
            accounts.add(op.account_id)
            keys.append(op.idempotency_key)
        else:
            holds.add(op.held.id)
            accounts.add(op.held.account_id)
    return {"holds": _int_array(sorted(holds)), "accounts": _int_array(sorted(accounts)), "keys": _text_array(keys)}


def _int_array(values) -> str:
    return f"{{{','.join(map(str, values))}}}"


def _text_array(values: list[str]) -> str:
    """An array literal of strings: each quoted, its backslashes and double quotes escaped."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


@dataclass(slots=True)
class _Decided:
    """A batch decided: the write's parameters (None: nothing to write) and how to turn
    what the write returns into each operation's outcome."""

    out: list
    plan: _Plan
    moved: int
    now: object
    write: dict[str, object] | None

    def settle(self, rows: list[tuple]) -> list:
        plan, out = self.plan, self.out
        inserted = {key: pk for pk, key, _ in rows if pk is not None}
        for key, i in plan.placed.items():
            out[i] = Placed((inserted[key], self.now))
        for i in plan.posted:
            out[i] = self.now
        return out


def _decided(ops: list[HoldOp | PostOp], rows: list[tuple], revenue_id: int, autotopups: set[int] | None) -> _Decided:
    holds: dict[int, list] = {}  # [account_id, amount, status, live]
    wallets: dict[int, _Wallet] = {}
    taken: set[str] = set()
    now = None
    for tag, pk, x, y, s1, s2, b1, b2, ts in rows:
        if tag == 0:
            holds[pk] = [x, y, s1, b1]
        elif tag == 1:
            wallets[pk] = _Wallet(x, y, bool(s1), s2, b1, b2)
        elif tag == 2:
            taken.add(s1)
        else:
            now = ts
    plan = _decide(ops, holds, wallets, taken, revenue_id)
    moved = {pk: w for pk, w in wallets.items() if w.moved}
    if autotopups is not None:
        autotopups.update(pk for pk, w in moved.items() if w.autotopup)
    out: list = [None] * len(ops)
    write = None
    if plan.holds or plan.posts:
        wallet_rows = ",".join(
            f'{{"account":{pk},"d_balance":{w.d_balance},"d_held":{w.d_held},"head":"{w.head}"}}'
            for pk, w in moved.items()
        )
        write = {
            "holds": f"[{','.join(plan.holds)}]",
            "posts": f"[{','.join(plan.posts)}]",
            "entries": f"[{','.join(plan.entries)}]",
            "wallets": f"[{wallet_rows}]",
            "post_ids": _int_array(op.held.id for op in map(ops.__getitem__, plan.posted)),
            "wallet_ids": _int_array(moved),
            "revenue": revenue_id,
            "decided": _int_array((len(plan.holds), len(plan.posted), len(plan.entries), len(moved))),
        }
    return _Decided(out, plan, len(moved), now, write)


_PENDING_TAIL = ',"status":"pending","reason":""}'


def _decide(
    ops: list[HoldOp | PostOp], holds: dict[int, list], wallets: dict[int, _Wallet], taken: set[str], revenue_id: int
) -> _Plan:
    """Each operation in arrival order, by the rules of the one-statement paths. This runs
    with the batch's rows locked, so its rows come mostly built (`prepared`)."""
    plan = _Plan()
    sha256 = hashlib.sha256
    for i, op in enumerate(ops):
        if isinstance(op, HoldOp):
            wallet = wallets.get(op.account_id)
            if wallet is None or wallet.frozen or op.idempotency_key in taken:
                continue
            taken.add(op.idempotency_key)
            row = op.row or op.prepared().row
            available = wallet.balance - wallet.held
            if available >= op.amount:
                wallet.held += op.amount
                wallet.d_held += op.amount
                wallet.moved = True
                plan.placed[op.idempotency_key] = i
                plan.holds.append(row + _PENDING_TAIL)
            else:  # recorded as refused under its key, as the one-statement hold does
                plan.holds.append(f'{row},"status":"rejected","reason":"only {available} credits available"}}')
            continue
        held = holds.get(op.held.id)  # [account_id, amount, status, live]
        wallet = wallets.get(op.held.account_id)
        if (
            held is None
            or wallet is None
            or wallet.owing
            or held[0] != op.held.account_id
            or held[2] != Hold.Status.PENDING
            or not held[3]
            or op.amount > held[1]
        ):
            continue
        held[2] = Hold.Status.POSTED
        wallet.held -= held[1]
        wallet.d_held -= held[1]
        wallet.moved = True
        plan.posts.append(f'{{"hold":{op.held.id},"amount":{op.amount}}}')
        plan.posted.append(i)
        if op.amount:
            entry = op.entry
            if entry is None or entry[0] != revenue_id:
                entry = op.prepared(revenue_id).entry
            wallet.head = sha256((wallet.head + entry[1]).encode()).hexdigest()  # digests.chain
            wallet.balance -= op.amount
            wallet.d_balance -= op.amount
            plan.entries.append(f'{entry[2]},"digest":"{wallet.head}"}}')
    return plan
