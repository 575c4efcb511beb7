"""Group commit: callers on many threads share one transaction and one commit, and
each gets its own outcome; a refusal in a batch disturbs no other operation."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.wallet_helpers import funded_wallet, immutability_lifted
from wallet import batching, ledger_sql
from wallet.errors import HoldNotPending, IdempotencyConflict, InsufficientCredits
from wallet.models import Account, AutoTopup, Entry, Hold
from wallet.selectors import ledger_audit
from wallet.services import wallet_hold, wallet_void

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def batcher(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("group commit is PostgreSQL's; elsewhere the batched calls are the plain services")
    # A long window, so the operations of a test land in few batches.
    fresh = batching.Batcher(wait=0.3, max_items=64)
    monkeypatch.setattr(batching, "_batcher", fresh)
    yield fresh
    fresh.stop()


def _threads(n: int, target) -> list[object]:
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            outcomes[i] = target(i)
        except Exception as exc:  # an outcome like any other, checked by the test
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outcomes


def test_thirty_threads_spend_a_hot_wallet_in_a_few_commits(alice, batcher):
    account = funded_wallet(alice, 2000)

    def pair(i: int) -> str:
        try:
            hold = batching.wallet_hold_batched(account=Account(pk=account.pk), amount=100, idempotency_key=f"h{i}")
        except InsufficientCredits:
            return "refused"
        posted = batching.wallet_post_batched(hold=hold, amount=100, memo=f"reply {i}")
        return posted.status

    outcomes = _threads(30, pair)
    assert sorted(outcomes) == ["posted"] * 20 + ["refused"] * 10, outcomes
    assert batcher.batches < 20  # 40 operations, far fewer commits
    account.refresh_from_db()
    assert (account.balance, account.held) == (0, 0)
    assert Entry.objects.filter(kind="usage").count() == 20
    assert Hold.objects.filter(status="rejected").count() == 10
    assert ledger_audit() == []


def _fields(hold: Hold) -> dict[str, object]:
    return {f.attname: getattr(hold, f.attname) for f in Hold._meta.concrete_fields}


def test_the_holds_a_batch_hands_back_are_the_rows_it_wrote(alice, batcher):
    account = funded_wallet(alice, 1000)
    placed = batching.wallet_hold_batched(account=account, amount=100, idempotency_key="h", reference="message:1")
    assert batcher.batches == 1
    assert _fields(placed) == _fields(Hold.objects.get(pk=placed.pk))  # built without a read, every field
    assert (placed._state.adding, placed._state.db) == (False, "default")
    posted = batching.wallet_post_batched(hold=placed, amount=40, memo="reply")
    assert batcher.batches == 2 and posted is placed
    assert _fields(posted) == _fields(Hold.objects.get(pk=placed.pk))
    entry = Entry.objects.get(hold=placed)
    assert (entry.amount, entry.memo, entry.reference, entry.idempotency_key) == (
        40,
        "reply",
        "message:1",
        f"hold:{placed.pk}:post",
    )
    posted.refresh_from_db()  # an ordinary model instance
    assert posted.status == "posted"
    assert ledger_audit() == []


def test_a_refusal_in_a_batch_leaves_the_others_posted(alice, bob, batcher):
    mine = funded_wallet(alice, 1000)
    theirs = funded_wallet(bob, 1000)
    holds = [wallet_hold(account=mine, amount=100, idempotency_key=f"a{i}") for i in range(3)]
    holds += [wallet_hold(account=theirs, amount=100, idempotency_key=f"b{i}") for i in range(3)]
    wallet_void(hold=holds[1], reason="provider failed")  # posting it is refused
    expired = wallet_hold(account=theirs, amount=100, idempotency_key="late", ttl_seconds=0)
    holds.append(expired)
    amounts = [40, 40, 40, 40, 40, 300, 40]  # the sixth posts above its hold: the unbatched path charges it

    outcomes = _threads(len(holds), lambda i: batching.wallet_post_batched(hold=holds[i], amount=amounts[i]))
    assert isinstance(outcomes[1], HoldNotPending) and isinstance(outcomes[6], HoldNotPending)
    posted = [o for i, o in enumerate(outcomes) if i not in (1, 6)]
    assert all(isinstance(o, Hold) and o.status == "posted" for o in posted), outcomes
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.balance, mine.held) == (920, 0)
    assert (theirs.balance, theirs.held) == (1000 - 40 - 40 - 300, 0)
    assert Hold.objects.get(pk=expired.pk).status == "expired"
    assert ledger_audit() == []


def test_repeats_in_one_batch_post_once_and_conflicts_are_refused(alice, batcher):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=100, idempotency_key="h")
    outcomes = _threads(6, lambda i: batching.wallet_post_batched(hold=hold, amount=60 if i < 5 else 70))
    results = sorted(type(o).__name__ for o in outcomes)
    posted_at = Hold.objects.get(pk=hold.pk).posted_amount
    # Whichever amount committed first is the hold's; the other amount is a conflict.
    if posted_at == 60:
        assert results == ["Hold"] * 5 + ["IdempotencyConflict"]
    else:
        assert posted_at == 70 and results == ["Hold"] + ["IdempotencyConflict"] * 5
    assert Entry.objects.filter(kind="usage").count() == 1
    assert ledger_audit() == []


def test_inside_a_transaction_the_batched_call_is_the_plain_service(alice, batcher):
    account = funded_wallet(alice, 1000)
    with transaction.atomic():
        hold = batching.wallet_hold_batched(account=account, amount=100, idempotency_key="h")
        batching.wallet_post_batched(hold=hold, amount=30)
        transaction.set_rollback(True)
    assert batcher.batches == 0
    assert not Hold.objects.exists()
    account.refresh_from_db()
    assert (account.balance, account.held) == (1000, 0)
    with pytest.raises(IdempotencyConflict):
        hold = batching.wallet_hold_batched(account=account, amount=100, idempotency_key="h2")
        batching.wallet_hold_batched(account=account, amount=200, idempotency_key="h2")


def _apply(ops):
    revenue = ledger_sql.system_account_id("usage")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        outcomes = ledger_sql.apply_batch(ops, revenue_id=revenue)
    return outcomes, len(queries)


def test_a_batch_is_a_few_statements_whatever_its_size_and_a_refusal_in_it_stops_nothing(alice, bob, batcher):
    mine = funded_wallet(alice, 250)
    theirs = funded_wallet(bob, 1000)
    ops = [
        ledger_sql.HoldOp(mine.pk, 100, "m1", "message:1", 60),
        ledger_sql.HoldOp(mine.pk, 200, "m2", "message:2", 60),  # 150 left: refused
        ledger_sql.HoldOp(mine.pk, 100, "m3", "message:3", 60),  # still fits after the refusal
        ledger_sql.HoldOp(theirs.pk, 300, "t1", "", 60),
        ledger_sql.HoldOp(mine.pk, 100, "m1", "message:1", 60),  # a repeat inside the batch
    ]
    outcomes, statements = _apply(ops)
    assert statements == 2  # one read (locks the rows, looks the keys up), one write
    assert [o.status if o else None for o in outcomes] == ["pending", None, "pending", "pending", None]
    refused = Hold.objects.get(idempotency_key="m2")
    assert (refused.status, refused.reason) == ("rejected", "only 150 credits available")
    with pytest.raises(InsufficientCredits):  # the caller's retry under its key raises the recorded refusal
        batching.wallet_hold_batched(account=mine, amount=200, idempotency_key="m2")
    assert batching.wallet_hold_batched(account=mine, amount=100, idempotency_key="m1").pk == outcomes[0].pk

    voided = wallet_hold(account=theirs, amount=100, idempotency_key="t2")
    wallet_void(hold=voided)
    posts = [
        ledger_sql.PostOp(outcomes[0], 60, "message:1", "first"),
        ledger_sql.PostOp(voided, 10, "", ""),  # not pending: left to the unbatched path
        ledger_sql.PostOp(outcomes[2], 0, "message:3", "nothing used"),  # posted, no entry
        ledger_sql.PostOp(outcomes[3], 301, "", ""),  # above its hold: the unbatched path charges it
        ledger_sql.PostOp(outcomes[3], 250, "", "second"),
        ledger_sql.PostOp(outcomes[3], 250, "", "second"),  # a repeat: answered by the unbatched path
    ]
    posted, statements = _apply(posts)
    assert statements == 2  # one read (locks the holds, then the accounts), one write
    assert [o.status if o else None for o in posted] == ["posted", None, "posted", None, "posted", None]
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.balance, mine.held) == (190, 0)
    assert (theirs.balance, theirs.held) == (750, 0)
    entries = Entry.objects.filter(kind="usage").order_by("pk")
    assert [(e.wallet_id, e.amount, e.memo) for e in entries] == [(mine.pk, 60, "first"), (theirs.pk, 250, "second")]
    assert mine.chain_head == entries[0].digest and theirs.chain_head == entries[1].digest
    assert ledger_audit() == []


def test_many_posts_on_one_wallet_in_a_batch_chain_their_digests_in_order(alice, batcher):
    account = funded_wallet(alice, 10_000)
    holds = [wallet_hold(account=account, amount=100, idempotency_key=f"h{i}") for i in range(12)]
    outcomes, statements = _apply([ledger_sql.PostOp(h, 10 + i, "", f"reply {i}") for i, h in enumerate(holds)])
    assert statements == 2 and all(o.status == "posted" for o in outcomes)
    account.refresh_from_db()
    assert (account.balance, account.held) == (10_000 - sum(10 + i for i in range(12)), 0)
    assert ledger_audit(full=True) == []
    with immutability_lifted():  # the audit finds an entry the batch wrote and someone edited
        Entry.objects.filter(memo="reply 5").update(amount=1)
    assert any("digest chain broken" in p for p in ledger_audit(full=True))


def test_a_batch_that_writes_other_rows_than_it_decided_rolls_back_and_its_callers_run_alone(
    alice, batcher, monkeypatch
):
    account = funded_wallet(alice, 1000)
    first = wallet_hold(account=account, amount=100, idempotency_key="dup")
    # As if another transaction took the key between the batch's look-up and its insert.
    read = ledger_sql._READ_BATCH.replace("%(keys)s::text[])", "%(keys)s::text[]) AND false")
    monkeypatch.setattr(ledger_sql, "_READ_BATCH", read)
    with pytest.raises(ledger_sql.BatchMismatch):
        _apply([ledger_sql.HoldOp(account.pk, 100, "dup", "", 60), ledger_sql.HoldOp(account.pk, 50, "new", "", 60)])
    assert not Hold.objects.filter(idempotency_key="new").exists()  # rolled back whole
    account.refresh_from_db()
    assert account.held == 100

    amounts, keys = (100, 50), ("dup", "new")
    outcomes = _threads(
        2, lambda i: batching.wallet_hold_batched(account=account, amount=amounts[i], idempotency_key=keys[i])
    )
    assert outcomes[0].pk == first.pk and outcomes[1].status == "pending"  # each answered by the plain service
    account.refresh_from_db()
    assert account.held == 150
    assert ledger_audit() == []


def test_a_hold_key_taken_since_the_read_fails_the_committed_batch_before_its_commit(alice, batcher, monkeypatch):
    """The write inserts holds without ON CONFLICT: a key the read did not see (taken by a
    concurrent transaction since) fails the insert on its unique index, and the batch, in
    its own transaction and pipeline, is a mismatch with nothing of it committed."""
    account = funded_wallet(alice, 1000)
    first = wallet_hold(account=account, amount=100, idempotency_key="dup")
    read = ledger_sql._READ_BATCH.replace("%(keys)s::text[])", "%(keys)s::text[]) AND false")
    monkeypatch.setattr(ledger_sql, "_READ_BATCH", read)
    revenue = ledger_sql.system_account_id("usage")
    ops = [ledger_sql.HoldOp(account.pk, 50, "new", "", 60), ledger_sql.HoldOp(account.pk, 100, "dup", "", 60)]
    with pytest.raises(ledger_sql.BatchMismatch, match="wallet_hold_idempotency_key"):
        ledger_sql.commit_batch([op.prepared() for op in ops], revenue_id=revenue)
    connection.close()  # as the batcher does after a failed batch
    assert list(Hold.objects.filter(idempotency_key__in=["new", "dup"]).values_list("pk", flat=True)) == [first.pk]
    account.refresh_from_db()
    assert account.held == 100
    assert ledger_audit() == []


def test_only_posts_on_wallets_with_an_automatic_top_up_pay_for_its_check(alice, bob, batcher, monkeypatch):
    checked: list[int] = []
    monkeypatch.setattr(batching, "wallet_after_spend", checked.append)
    mine, theirs = funded_wallet(alice, 1000), funded_wallet(bob, 1000)
    AutoTopup.objects.create(account=mine, enabled=True, threshold=5000, amount_cents=500, payment_method_id="pm_1")
    holds = [wallet_hold(account=a, amount=100, idempotency_key=f"h{a.pk}") for a in (mine, theirs)]
    outcomes = _threads(2, lambda i: batching.wallet_post_batched(hold=holds[i], amount=50))
    assert [o.status for o in outcomes] == ["posted", "posted"]
    assert checked == [mine.pk]  # the wallet without one costs no look-up after its post


def test_prepared_statements_plan_once_and_a_rollback_cannot_undo_that(alice, batcher):
    account = funded_wallet(alice, 1000)
    connection.close()
    with transaction.atomic():  # inside a transaction the session setting waits: a rollback would undo it
        wallet_hold(account=account, amount=10, idempotency_key="in-a-transaction")
        assert not getattr(connection.connection, "_ledger_generic_plans", False)
        transaction.set_rollback(True)
    hold = wallet_hold(account=account, amount=10, idempotency_key="alone")
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] >= 1  # the hold's statement, prepared on this connection
    assert hold.status == Hold.Status.PENDING


def test_posts_along_go_in_the_batch_s_round_trips_and_a_then_that_changes_nothing_rolls_it_back(alice, batcher):
    account = funded_wallet(alice, 1000)
    holds = [wallet_hold(account=account, amount=100, idempotency_key=f"a{i}") for i in range(4)]
    revenue = ledger_sql.system_account_id("usage")

    def along(i: int, *, ok: bool = True, target: int | None = None) -> ledger_sql.Along:
        return ledger_sql.Along(
            first="SELECT 1 WHERE %(x_ok)s",
            then="UPDATE wallet_hold SET reference = %(x_ref)s FROM h WHERE wallet_hold.id = %(x_hold)s RETURNING 1",
            params={"x_ok": ok, "x_ref": f"along:{i}", "x_hold": holds[i].pk if target is None else target},
        )

    ops = [
        ledger_sql.PostOp(holds[0], 30, "", "", along(0)),
        ledger_sql.PostOp(holds[1], 40, "", "", along(1, ok=False)),  # its `first` finds nothing: left out
        ledger_sql.PostOp(holds[2], 50, "", ""),
    ]
    out = ledger_sql.commit_batch([op.prepared(revenue) for op in ops], revenue_id=revenue)
    assert [o is not None for o in out] == [True, False, True]
    assert (ops[0].along.balance, ops[0].along.held) == (920, 200)  # the wallet as the batch left it
    assert Hold.objects.get(pk=holds[0].pk).reference == "along:0"
    assert Hold.objects.get(pk=holds[1].pk).status == Hold.Status.PENDING

    missing = ledger_sql.PostOp(holds[3], 10, "", "", along(3, target=-1)).prepared(revenue)  # `then` changes no row
    with pytest.raises(ledger_sql.BatchMismatch):
        ledger_sql.commit_batch([missing], revenue_id=revenue)
    connection.close()  # as the batcher does after a failed batch
    account.refresh_from_db()
    assert (account.balance, account.held) == (920, 200)  # nothing of it committed
    assert Hold.objects.get(pk=holds[3].pk).status == Hold.Status.PENDING
    assert ledger_audit() == []


def _recorded(monkeypatch, before=None) -> list[tuple[str, int]]:
    """Each batch's leading thread and size; `before(calls)` runs as a batch starts."""
    calls: list[tuple[str, int]] = []
    commit = ledger_sql.commit_batch

    def recording(ops, **kwargs):
        calls.append((threading.current_thread().name, len(ops)))
        if before is not None:
            before(calls)
        return commit(ops, **kwargs)

    monkeypatch.setattr(ledger_sql, "commit_batch", recording)
    return calls


