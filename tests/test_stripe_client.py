"""wallet/stripe_client.py: the real stripe SDK against the local fake over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import event, sign, stripe_settings
from wallet import stripe_client


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def create(
    fake: FakeStripe, *, key: str = "panels-topup-7-1-checkout", cents: int = 500
) -> stripe_client.CheckoutSession:
    return stripe_client.checkout_session_create(
        amount_cents=cents,
        credits=cents * 20_000,
        topup_id=7,
        user_id=3,
        email="alice@example.com",
        success_url="http://testserver/wallet/topup/7/done/?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="http://testserver/wallet/topup/?cancelled=7",
        idempotency_key=key,
    )


def test_create_sends_a_payment_session_with_metadata_and_the_idempotency_key(fake: FakeStripe) -> None:
    session = create(fake)

    assert session.id.startswith("cs_test_")
    assert session.url.startswith("https://checkout.stripe.com/")
    assert (session.payment_status, session.status, session.amount_total) == ("unpaid", "open", 500)
    assert session.metadata == {"topup_id": "7", "user_id": "3", "credits": "10000000"}
    (call,) = fake.calls("POST", "/v1/checkout/sessions")
    assert call["idempotency_key"] == "panels-topup-7-1-checkout"
    form = call["form"]
    assert form["mode"] == "payment"
    assert form["client_reference_id"] == "3"
    assert form["line_items"][0]["price_data"]["unit_amount"] == "500"
    assert form["line_items"][0]["price_data"]["currency"] == "usd"
    assert form["payment_intent_data"]["metadata"]["topup_id"] == "7"
    assert form["success_url"].endswith("?session_id={CHECKOUT_SESSION_ID}")


def test_a_repeated_idempotency_key_returns_the_same_session(fake: FakeStripe) -> None:
    first = create(fake)
    again = create(fake)
    other = create(fake, key="panels-topup-8-1-checkout")

    assert again.id == first.id
    assert other.id != first.id
    assert len(fake.sessions) == 2


def test_retrieve_reflects_payment(fake: FakeStripe) -> None:
    session = create(fake)
    assert stripe_client.checkout_session_retrieve(session_id=session.id).payment_status == "unpaid"

    fake.mark_paid(session.id)
    paid = stripe_client.checkout_session_retrieve(session_id=session.id)

    assert (paid.payment_status, paid.status) == ("paid", "complete")
    assert paid.payment_intent_id.startswith("pi_test_")


def test_payment_info_expands_the_charge_for_its_receipt(fake: FakeStripe) -> None:
    session = create(fake)
    fake.mark_paid(session.id)
    intent = fake.session(session.id)["payment_intent"]

    info = stripe_client.payment_info(payment_intent_id=intent)

    charge = fake.charge_for(session.id)
    assert info.charge_id == charge["id"]
    assert info.receipt_url == charge["receipt_url"]
    assert info.metadata["topup_id"] == "7"
    (call,) = fake.calls("GET", "/v1/payment_intents/")
    assert call["query"]["expand"] == ["latest_charge"]


def test_sessions_since_pages_through_the_list_with_a_created_filter(fake: FakeStripe) -> None:
    old = create(fake, key="k-old")
    fake.set_created(old.id, int(time.time()) - 10 * 86400)
    recent = [create(fake, key=f"k-{i}").id for i in range(3)]

    found = [s.id for s in stripe_client.checkout_sessions_since(created_gte=int(time.time()) - 86400)]

    assert sorted(found) == sorted(recent)
    assert fake.calls("GET", "/v1/checkout/sessions")[0]["query"]["created"]["gte"].isdigit()


def test_a_missing_session_and_an_outage_raise_stripe_unavailable(fake: FakeStripe) -> None:
    with pytest.raises(stripe_client.StripeUnavailable):
        stripe_client.checkout_session_retrieve(session_id="cs_test_nope")

    fake.fail_next = stripe_client.MAX_NETWORK_RETRIES + 1
    with pytest.raises(stripe_client.StripeUnavailable):
        create(fake)


def test_the_sdk_retries_a_5xx_with_the_same_idempotency_key(fake: FakeStripe) -> None:
    fake.fail_next = 1

    session = create(fake)

    calls = fake.calls("POST", "/v1/checkout/sessions")
    assert len(calls) == 2
    assert calls[0]["idempotency_key"] == calls[1]["idempotency_key"]
    assert list(fake.sessions) == [session.id]


def test_without_a_secret_key_nothing_is_called(settings) -> None:
    settings.STRIPE_SECRET_KEY = ""
    assert not stripe_client.stripe_enabled()
    with pytest.raises(stripe_client.StripeUnavailable):
        stripe_client.checkout_session_retrieve(session_id="cs_test_1")


def test_event_construct_checks_the_signature_and_its_age(settings) -> None:
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test"
    body = json.dumps(event("checkout.session.completed", {"id": "cs_test_1", "object": "checkout.session"}))

    assert stripe_client.event_construct(payload=body.encode(), signature=sign(body))["type"] == (
        "checkout.session.completed"
    )
    for bad in (
        sign(body, secret="whsec_other"),
        sign(body, timestamp=int(time.time()) - 301),
        "",
        "garbage",
    ):
        with pytest.raises(stripe_client.WebhookInvalid):
            stripe_client.event_construct(payload=body.encode(), signature=bad)
    for malformed in ("not json", "[1, 2]", json.dumps({"id": "evt_1"})):
        with pytest.raises(stripe_client.WebhookInvalid):
            stripe_client.event_construct(payload=malformed.encode(), signature=sign(malformed))
