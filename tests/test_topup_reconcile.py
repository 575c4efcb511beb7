"""Top-ups whose webhook was lost: the worker's sweep asks Stripe (real stripe SDK over HTTP,
the local fake) and applies what the event would have, once. wallet/reconcile.py."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import uuid
from collections.abc import Iterator

import pytest
import stripe
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from panels import heartbeat
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import event, open_topup, post_event, stripe_settings
from tests.test_autotopup_stripe import DOLLAR, save_card, turn_on
from tests.wallet_helpers import funded_wallet
from wallet import stripe_client
from wallet.autotopups import autotopup_run
from wallet.models import Account, AutoTopup, Entry, Topup
from wallet.reconcile import topup_reconcile, topups_due, topups_reconcile_due
from wallet.tasks import topup_reconcile as topup_reconcile_task

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Automatic top-ups handed to the queue; tests run them in-process."""
    ids: list[int] = []
    monkeypatch.setattr("wallet.autotopups.autotopup_queue", lambda *, account_id: ids.append(account_id))
    return ids


@pytest.fixture
def reconciles(monkeypatch) -> list[int]:
    """Reconcile tasks the sweep queued; tests run them in-process."""
    ids: list[int] = []
    monkeypatch.setattr("wallet.reconcile._queue", lambda *, topup_id: ids.append(topup_id))
    return ids


def age(topup: Topup, *, seconds: int = 3600) -> None:
    """Nothing has touched the top-up for a while (its webhook was lost)."""
    Topup.objects.filter(pk=topup.pk).update(updated_at=timezone.now() - dt.timedelta(seconds=seconds))


def processing_auto_topup(client, fake, alice) -> Topup:
    """An automatic top-up charged to a method that settles later: Stripe answered `processing`."""
    save_card(client, fake, card="processing")
    account = funded_wallet(alice, DOLLAR)
    turn_on(client, below="2", amount="10")
    assert autotopup_run(account_id=account.pk).endswith("the webhook finishes it")
    (topup,) = Topup.objects.filter(kind=Topup.Kind.AUTO)
    assert topup.status == Topup.Status.PENDING and fake.intent(topup.payment_intent_id)["status"] == "processing"
    return topup


def test_a_processing_charge_whose_success_webhook_was_lost_is_credited_once(
    fake, alice, alice_client, queued, reconciles, settings
):
    settings.AUTOTOPUP_RECONCILE_AFTER = 600
    topup = processing_auto_topup(alice_client, fake, alice)
    fake.settle(topup.payment_intent_id, succeeds=True)  # ... and payment_intent.succeeded never arrives

    assert topups_reconcile_due() == []  # not stale yet
    age(topup, seconds=601)
    assert topups_reconcile_due() == [topup.pk]
    assert topups_reconcile_due() == []  # claimed: the next sweeps wait another period
    assert not fake.calls("GET", "/v1/payment_intents/")  # the sweep itself never calls Stripe

    outcome = topup_reconcile_task.apply(args=[topup.pk]).get()  # the Celery task, run here

    assert outcome.startswith("reconciled:") and "credited" in outcome
    topup.refresh_from_db()
    assert topup.status == Topup.Status.PAID and topup.credited_at is not None
    assert topup.receipt_url  # fetched as after any credit
    assert Account.objects.get(user=alice).balance == 11 * DOLLAR
    # The webhook turns up after all, the task runs again, the sweep looks again: no second credit.
    late = post_event(alice_client, event("payment_intent.succeeded", fake.intent(topup.payment_intent_id)))
    assert "already credited" in late.json()["outcome"]
    assert "nothing to reconcile" in topup_reconcile(topup_id=topup.pk)
    age(topup)
    assert topups_reconcile_due() == []
    assert Entry.objects.filter(kind=Entry.Kind.TOPUP).count() == 1
    assert Account.objects.get(user=alice).balance == 11 * DOLLAR