def test_a_caller_leads_the_batch_on_the_batch_connection_and_no_thread_is_started(alice, batcher, monkeypatch):
    account = funded_wallet(alice, 1000)
    calls = _recorded(monkeypatch)
    threads = threading.active_count()
    with CaptureQueriesContext(connection) as mine:
        hold = batching.wallet_hold_batched(account=account, amount=100, idempotency_key="h")
        batching.wallet_post_batched(hold=hold, amount=40)
    assert len(mine) == 0  # not on the caller's connection: the batch connection's transaction
    assert calls == [(threading.current_thread().name, 1)] * 2 and batcher.batches == 2
    assert threading.active_count() == threads
    account.refresh_from_db()
    assert (account.balance, account.held, hold.status) == (960, 0, "posted")

    outcomes = _threads(6, lambda i: batching.wallet_hold_batched(account=account, amount=10, idempotency_key=f"t{i}"))
    assert all(o.status == "pending" for o in outcomes), outcomes
    assert sum(n for _, n in calls[2:]) == 6 and len(calls) < 8  # one of the callers led each batch
    assert all(name.startswith("Thread-") for name, _ in calls[2:])
    assert ledger_audit() == []


def test_a_leader_whose_batch_fails_wakes_its_followers_and_each_runs_the_plain_service(alice, batcher, monkeypatch):
    account = funded_wallet(alice, 1000)

    def fail_once(calls):
        if len(calls) == 1:
            raise RuntimeError("the database went away")

    calls = _recorded(monkeypatch, fail_once)
    outcomes = _threads(5, lambda i: batching.wallet_hold_batched(account=account, amount=100, idempotency_key=f"h{i}"))
    assert all(isinstance(o, Hold) and o.status == "pending" for o in outcomes), outcomes
    assert calls[0][1] >= 2 and batcher.batches == len(calls) - 1
    assert batcher._db.connection is None  # closed after the failure: the next batch opens it again
    account.refresh_from_db()
    assert account.held == 500
    hold = batching.wallet_hold_batched(account=account, amount=100, idempotency_key="after")
    assert hold.status == "pending" and batcher.batches == len(calls) - 1 >= 1
    assert ledger_audit() == []


