"""Deleting an account scrubs the buyer's details from the Stripe events kept for it
(wallet/stripe_privacy.py): ids, amounts and statuses stay for the ledger, refunds and disputes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.core.management import call_command

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import dispute, event, open_topup, post_event, stripe_settings
from tests.test_autotopup_stripe import save_card
from wallet.models import Account, StripeEvent, Topup

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
ALICE = "alice@example.com"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def with_buyer(obj: dict, email: str) -> dict:
    """What Stripe adds about the buyer (https://docs.stripe.com/api/checkout/sessions/object,
    https://docs.stripe.com/api/charges/object): email, name, address, card."""
    name = email.split("@")[0].title() + " Liddell"
    details = {"email": email, "name": name, "phone": "+44 20 7946 0000", "address": {"line1": "1 Hall"}}
    return {
        **obj,
        "customer_email": email,
        "customer_details": details,
        "receipt_email": email,
        "billing_details": details,
        "payment_method_details": {
            "card": {"brand": "visa", "last4": "4242", "fingerprint": f"fp-{email.split('@')[0]}"}
        },
        "shipping": {"name": name, "address": {"line1": "1 Hall"}},
    }


def payloads(*, mentioning: str = "") -> list[dict]:
    rows = [row.payload for row in StripeEvent.objects.order_by("pk")]
    return [p for p in rows if mentioning in json.dumps(p)] if mentioning else rows


def paid_and_disputed(client, fake, user, email: str) -> tuple[Topup, dict]:
    topup = open_topup(user)
    session = fake.mark_paid(topup.checkout_session_id)
    post_event(client, event("checkout.session.completed", with_buyer(session, email)))
    charge = fake.refund(fake.charge_for(topup.checkout_session_id)["id"], 100)
    post_event(client, event("charge.refunded", with_buyer(charge, email)))
    case = dispute(charge, dispute_id=f"dp_{topup.pk}")
    name = email.split("@")[0].title() + " Liddell"
    case["evidence"] = {"customer_email_address": email, "customer_name": name, "billing_address": "1 Hall"}
    post_event(client, event("charge.dispute.created", case))
    return topup, charge


def test_deleting_an_account_scrubs_its_events_and_keeps_what_the_ledger_needs(fake, alice, bob, alice_client, client):
    card = save_card(alice_client, fake)  # a card set-up, its event naming the Stripe Customer
    post_event(client, event("checkout.session.completed", with_buyer(card, ALICE)))
    topup, charge = paid_and_disputed(client, fake, alice, ALICE)
    theirs, _ = paid_and_disputed(client, fake, bob, "bob@example.com")
    mentioned = len(payloads(mentioning=ALICE))
    assert mentioned == 4

    answer = alice_client.post("/accounts/profile/delete/", {"password": PASSWORD})

    assert answer.status_code == 302
    assert payloads(mentioning=ALICE) == [] and payloads(mentioning="Alice Liddell") == []
    assert payloads(mentioning="fp-alice") == [] and payloads(mentioning=card["customer"]) == []
    topup.refresh_from_db()
    scrubbed = [p for p in payloads() if p.get("panels_scrubbed")]
    assert len(scrubbed) == mentioned
    by_type = {p["type"]: p["data"]["object"] for p in scrubbed if p["data"]["object"].get("mode") != "setup"}
    session = by_type["checkout.session.completed"]
    assert (session["id"], session["amount_total"], session["currency"]) == (topup.checkout_session_id, 500, "usd")
    assert session["payment_intent"] == topup.payment_intent_id and session["metadata"]["topup_id"] == str(topup.pk)
    refunded = by_type["charge.refunded"]
    assert (refunded["id"], refunded["amount_refunded"], refunded["refunds"]["data"][0]["amount"]) == (
        charge["id"],
        100,
        100,
    )
    opened = by_type["charge.dispute.created"]
    assert (opened["id"], opened["amount"], opened["status"], opened["reason"]) == (
        f"dp_{topup.pk}",
        500,
        "needs_response",
        "fraudulent",
    )
    assert "evidence" not in opened
    # Bob's events are his own business, untouched.
    assert len(payloads(mentioning="bob@example.com")) == 3
    assert not any(p.get("panels_scrubbed") for p in payloads(mentioning=theirs.checkout_session_id))
    call_command("wallet", "audit")  # every balance still rebuilds from the entries


def test_an_event_arriving_after_the_deletion_is_handled_then_scrubbed(fake, alice, alice_client, client):
    topup = open_topup(alice)
    session = fake.mark_paid(topup.checkout_session_id)
    post_event(client, event("checkout.session.completed", session))
    alice_client.post("/accounts/profile/delete/", {"password": PASSWORD})

    charge = fake.refund(fake.charge_for(topup.checkout_session_id)["id"], 500)
    answer = post_event(client, event("charge.refunded", with_buyer(charge, ALICE)))

    assert answer.json()["status"] == "processed"
    topup.refresh_from_db()
    assert topup.status == Topup.Status.REFUNDED
    assert Account.objects.get(pk=topup.account_id).balance == 0
    (late,) = [p for p in payloads() if p["type"] == "charge.refunded"]
    assert late["panels_scrubbed"] and ALICE not in json.dumps(late)
    assert late["data"]["object"]["amount_refunded"] == 500


def test_a_scrubbed_deferred_event_still_applies(fake, alice, alice_client, client):
    """A refund that arrived before its top-up was credited waits with its payload; scrubbed, it still works."""
    topup = open_topup(alice)
    fake.mark_paid(topup.checkout_session_id)
    charge = fake.refund(fake.charge_for(topup.checkout_session_id)["id"], 200)
    waiting = post_event(client, event("charge.refunded", with_buyer(charge, ALICE)))
    assert waiting.json()["status"] == "deferred"
    from wallet.stripe_privacy import stripe_events_scrub

    assert stripe_events_scrub(user=alice) == 1

    call_command("stripe_reconcile")  # credits the paid session and replays the waiting refund

    topup.refresh_from_db()
    assert topup.credited_at is not None and topup.refunded_cents == 200
    assert ALICE not in json.dumps(payloads())