def test_a_processing_charge_that_failed_pauses_and_emails_once(fake, alice, alice_client, queued, reconciles):
    topup = processing_auto_topup(alice_client, fake, alice)
    fake.settle(topup.payment_intent_id, succeeds=False)
    age(topup)
    assert topups_reconcile_due() == [topup.pk]

    outcome = topup_reconcile(topup_id=topup.pk)

    assert outcome == f"reconciled: top-up {topup.pk} requires_payment_method, paused"
    topup.refresh_from_db()
    assert topup.status == Topup.Status.FAILED and topup.credited_at is None
    setting = AutoTopup.objects.get()
    assert setting.paused and "The bank declined the debit." in setting.paused_reason
    (email,) = mail.outbox
    assert "paused" in email.subject and "The bank declined the debit." in email.body
    # The lost event arrives late; the task runs twice: one email, nothing credited.
    post_event(alice_client, event("payment_intent.payment_failed", fake.intent(topup.payment_intent_id)))
    assert "nothing to reconcile" in topup_reconcile(topup_id=topup.pk)
    assert len(mail.outbox) == 1
    assert Account.objects.get(user=alice).balance == DOLLAR


def test_a_charge_cancelled_at_stripe_ends_failed_with_the_reason(fake, alice, alice_client, queued, reconciles):
    topup = processing_auto_topup(alice_client, fake, alice)
    client = stripe_client._client()
    # Stripe refuses to cancel a processing PaymentIntent (https://docs.stripe.com/api/payment_intents/cancel).
    with pytest.raises(stripe.InvalidRequestError, match="status of processing"):
        client.v1.payment_intents.cancel(topup.payment_intent_id)
    fake.settle(topup.payment_intent_id, succeeds=False)
    client.v1.payment_intents.cancel(topup.payment_intent_id)  # an operator, in the Dashboard

    topup_reconcile(topup_id=topup.pk)

    topup.refresh_from_db()
    assert topup.status == Topup.Status.FAILED
    assert AutoTopup.objects.get().paused_reason.startswith("The payment was cancelled at Stripe")
    assert len(mail.outbox) == 1


def test_a_charge_still_processing_is_left_and_asked_about_again_later(fake, alice, alice_client, queued, reconciles):
    topup = processing_auto_topup(alice_client, fake, alice)
    age(topup)
    assert topups_reconcile_due() == [topup.pk]

    assert topup_reconcile(topup_id=topup.pk) == f"top-up {topup.pk}: still processing"

    topup.refresh_from_db()
    assert topup.status == Topup.Status.PENDING and not mail.outbox
    assert len(fake.calls("GET", f"/v1/payment_intents/{topup.payment_intent_id}")) == 1
    age(topup)
    assert topups_reconcile_due() == [topup.pk]  # due again after another period
    fake.settle(topup.payment_intent_id, succeeds=True)
    assert "credited" in topup_reconcile(topup_id=topup.pk)
    assert Account.objects.get(user=alice).balance == 11 * DOLLAR


def test_stripe_unreachable_leaves_the_top_up_for_the_next_sweep(fake, alice, alice_client, queued, reconciles):
    topup = processing_auto_topup(alice_client, fake, alice)
    fake.settle(topup.payment_intent_id, succeeds=True)
    fake.fail_next = 1 + stripe_client.MAX_NETWORK_RETRIES

    assert topup_reconcile(topup_id=topup.pk).endswith("Stripe unreachable; asked again later")

    topup.refresh_from_db()
    assert topup.status == Topup.Status.PENDING and not AutoTopup.objects.get().paused
    assert "credited" in topup_reconcile(topup_id=topup.pk)


def test_a_paid_checkout_whose_webhook_was_lost_is_credited_once(fake, alice, alice_client, reconciles):
    topup = open_topup(alice)
    session = fake.mark_paid(topup.checkout_session_id)  # the buyer never came back; no event
    age(topup)

    assert topups_reconcile_due() == [topup.pk]
    assert "credited" in topup_reconcile(topup_id=topup.pk)

    topup.refresh_from_db()
    assert topup.status == Topup.Status.PAID and topup.receipt_url
    late = post_event(alice_client, event("checkout.session.completed", session))
    assert "already credited" in late.json()["outcome"]
    assert Entry.objects.filter(kind=Entry.Kind.TOPUP).count() == 1
    assert Account.objects.get(user=alice).balance == 5 * DOLLAR