def _late_hold_during_the_first_batch(account, batcher, late: list, then: Callable[[], None]) -> Callable[[list], None]:
    """A `before` for `_recorded`: as the first batch starts, a thread holds 50 on `account`
    (`late`: the thread, then its outcome); once that hold waits, `then()`, and the batch
    goes on."""

    def arrive_during_the_first(calls):
        if len(calls) != 1:
            return

        def hold() -> None:
            try:
                late.append(batching.wallet_hold_batched(account=account, amount=50, idempotency_key="late"))
            finally:
                connection.close()

        thread = threading.Thread(target=hold, name="late")
        thread.start()
        late.append(thread)
        for _ in range(1000):  # until it waits in the next batch (the first holds the batch connection)
            if batcher._pending:
                break
            threading.Event().wait(0.01)
        then()

    return arrive_during_the_first


def test_a_caller_arriving_while_a_batch_commits_leads_the_next_one(alice, batcher, monkeypatch):
    account = funded_wallet(alice, 1000)
    late: list[object] = []

    def waiting_with_a_leader() -> None:
        assert batcher._pending and batcher._leading

    arrive_during_the_first = _late_hold_during_the_first_batch(account, batcher, late, waiting_with_a_leader)
    calls = _recorded(monkeypatch, arrive_during_the_first)
    first = batching.wallet_hold_batched(account=account, amount=100, idempotency_key="first")
    late[0].join(timeout=60)
    assert first.status == "pending" and late[1].status == "pending"
    assert [name for name, _ in calls] == [threading.current_thread().name, "late"]
    assert batcher.batches == 2
    account.refresh_from_db()
    assert account.held == 150
    assert ledger_audit() == []


