"""Group commit: many callers' hold and post operations, one transaction, one commit.

With durable commits every transaction waits for its WAL flush, and a hot wallet's
row stays locked until then, so one wallet settles at most one operation per flush.
A per-process batcher collects operations from the threads of a process (a worker's
pool) for up to `BATCH_WAIT_SECONDS` after the batch before it committed, or until
`BATCH_MAX_ITEMS` operations wait, applies them in
one transaction in the ledger's lock order (holds by id, then accounts by id), commits
once, and hands each caller its own outcome.

A batch is two statements in two round trips whatever its size (`ledger_sql.commit_batch`):
one locks and reads the rows, the operations are decided by the one-statement paths'
rules, and one writes every row at once, sent with its COMMIT (pipeline mode), so a
hot wallet's row stays locked across one round trip and the commit (it was four). The
posts' `along` statements go in the same two round trips (`first` with the read, `then`
with the write), not one each.

An operation that this path does not settle (a refusal: an expired or
resolved hold, a repeated key, a frozen wallet, a take-back waiting, too few credits)
does not disturb the batch: after the commit, that caller runs the unbatched service,
which refuses or answers it by the usual rules (a refused hold is recorded under its
key in the batch, so the retry raises it). A database error rolls the batch back and
every caller runs the unbatched service on its own.

PostgreSQL only; elsewhere, and inside a caller's transaction (whose atomicity a batch
committed on another connection would break), these functions are the plain services.
There is no batcher thread: the first caller to find no batch gathering leads one
(`Batcher`), on the process's one batch connection, and wakes the others when it is
committed; the leader's own outcome costs no hand-off between threads, and a batch
costs no wake-up of a thread that only gathers and applies.
"""

from __future__ import annotations

import _thread
import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from wallet import ledger_sql
from wallet.models import Account, Hold
from wallet.services import SYSTEM_REVENUE, wallet_after_spend, wallet_hold, wallet_post

log = logging.getLogger(__name__)

BATCH_WAIT_SECONDS = 0.002
BATCH_MAX_ITEMS = 64


class _Op:
    """One caller's operation in a batch. A follower waits on `_done`, a bare lock held
    from the start and released by its batch's leader: the cheapest hand-off between
    threads (an Event is a Condition of Python code and a new lock on every wait)."""

    __slots__ = ("op", "_done", "result", "autotopup", "lead")

    def __init__(self, op: ledger_sql.HoldOp | ledger_sql.PostOp) -> None:
        self.op = op
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.result: object = None  # the raw outcome (ledger_sql.outcome); None: run the unbatched service
        self.autotopup = False  # a post on a wallet with an automatic top-up on: check it after the commit
        self.lead = False  # woken to lead the operations a full batch left behind, not with an outcome

    def wait(self) -> None:
        self._done.acquire()

    def finish(self) -> None:
        self._done.release()


class Batcher:
    """Leader and followers, no thread of its own: the caller whose operation finds no
    batch gathering leads the next one. It waits for the batch before it, then waits out
    the window (its GIL free for the others to add theirs) unless the batch fills first,
    takes what gathered, applies it on the process's batch connection and wakes the
    others; its own outcome needs no hand-off between threads. A caller that arrives
    while a batch commits starts or joins the next one.

    The window opens only once the batch before has committed, so the callers that batch
    wakes join the next one: a process's callers then go in one batch a cycle (about 60
    of 64 in the benchmark), not in two halves that alternate (about 35 each: the window
    used to run while the batch before committed, and closed before its callers were
    back). A batch has a fixed cost of about 1 ms of Python and 1 ms of PostgreSQL
    whatever its size, so fewer, fuller batches cost less a pair."""

    def __init__(self, *, wait: float = BATCH_WAIT_SECONDS, max_items: int = BATCH_MAX_ITEMS) -> None:
        self.wait = wait
        self.max_items = max_items
        self.batches = 0  # committed batches, for tests and the benchmark
        self._lock = _thread.allocate_lock()  # guards _pending and _leading
        self._pending: list[_Op] = []
        self._leading = False  # the operations in _pending have a leader
        self._gathering: _thread.LockType | None = None  # released when the gathering batch is full
        self._commit = _thread.allocate_lock()  # one batch at a time on the batch connection
        self._db: BaseDatabaseWrapper | None = None

    def submit(self, op: _Op) -> _Op:
        with self._lock:
            pending = self._pending
            pending.append(op)
            lead = not self._leading
            self._leading = True
            if self._gathering is not None and len(pending) >= self.max_items:
                self._gathering.release()  # full: its leader need not wait out the window
                self._gathering = None
        if lead:
            self._lead()
        else:
            op.wait()
            if op.lead:  # the batch before was full: this one leads what it left, its own op first
                op.lead = False
                self._lead()
        return op

    def stop(self) -> None:
        """Close the batch connection (after the batch in flight); a later batch opens it again."""
        with self._commit:
            if self._db is not None:
                self._db.close()

    def _lead(self) -> None:
        with self._commit:
            full = _thread.allocate_lock()
            full.acquire()
            with self._lock:
                gather = len(self._pending) < self.max_items
                if gather:
                    self._gathering = full
            if gather:
                full.acquire(timeout=self.wait)  # the window fills while the leader waits
            with self._lock:
                self._gathering = None
                ops = self._pending[: self.max_items]
                rest = self._pending = self._pending[self.max_items :]
                self._leading = bool(rest)
            if rest:  # a leader for what did not fit, woken now to gather behind this batch
                rest[0].lead = True
                rest[0].finish()
            own = self._connection()
            mine = connections[DEFAULT_DB_ALIAS]
            connections[DEFAULT_DB_ALIAS] = own  # ledger_sql runs on `connection`: the batch's, for now
            try:
                self._apply(ops)
            except Exception:  # each caller then runs the unbatched service on its own
                log.exception("ledger batch failed; its operations run one by one")
                for op in ops:
                    op.result = None
                try:
                    own.close()
                except Exception:
                    log.exception("closing the batch connection failed")
            finally:
                connections[DEFAULT_DB_ALIAS] = mine
        for op in ops[1:]:  # ops[0] is the leader's own
            op.finish()

    def _connection(self) -> BaseDatabaseWrapper:
        """The process's batch connection: one, shared by whichever caller leads (one at a
        time, under `_commit`), so a batch never runs on a caller's own connection."""
        if self._db is None:
            self._db = connections.create_connection(DEFAULT_DB_ALIAS)
            self._db.inc_thread_sharing()
        return self._db

    def _apply(self, ops: list[_Op]) -> None:
        revenue = ledger_sql.system_account_id(SYSTEM_REVENUE)
        ledger_sql.prepare_connection(batch=True)  # plans on the keys, even on a fresh database
        autotopups: set[int] = set()
        # Two round trips, the rows locked only from the first to the commit.
        results = ledger_sql.commit_batch([op.op for op in ops], revenue_id=revenue, autotopups=autotopups)
        for op, result in zip(ops, results, strict=True):
            op.result = result
            if result is not None and isinstance(op.op, ledger_sql.PostOp):
                ledger_sql.outcome(op.op, result)  # marked posted before any caller runs on
                op.autotopup = op.op.held.account_id in autotopups
        self.batches += 1