def test_an_open_checkout_is_left_and_an_expired_one_is_marked(fake, alice, reconciles):
    topup = open_topup(alice)
    age(topup)
    assert topups_reconcile_due() == [topup.pk]
    assert topup_reconcile(topup_id=topup.pk) == f"top-up {topup.pk}: still open/unpaid"
    topup.refresh_from_db()
    assert topup.status == Topup.Status.CREATED

    stripe_client.checkout_session_expire(session_id=topup.checkout_session_id, idempotency_key="expire-1")
    assert topup_reconcile(topup_id=topup.pk) == f"reconciled: top-up {topup.pk} expired unpaid"
    topup.refresh_from_db()
    assert topup.status == Topup.Status.EXPIRED
    # Checkouts past the time they could be paid are not looked at again and again.
    other = open_topup(alice)
    Topup.objects.filter(pk=other.pk).update(created_at=timezone.now() - dt.timedelta(days=2))
    age(other)
    assert topups_reconcile_due() == []


def test_a_bank_debit_checkout_is_followed_until_it_fails(fake, alice, reconciles):
    topup = open_topup(alice)
    session = fake.mark_unpaid(topup.checkout_session_id)  # completed, debit clearing; events lost

    assert topup_reconcile(topup_id=topup.pk) == f"reconciled: top-up {topup.pk} awaiting payment"
    topup.refresh_from_db()
    assert topup.status == Topup.Status.PENDING
    # Stripe refuses to cancel a Checkout Session's PaymentIntent: the session is expired instead.
    with pytest.raises(stripe.InvalidRequestError, match="Expire the Checkout Session"):
        stripe_client._client().v1.payment_intents.cancel(session["payment_intent"])
    fake.settle(session["payment_intent"], succeeds=False)

    assert topup_reconcile(topup_id=topup.pk).startswith(f"reconciled: top-up {topup.pk} payment failed")
    topup.refresh_from_db()
    assert topup.status == Topup.Status.FAILED and Entry.objects.filter(kind=Entry.Kind.TOPUP).count() == 0


def test_without_stripe_nothing_is_swept(db, alice, reconciles, settings):
    settings.STRIPE_SECRET_KEY = ""
    assert topups_reconcile_due() == [] and reconciles == []


def test_the_fake_retrieves_what_exists_and_refuses_unknown_ids(fake):
    with pytest.raises(stripe_client.StripeUnavailable, match="No such payment_intent"):
        stripe_client.payment_intent_retrieve(payment_intent_id="pi_missing")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe_client._client().v1.payment_intents.cancel("pi_missing")
    assert caught.value.code == "resource_missing"


def test_the_workers_background_loop_runs_the_reconcile_sweep(monkeypatch, settings):
    settings.CELERY_BEAT_SCHEDULE_SECONDS = 0
    swept = threading.Event()
    monkeypatch.setattr("wallet.reconcile.topups_reconcile_due", lambda: swept.set() or [])
    stop = threading.Event()
    loop = threading.Thread(target=heartbeat._loop, args=(f"test-{uuid.uuid4().hex}", stop))
    loop.start()
    try:
        assert swept.wait(10)
    finally:
        stop.set()
        loop.join(timeout=10)


def sweep_day(topup: Topup, *, hours: int, step_minutes: int = 5) -> list[int]:
    """Sweeps every few minutes over simulated time (timestamps moved, no sleeping): at each
    moment two workers sweep, and each top-up claimed is reconciled. Returns the minutes of the looks."""
    start = timezone.now() - dt.timedelta(days=2)
    Topup.objects.filter(pk=topup.pk).update(created_at=start, updated_at=start)
    looks: list[int] = []
    for minute in range(0, hours * 60 + 1, step_minutes):
        now = start + dt.timedelta(minutes=minute, seconds=1)
        claimed = topups_reconcile_due(now=now)
        assert topups_reconcile_due(now=now) == []  # the other worker's sweep: already claimed
        for pk in claimed:
            assert pk == topup.pk
            topup_reconcile(topup_id=pk)
            looks.append(minute)
    return looks


def assert_backs_off(looks: list[int], *, period_minutes: int, cap_minutes: int, step_minutes: int) -> None:
    """Each look comes as long after the last one as the top-up had waited by then (so the
    interval doubles with its age), at least one period, at most the cap (give or take a step)."""
    for last, look in itertools.pairwise([0, *looks]):
        interval = min(max(last, period_minutes), cap_minutes)
        assert interval <= look - last <= interval + step_minutes, (looks, last, look)
    gaps = [b - a for a, b in itertools.pairwise([0, *looks])]
    assert gaps == sorted(gaps) and max(gaps) >= cap_minutes