def _holds_through(batcher: batching.Batcher, n: int, alice, monkeypatch) -> list[tuple[str, int]]:
    """`n` threads each hold 100 on one wallet through `batcher`, all placed (the wallet
    holds them all): each batch's leading thread and size."""
    if connection.vendor != "postgresql":
        pytest.skip("group commit is PostgreSQL's")
    monkeypatch.setattr(batching, "_batcher", batcher)
    calls = _recorded(monkeypatch)
    account = funded_wallet(alice, 1000)
    try:
        outcomes = _threads(
            n, lambda i: batching.wallet_hold_batched(account=account, amount=100, idempotency_key=f"h{i}")
        )
    finally:
        batcher.stop()
    assert all(isinstance(o, Hold) and o.status == "pending" for o in outcomes), outcomes
    account.refresh_from_db()
    assert account.held == 100 * n
    return calls


def test_what_a_full_batch_leaves_behind_gets_a_leader_of_its_own(alice, monkeypatch):
    small = batching.Batcher(wait=0.3, max_items=2)
    calls = _holds_through(small, 7, alice, monkeypatch)
    assert all(n <= 2 for _, n in calls) and sum(n for _, n in calls) == 7
    assert small.batches == len(calls) >= 4
    assert ledger_audit() == []


def test_the_window_opens_after_the_batch_before_so_its_callers_join_the_next(alice, monkeypatch):
    """A caller that arrived while a batch committed, and the committed batch's caller
    back with its next operation a moment later, go in one batch: the window opens only
    after the commit (it used to run during it, and the late caller's batch left alone)."""
    if connection.vendor != "postgresql":
        pytest.skip("group commit is PostgreSQL's")
    batcher = batching.Batcher(wait=1.0, max_items=64)
    monkeypatch.setattr(batching, "_batcher", batcher)
    account = funded_wallet(alice, 1000)
    late: list[object] = []
    # Then longer than a window: one that ran now would have closed.
    arrive_during_the_first = _late_hold_during_the_first_batch(
        account, batcher, late, lambda: threading.Event().wait(2 * batcher.wait)
    )
    calls = _recorded(monkeypatch, arrive_during_the_first)
    try:
        first = batching.wallet_hold_batched(account=account, amount=100, idempotency_key="first")
        threading.Event().wait(0.1)  # the caller's own work before its next operation
        batching.wallet_post_batched(hold=first, amount=100)
        late[0].join(timeout=60)
    finally:
        batcher.stop()
    assert [n for _, n in calls] == [1, 2]  # the late hold and the first caller's post together
    assert first.status == "posted" and late[1].status == "pending"
    account.refresh_from_db()
    assert (account.balance, account.held) == (900, 50)
    assert ledger_audit() == []


