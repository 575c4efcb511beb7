"""Group commit: many callers' hold and post operations, one transaction, one commit.

With durable commits every transaction waits for its WAL flush, and a hot wallet's
row stays locked until then, so one wallet settles at most one operation per flush.
A per-process batcher collects operations from the threads of a process (a worker's
pool) for up to `BATCH_WAIT_SECONDS` or `BATCH_MAX_ITEMS` operations, applies them in
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
The batcher is a daemon thread started on first use in the process that uses it.
"""

from __future__ import annotations

import _thread
import logging
import queue
import threading
import time

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

from wallet import ledger_sql
from wallet.models import Account, Hold
from wallet.services import SYSTEM_REVENUE, wallet_after_spend, wallet_hold, wallet_post

log = logging.getLogger(__name__)

BATCH_WAIT_SECONDS = 0.002
BATCH_MAX_ITEMS = 64


class _Op:
    """One caller's operation in a batch. The caller waits on `_done`, a bare lock held
    from the start and released by the batcher: the cheapest hand-off between threads
    (an Event is a Condition of Python code and a new lock on every wait)."""

    __slots__ = ("op", "_done", "result", "autotopup")

    def __init__(self, op: ledger_sql.HoldOp | ledger_sql.PostOp) -> None:
        self.op = op
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.result: object = None  # the raw outcome (ledger_sql.outcome); None: run the unbatched service
        self.autotopup = False  # a post on a wallet with an automatic top-up on: check it after the commit

    def wait(self) -> None:
        self._done.acquire()

    def finish(self) -> None:
        self._done.release()


class Batcher:
    def __init__(self, *, wait: float = BATCH_WAIT_SECONDS, max_items: int = BATCH_MAX_ITEMS) -> None:
        self.wait = wait
        self.max_items = max_items
        self.batches = 0  # committed batches, for tests and the benchmark
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, op: _Op) -> _Op:
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start()
        self._queue.put(op)
        op.wait()
        return op

    def stop(self) -> None:
        """End the thread (it closes its connection); a later submit starts a new one."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ledger-batcher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        get = self._queue.get
        while True:
            first = get()
            if first is None:
                connection.close()
                return
            ops = [first]
            # The window fills while this thread sleeps; taking the operations only then
            # spares a thread switch (and a GIL hand-off) for every one that arrives.
            time.sleep(self.wait)
            while len(ops) < self.max_items:
                try:
                    op = get(block=False)
                except queue.Empty:
                    break
                if op is None:
                    self._queue.put(None)  # stop after this batch
                    break
                ops.append(op)
            try:
                self._apply(ops)
            except Exception:  # each caller then runs the unbatched service on its own
                log.exception("ledger batch failed; its operations run one by one")
                for op in ops:
                    op.result = None
                try:
                    connection.close()
                except Exception:
                    log.exception("closing the batcher's connection failed")
            finally:
                for op in ops:
                    op.finish()

    def _apply(self, ops: list[_Op]) -> None:
        revenue = ledger_sql.system_account_id(SYSTEM_REVENUE)
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