_batcher = Batcher()


def _batchable() -> bool:
    db = connections[DEFAULT_DB_ALIAS]  # this thread's connection, looked up once
    return db.vendor == "postgresql" and not db.in_atomic_block


def wallet_hold_batched(
    *, account: Account, amount: int, idempotency_key: str, reference: str = "", ttl_seconds: int | None = None
) -> Hold:
    """`wallet_hold`, committed with other callers' operations; same outcomes."""
    if amount > 0 and _batchable():
        ttl = settings.HOLD_TTL_SECONDS if ttl_seconds is None else ttl_seconds
        op = ledger_sql.HoldOp(account.pk, amount, idempotency_key, reference, ttl).prepared()
        placed = ledger_sql.outcome(op, _batcher.submit(_Op(op)).result)
        if placed is not None:
            return placed
    return wallet_hold(
        account=account, amount=amount, idempotency_key=idempotency_key, reference=reference, ttl_seconds=ttl_seconds
    )


def wallet_post_batched(*, hold: Hold, amount: int, memo: str = "", reference: str | None = None) -> Hold:
    """`wallet_post`, committed with other callers' operations; same outcomes and rules."""
    if 0 <= amount <= hold.amount and _batchable():
        op = ledger_sql.PostOp(hold, amount, hold.reference if reference is None else reference, memo[:500])
        done = _batcher.submit(_Op(op.prepared(ledger_sql.system_account_id(SYSTEM_REVENUE))))
        if done.result is not None:
            if done.autotopup:  # only wallets with an automatic top-up on need the look-up it costs
                wallet_after_spend(hold.account_id)
            return hold
    return wallet_post(hold=hold, amount=amount, memo=memo, reference=reference)


def wallet_post_along_batched(
    *,
    hold: Hold,
    amount: int,
    along: ledger_sql.Along,
    memo: str = "",
    reference: str | None = None,
    batch: bool = True,
) -> Hold | None:
    """A post and what must change with it (`along`) in one statement, committed with other
    callers' operations where a batch can be (PostgreSQL, outside a caller's transaction).

    None when it could not be done that way: not on PostgreSQL, above the hold, or the
    statement found nothing to do (an expired or resolved hold, a take-back waiting,
    `along.first` empty) or its batch failed. Nothing changed then, and the caller takes
    its own path, which tells those cases apart. `batch=False`: in its own statement.
    """
    if not (ledger_sql.enabled() and 0 <= amount <= hold.amount):
        return None
    kwargs = {
        "held": hold,
        "amount": amount,
        "reference": hold.reference if reference is None else reference,
        "memo": memo[:500],
        "along": along,
    }
    if batch and _batchable():
        op = ledger_sql.PostOp(**kwargs).prepared(ledger_sql.system_account_id(SYSTEM_REVENUE))
        done = _batcher.submit(_Op(op))
        if done.result is None:
            return None
        if done.autotopup:  # as wallet_post_batched
            wallet_after_spend(hold.account_id)
        return hold
    posted = ledger_sql.post(revenue_id=ledger_sql.system_account_id(SYSTEM_REVENUE), **kwargs)
    if posted is not None and ledger_sql.autotopup_on(posted):
        wallet_after_spend(hold.account_id)
    return posted