def test_a_full_batch_does_not_wait_out_its_window(alice, monkeypatch):
    patient = batching.Batcher(wait=3600, max_items=3)  # an hour: only a full batch leaves
    calls = _holds_through(patient, 6, alice, monkeypatch)
    assert [n for _, n in calls] == [3, 3] and patient.batches == 2
    assert ledger_audit() == []


ODD = 'a "quoted" \\ back\nslash\t\x01 é€😀 |1:|'


def test_the_rows_written_out_by_hand_are_json_dumps_own_text_and_the_digest_its_definition():
    import datetime as dt
    import hashlib
    import json

    from wallet import digests

    hold = ledger_sql.HoldOp(7, 100, ODD, ODD[::-1], 60).prepared()
    assert hold.row == json.dumps({"account": 7, "amount": 100, "key": ODD, "reference": ODD[::-1], "ttl": 60})[:-1]
    held = Hold(pk=12, account_id=7, amount=100)
    post = ledger_sql.PostOp(held, 40, ODD, ODD[::-1]).prepared(3)
    revenue, content, row = post.entry
    created = dt.datetime.fromisoformat(json.loads(row + "}")["created"])
    fields = {"account": 7, "amount": 40, "key": "hold:12:post", "reference": ODD, "memo": ODD[::-1], "hold": 12}
    assert row == json.dumps({**fields, "created": created.isoformat()})[:-1]
    parts = ["usage", "7", "3", "40", "hold:12:post", ODD, ODD[::-1], "12", str(digests.micros(created))]
    assert content == hashlib.sha256("|".join(f"{len(p)}:{p}" for p in parts).encode()).hexdigest()


