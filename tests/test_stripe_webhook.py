"""POST /api/v1/stripe/webhook: signatures, once-only events, fulfilment in any order."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import (
    WEBHOOK_URL,
    balance,
    entry_count,
    event,
    open_topup,
    post_event,
    sign,
    stripe_settings,
)
from wallet import stripe_client
from wallet.models import Entry, StripeEvent, Topup

# The database is set up before any autouse fixture that reads it.
pytestmark = pytest.mark.django_db

FIVE_DOLLARS = 10_000_000


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def paid_topup(fake: FakeStripe, user, cents: int = 500) -> tuple[Topup, dict]:
    topup = open_topup(user, cents=cents)
    return topup, fake.mark_paid(topup.checkout_session_id)


@pytest.mark.money
def test_completed_delivered_five_times_and_the_success_page_twice_credit_once(
    transactional_db, fake: FakeStripe, alice, client: Client
) -> None:
    topup, session = paid_topup(fake, alice)
    completed = event("checkout.session.completed", session)

    answers = [post_event(client, completed) for _ in range(5)]
    client.force_login(alice)
    pages = [client.get(f"/wallet/topup/{topup.pk}/done/?session_id={session['id']}") for _ in range(2)]

    assert [a.status_code for a in answers] == [200] * 5
    assert answers[0].json()["status"] == "processed"
    assert all(a.json()["duplicate"] for a in answers[1:])
    assert all(p.status_code == 200 and b"10,000,000 credits were added" in p.content for p in pages)
    assert balance(alice) == FIVE_DOLLARS
    (entry,) = Entry.objects.filter(kind=Entry.Kind.TOPUP)
    assert entry.idempotency_key == f"topup:{session['id']}"
    assert entry.reference == f"topup:{topup.pk}"
    topup.refresh_from_db()
    assert topup.status == Topup.Status.PAID
    assert topup.payment_intent_id == session["payment_intent"]
    charge = fake.charge_for(session["id"])
    assert (topup.charge_id, topup.receipt_url) == (charge["id"], charge["receipt_url"])
    assert StripeEvent.objects.get().status == StripeEvent.Status.PROCESSED


@pytest.mark.money
def test_concurrent_deliveries_credit_once(transactional_db, fake: FakeStripe, alice) -> None:
    topup, session = paid_topup(fake, alice)
    same = event("checkout.session.completed", session)
    # Stripe may also send distinct events for one payment (completed, then a late
    # async_payment_succeeded); they race the same way.
    others = [event("checkout.session.async_payment_succeeded", session) for _ in range(3)]
    bodies = [same] * 5 + others
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def deliver(body: dict) -> None:
        try:
            barrier.wait()
            statuses.append(post_event(Client(), body).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert statuses == [200] * len(bodies)
    assert balance(alice) == FIVE_DOLLARS
    assert Entry.objects.filter(kind=Entry.Kind.TOPUP).count() == 1
    assert StripeEvent.objects.count() == 4
    topup.refresh_from_db()
    assert topup.status == Topup.Status.PAID


@pytest.mark.money
@pytest.mark.parametrize(
    "case",
    ["forged", "stale", "malformed", "no_header", "unknown_type"],
)
def test_bad_or_unknown_events_leave_the_ledger_untouched(
    transactional_db, fake: FakeStripe, alice, client: Client, case: str
) -> None:
    topup, session = paid_topup(fake, alice)
    body = json.dumps(event("checkout.session.completed", session))
    before = (entry_count(), balance(alice))

    if case == "forged":
        response = post_event(client, body, secret="whsec_forged")
    elif case == "stale":
        response = post_event(client, body, timestamp=int(time.time()) - 301)
    elif case == "malformed":
        bad = body[:-10]
        response = client.post(WEBHOOK_URL, data=bad, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(bad))
    elif case == "no_header":
        response = client.post(WEBHOOK_URL, data=body, content_type="application/json")
    else:
        response = post_event(client, event("customer.created", {"id": "cus_1", "object": "customer"}))

    if case == "unknown_type":
        assert response.status_code == 200
        assert response.json()["status"] == "ignored"
        assert StripeEvent.objects.get().status == StripeEvent.Status.IGNORED
    else:
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_webhook"
        assert not StripeEvent.objects.exists()
    assert (entry_count(), balance(alice)) == before == (0, 0)
    topup.refresh_from_db()
    assert topup.status == Topup.Status.CREATED and topup.credited_at is None


def test_webhook_is_csrf_exempt_and_needs_no_login(fake: FakeStripe, alice) -> None:
    topup, session = paid_topup(fake, alice)
    client = Client(enforce_csrf_checks=True)

    response = post_event(client, event("checkout.session.completed", session))

    assert response.status_code == 200
    assert balance(alice) == FIVE_DOLLARS


def test_without_a_webhook_secret_the_endpoint_refuses(db, settings, client: Client) -> None:
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = post_event(client, event("checkout.session.completed", {"id": "cs_1"}))
    assert response.status_code == 503
    assert not StripeEvent.objects.exists()


def test_completed_but_unpaid_marks_pending_then_async_success_credits(fake: FakeStripe, alice, client) -> None:
    topup = open_topup(alice)
    unpaid = fake.mark_unpaid(topup.checkout_session_id)

    assert post_event(client, event("checkout.session.completed", unpaid)).status_code == 200
    topup.refresh_from_db()
    assert (topup.status, entry_count()) == (Topup.Status.PENDING, 0)

    paid = fake.mark_paid(topup.checkout_session_id)
    assert post_event(client, event("checkout.session.async_payment_succeeded", paid)).status_code == 200
    topup.refresh_from_db()
    assert topup.status == Topup.Status.PAID
    assert balance(alice) == FIVE_DOLLARS


def test_async_payment_failed_marks_failed_and_credits_nothing(fake: FakeStripe, alice, client) -> None:
    topup = open_topup(alice)
    unpaid = fake.mark_unpaid(topup.checkout_session_id)
    post_event(client, event("checkout.session.completed", unpaid))

    response = post_event(client, event("checkout.session.async_payment_failed", unpaid))

    assert response.status_code == 200
    topup.refresh_from_db()
    assert topup.status == Topup.Status.FAILED
    assert entry_count() == 0


def test_a_session_that_is_not_a_topup_is_ignored(db, fake: FakeStripe, client) -> None:
    foreign = {"id": "cs_test_elsewhere", "object": "checkout.session", "payment_status": "paid", "metadata": {}}
    response = post_event(client, event("checkout.session.completed", foreign))
    assert response.json()["status"] == "ignored"
    assert entry_count() == 0


def test_a_paid_amount_that_differs_from_the_topup_is_not_credited(fake: FakeStripe, alice, client) -> None:
    topup, session = paid_topup(fake, alice)
    session["amount_total"] = 100

    response = post_event(client, event("checkout.session.completed", session))

    assert response.status_code == 200
    assert response.json()["outcome"].startswith("rejected")
    assert entry_count() == 0


def test_a_session_id_never_stored_is_linked_through_its_metadata(fake: FakeStripe, alice, client) -> None:
    topup, session = paid_topup(fake, alice)
    # As if the process that opened the session stopped before saving its id.
    Topup.objects.filter(pk=topup.pk).update(checkout_session_id=None)

    post_event(client, event("checkout.session.completed", session))

    topup.refresh_from_db()
    assert topup.checkout_session_id == session["id"]
    assert balance(alice) == FIVE_DOLLARS


@pytest.mark.money
def test_a_refund_before_the_payment_is_kept_and_applied_after_it(transactional_db, fake: FakeStripe, alice) -> None:
    client = Client()
    topup, session = paid_topup(fake, alice)
    charge = fake.refund(fake.charge_for(session["id"])["id"], 200)
    t0 = int(time.time())

    early = post_event(client, event("charge.refunded", charge, created=t0 + 1))

    assert early.status_code == 200
    assert early.json()["status"] == "deferred"
    assert (entry_count(), balance(alice)) == (0, 0)
    kept = StripeEvent.objects.get(type="charge.refunded")
    assert kept.status == StripeEvent.Status.DEFERRED and kept.topup_id == topup.pk
    # A redelivery while it waits changes nothing.
    assert post_event(client, event("charge.refunded", charge, event_id=kept.event_id)).json()["duplicate"]

    post_event(client, event("checkout.session.completed", session, created=t0))

    kept.refresh_from_db()
    assert kept.status == StripeEvent.Status.PROCESSED
    assert balance(alice) == FIVE_DOLLARS - 4_000_000
    topup.refresh_from_db()
    assert (topup.status, topup.refunded_cents) == (Topup.Status.PARTIALLY_REFUNDED, 200)
    assert topup.receipt_url == charge["receipt_url"]


def test_a_refund_for_a_payment_that_is_not_a_topup_is_ignored(db, fake: FakeStripe, client) -> None:
    # A payment on the same Stripe account made by something else: no top-up metadata.
    other = stripe_client.checkout_session_create(
        amount_cents=300,
        credits=1,
        topup_id=0,
        user_id=0,
        email="",
        success_url="http://shop.example/",
        cancel_url="http://shop.example/",
        idempotency_key="elsewhere",
    )
    fake.sessions[other.id]["_payment_metadata"] = {}
    fake.mark_paid(other.id)

    response = post_event(client, event("charge.refunded", fake.refund(fake.charge_for(other.id)["id"], 300)))

    assert response.json()["status"] == "ignored"
    assert entry_count() == 0


def test_an_expired_session_marks_the_topup_expired_but_never_a_credited_one(fake: FakeStripe, alice, client) -> None:
    unpaid = open_topup(alice)
    topup, session = paid_topup(fake, alice)
    post_event(client, event("checkout.session.completed", session))

    post_event(client, event("checkout.session.expired", fake.session(unpaid.checkout_session_id)))
    post_event(client, event("checkout.session.expired", session))

    unpaid.refresh_from_db()
    topup.refresh_from_db()
    assert (unpaid.status, topup.status) == (Topup.Status.EXPIRED, Topup.Status.PAID)
    assert balance(alice) == FIVE_DOLLARS


@pytest.mark.money
def test_a_failure_while_handling_answers_500_and_the_redelivery_applies_it(
    transactional_db, fake: FakeStripe, alice, monkeypatch
) -> None:
    client = Client()
    topup, session = paid_topup(fake, alice)
    completed = event("checkout.session.completed", session)

    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr("wallet.stripe_events.topup_fulfil_session", broken)
    first = post_event(client, completed)
    monkeypatch.undo()
    second = post_event(client, completed)

    assert first.status_code == 500
    assert first.json()["error"]["code"] == "webhook_failed"
    assert second.status_code == 200 and second.json()["status"] == "processed"
    row = StripeEvent.objects.get()
    assert (row.status, row.attempts) == (StripeEvent.Status.PROCESSED, 2)
    assert balance(alice) == FIVE_DOLLARS


def test_the_services_do_not_import_the_event_engine_or_the_view() -> None:
    """topups -> stripe_events -> webhooks, one way: no module imports one that imports it."""
    import ast
    from pathlib import Path

    def imports(module: str) -> set[str]:
        tree = ast.parse((Path(__file__).resolve().parents[1] / f"{module.replace('.', '/')}.py").read_text())
        found = set()
        for node in ast.walk(tree):  # inside functions too: a lazy import is a cycle as well
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        return found

    assert not {"wallet.stripe_events", "wallet.webhooks"} & imports("wallet.topups")
    assert "wallet.webhooks" not in imports("wallet.stripe_events")