@pytest.mark.parametrize("cap_hours", [6, 2])
def test_an_abandoned_checkout_is_looked_up_at_growing_intervals(fake, alice, reconciles, settings, cap_hours):
    settings.AUTOTOPUP_RECONCILE_AFTER = 900
    settings.AUTOTOPUP_RECONCILE_MAX_INTERVAL = cap_hours * 3600
    topup = open_topup(alice)  # nobody pays, nobody comes back, no event

    looks = sweep_day(topup, hours=26)

    retrieves = fake.calls("GET", f"/v1/checkout/sessions/{topup.checkout_session_id}")
    assert len(retrieves) == len(looks)
    # Once a period it was ~100 lookups while a checkout can be paid (25 hours); now a handful.
    assert 6 <= len(looks) <= (10 if cap_hours == 6 else 16)
    assert_backs_off(looks, period_minutes=15, cap_minutes=cap_hours * 60, step_minutes=5)
    assert looks[-1] >= 20 * 60  # still watched late in its life, then no more (it can't be paid)
    topup.refresh_from_db()
    assert topup.status == Topup.Status.CREATED


def test_a_processing_charge_is_looked_up_at_growing_intervals_until_it_ends(
    fake, alice, alice_client, queued, reconciles, settings
):
    settings.AUTOTOPUP_RECONCILE_AFTER = 900
    topup = processing_auto_topup(alice_client, fake, alice)

    looks = sweep_day(topup, hours=30)

    assert len(fake.calls("GET", f"/v1/payment_intents/{topup.payment_intent_id}")) == len(looks)
    assert 6 <= len(looks) <= 11
    assert_backs_off(looks, period_minutes=15, cap_minutes=6 * 60, step_minutes=5)
    fake.settle(topup.payment_intent_id, succeeds=True)  # ... cleared at last; the event is lost
    later = timezone.now() + dt.timedelta(hours=7)
    assert topups_reconcile_due(now=later) == [topup.pk]
    assert "credited" in topup_reconcile(topup_id=topup.pk)
    assert topups_reconcile_due(now=later + dt.timedelta(days=1)) == []


def test_workers_sweeping_at_once_queue_one_task(fake, alice, reconciles):
    topup = open_topup(alice)
    age(topup)
    barrier = threading.Barrier(4)
    claimed: list[int] = []

    def sweep() -> None:
        try:
            barrier.wait()
            claimed.extend(topups_reconcile_due())
        finally:
            connection.close()

    workers = [threading.Thread(target=sweep) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert claimed == [topup.pk] and reconciles == [topup.pk]


def test_on_postgresql_the_sweeps_query_is_served_by_its_partial_index():
    """Every arm of the sweep's filter implies the index's condition, or PostgreSQL scans every
    top-up ever made, each minute on each worker (wallet/migrations/0013_topup_reconcile_index.py).

    On a test's near-empty table every index costs about the same, so the planner may pick
    another one: each index it picks instead is dropped (in a transaction rolled back after)
    until it takes the partial index, which it can only if the filter implies its condition,
    or falls back to scanning the table."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner")
    sql, params = topups_due(now=timezone.now()).values_list("pk", "updated_at")[:500].query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # an empty table: say what a large one would do
        for _ in range(10):
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            other = re.search(r"Index (?:Only )?Scan (?:using|on) (\w+)", plan)
            if other is None or other[1] == "topup_reconcile_waiting_idx":
                break
            cursor.execute("SELECT conname FROM pg_constraint WHERE conindid = %s::regclass", [other[1]])
            constraint = cursor.fetchone()
            if constraint:
                cursor.execute(f'ALTER TABLE wallet_topup DROP CONSTRAINT "{constraint[0]}" CASCADE')
            else:
                cursor.execute(f'DROP INDEX "{other[1]}"')
        transaction.set_rollback(True)
    assert "topup_reconcile_waiting_idx" in plan and "Seq Scan" not in plan, plan