def test_a_post_with_an_odd_memo_goes_through_a_batch_and_chains_as_the_audit_expects(alice, batcher):
    account = funded_wallet(alice, 1000)
    hold = batching.wallet_hold_batched(account=account, amount=100, idempotency_key=ODD, reference=ODD)
    batching.wallet_post_batched(hold=hold, amount=40, memo=ODD[::-1])
    entry = Entry.objects.get(hold=hold)
    assert (entry.reference, entry.memo, Hold.objects.get(pk=hold.pk).idempotency_key) == (ODD, ODD[::-1], ODD)
    assert ledger_audit(full=True) == []


def _generic_plan(db, sql: str, types: dict[str, str]) -> str:
    """The plan the batch connection's session makes once for `sql` (a generic one, as its
    prepared statements get), its parameters declared with `types` in order."""
    names = list(types)
    for n, name in enumerate(names, start=1):
        sql = sql.replace(f"%({name})s", f"${n}")
    assert "%(" not in sql
    conn = db.connection
    conn.execute(f"PREPARE ledger_plan_check ({', '.join(types.values())}) AS {sql}")
    try:
        args = ", ".join(f"NULL::{t}" for t in types.values())
        return "\n".join(row[0] for row in conn.execute(f"EXPLAIN EXECUTE ledger_plan_check ({args})"))
    finally:
        conn.execute("DEALLOCATE ledger_plan_check")


def test_the_batch_connection_plans_on_the_keys_even_on_a_fresh_database(alice, batcher):
    """A fresh database's tables are empty when the batch connection makes its plans (once),
    and a sequential scan looks cheapest there; they were kept while the tables grew."""
    with connection.cursor() as cursor:  # as fresh as a new cluster's: no statistics, no pages
        cursor.execute("TRUNCATE wallet_hold, wallet_entry CASCADE")
        cursor.execute("SELECT relpages, reltuples FROM pg_class WHERE relname = 'wallet_hold'")
        assert cursor.fetchone()[0] == 0
    account = funded_wallet(alice, 1000)
    hold = batching.wallet_hold_batched(account=account, amount=100, idempotency_key="h")
    batching.wallet_post_batched(hold=hold, amount=40)
    db = batcher._db
    read = _generic_plan(db, ledger_sql._READ_BATCH, {"holds": "bigint[]", "accounts": "bigint[]", "keys": "text[]"})
    write = _generic_plan(
        db,
        ledger_sql._WRITE_BATCH,
        {
            "holds": "json",
            "posts": "json",
            "entries": "json",
            "wallets": "json",
            "post_ids": "bigint[]",
            "wallet_ids": "bigint[]",
            "revenue": "bigint",
            "decided": "bigint[]",
        },
    )
    for plan in (read, write):
        assert "Seq Scan" not in plan, plan
    assert "wallet_hold_pkey" in read and "wallet_account_pkey" in read, read
    assert "wallet_hold_idempotency_key" in read, read
    assert "wallet_hold_pkey" in write and "wallet_account_pkey" in write, write
    with db.cursor() as cursor:  # the session's setting, kept for the connection's life
        cursor.execute("SHOW enable_seqscan")
        assert cursor.fetchone()[0] == "off"
    with connection.cursor() as cursor:  # only there: a caller's connection plans as usual
        cursor.execute("SHOW enable_seqscan")
        assert cursor.fetchone()[0] == "on"


def test_the_read_s_array_literals_are_what_postgresql_reads_back(batcher):
    keys = [ODD, ODD[::-1], "", "{a,b}", 'x"y\\z', "NULL", " spaced "]
    params = ledger_sql._read_params(
        [ledger_sql.HoldOp(9, 1, k, "", 60) for k in keys] + [ledger_sql.PostOp(Hold(pk=5, account_id=3), 1, "", "")]
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT %(holds)s::bigint[], %(accounts)s::bigint[], %(keys)s::text[]", params)
        assert cursor.fetchone() == ([5], [3, 9], keys)
        cursor.execute("SELECT %(keys)s::text[]", {"keys": ledger_sql._text_array([])})
        assert cursor.fetchone() == ([],)
