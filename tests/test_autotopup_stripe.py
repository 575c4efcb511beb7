"""Automatic top-ups through the real stripe SDK, over HTTP, against the local fake of Stripe:
saving a card (setup-mode Checkout), off-session charges credited once, declines and
authentication_required pausing the feature with one email, retries with the same key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import stripe
from django.core import mail
from django.test import Client

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import event, post_event, stripe_settings
from tests.wallet_helpers import funded_wallet
from wallet import stripe_client
from wallet.alerts import topup_receipt_send
from wallet.autotopups import (
    autotopup_charge,
    autotopup_run,
    autotopup_start,
    autotopups_sweep,
    charge_idempotency_key,
)
from wallet.models import Account, AutoTopup, Entry, Topup

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

DOLLAR = 2_000_000


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


def save_card(client: Client, fake: FakeStripe, card: str = "visa") -> dict:
    """Through the wallet page: open the setup-mode checkout, save the card there, come back."""
    started = client.post("/wallet/auto-topup/card/")
    assert started.status_code == 302 and started["Location"].startswith("https://checkout.stripe.com/")
    session_id = started["Location"].rsplit("/", 1)[1]
    session = fake.complete_setup(session_id, card=card)
    back = client.get(f"/wallet/auto-topup/card/done/?session_id={session_id}", follow=True)
    assert back.status_code == 200
    return session


def turn_on(client: Client, *, below: str = "2", amount: str = "10") -> None:
    client.post("/wallet/auto-topup/", {"enabled": "on", "threshold_usd": below, "amount_usd": amount})


def auto_topups() -> list[Topup]:
    return list(Topup.objects.filter(kind=Topup.Kind.AUTO).order_by("pk"))


def test_saving_a_card_uses_setup_mode_checkout_and_the_webhook_and_return_page_agree(
    fake, alice, alice_client, queued
):
    started = alice_client.post("/wallet/auto-topup/card/")
    session_id = started["Location"].rsplit("/", 1)[1]
    (create,) = fake.calls("POST", "/v1/checkout/sessions")
    assert create["form"]["mode"] == "setup" and create["form"]["currency"] == "usd"
    (customer,) = fake.calls("POST", "/v1/customers")
    assert create["form"]["customer"] == fake.session(session_id)["customer"]
    assert customer["idempotency_key"].startswith(f"panels-customer-{alice.wallet.pk}-")
    assert "line_items" not in create["form"] and "payment_intent_data" not in create["form"]

    session = fake.complete_setup(session_id)
    first = post_event(alice_client, event("checkout.session.completed", session))
    again = post_event(alice_client, event("checkout.session.completed", session))
    page = alice_client.get(f"/wallet/auto-topup/card/done/?session_id={session_id}", follow=True)

    assert first.json()["status"] == "processed"
    assert again.json()["status"] == "ignored"  # a new event id, nothing left to do
    setting = AutoTopup.objects.get()
    method = fake.payment_method(setting.payment_method_id)
    assert (setting.card_brand, setting.card_last4) == ("visa", "4242")
    assert method["customer"] == setting.customer_id
    assert "Card saved: visa ending 4242" in page.content.decode()
    # A second set-up reuses the customer: one Customer per wallet.
    alice_client.post("/wallet/auto-topup/card/")
    assert len(fake.calls("POST", "/v1/customers")) == 1


def test_a_charge_below_the_threshold_credits_once_whatever_repeats(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)  # $1, below $2
    turn_on(alice_client, below="2", amount="10")
    assert queued == [account.pk]  # turning it on below the threshold queues the first top-up

    outcome = autotopup_run(account_id=account.pk)

    (topup,) = auto_topups()
    assert "credited" in outcome
    assert topup.status == Topup.Status.PAID and topup.amount_cents == 1000
    (call,) = fake.calls("POST", "/v1/payment_intents")
    form = call["form"]
    setting = AutoTopup.objects.get()
    assert (form["off_session"], form["confirm"], form["amount"]) == ("true", "true", "1000")
    assert (form["customer"], form["payment_method"]) == (setting.customer_id, setting.payment_method_id)
    assert call["idempotency_key"] == charge_idempotency_key(topup)
    assert form["metadata"]["topup_id"] == str(topup.pk) and form["metadata"]["kind"] == "auto"
    intent = fake.intent(topup.payment_intent_id)
    assert intent["status"] == "succeeded"
    assert topup.receipt_url == fake.charges[intent["latest_charge"]]["receipt_url"]

    # The webhook for the same payment, the task run again, the sweep: no second credit.
    answer = post_event(alice_client, event("payment_intent.succeeded", intent))
    assert answer.json()["status"] == "processed" and "already credited" in answer.json()["outcome"]
    assert autotopup_charge(topup_id=topup.pk).endswith("paid")
    assert autotopup_run(account_id=account.pk) == "nothing due"  # $11 now, above $2
    autotopups_sweep()

    assert len(fake.calls("POST", "/v1/payment_intents")) == 1
    assert Entry.objects.filter(kind=Entry.Kind.TOPUP).count() == 1
    assert Account.objects.get(pk=account.pk).balance == 11 * DOLLAR
    assert AutoTopup.objects.get().last_attempt_id == topup.pk


def test_a_retried_task_sends_the_same_key_and_stripe_charges_once(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)
    topup = autotopup_start(account_id=account.pk)
    setting = AutoTopup.objects.get()
    # The first run reached Stripe, which charged, and died before it heard the answer.
    lost = stripe_client.payment_intent_off_session(
        amount_cents=topup.amount_cents,
        customer_id=setting.customer_id,
        payment_method_id=setting.payment_method_id,
        metadata={"topup_id": str(topup.pk), "user_id": str(alice.pk), "credits": str(topup.credits), "kind": "auto"},
        description=f"Panels automatic top-up: {topup.credits:,} credits",
        idempotency_key=charge_idempotency_key(topup),
    )

    assert autotopup_start(account_id=account.pk) == topup  # the redelivered task finds its attempt
    autotopup_charge(topup_id=topup.pk)

    calls = fake.calls("POST", "/v1/payment_intents")
    assert len(calls) == 2 and {c["idempotency_key"] for c in calls} == {charge_idempotency_key(topup)}
    assert len(fake.payment_intents) == 1
    topup.refresh_from_db()
    assert topup.payment_intent_id == lost.payment_intent_id and topup.status == Topup.Status.PAID
    assert Account.objects.get(pk=account.pk).balance == 11 * DOLLAR


def test_the_webhook_may_credit_before_the_answer_arrives(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)
    topup = autotopup_start(account_id=account.pk)
    setting = AutoTopup.objects.get()
    charge = stripe_client.payment_intent_off_session(
        amount_cents=topup.amount_cents,
        customer_id=setting.customer_id,
        payment_method_id=setting.payment_method_id,
        metadata={"topup_id": str(topup.pk), "user_id": str(alice.pk), "credits": str(topup.credits), "kind": "auto"},
        description=f"Panels automatic top-up: {topup.credits:,} credits",
        idempotency_key=charge_idempotency_key(topup),
    )

    answer = post_event(alice_client, event("payment_intent.succeeded", fake.intent(charge.payment_intent_id)))
    autotopup_charge(topup_id=topup.pk)  # the task's own answer comes second

    assert answer.json()["status"] == "processed" and "credited" in answer.json()["outcome"]
    assert Entry.objects.filter(kind=Entry.Kind.TOPUP).count() == 1
    assert Account.objects.get(pk=account.pk).balance == 11 * DOLLAR


@pytest.mark.parametrize(
    ("card", "says"),
    [("declines", "The card was declined"), ("authentication_required", "Your bank asked to confirm the payment")],
)
def test_a_failed_charge_pauses_emails_once_and_credits_nothing(fake, alice, alice_client, queued, card, says):
    save_card(alice_client, fake, card=card)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)

    autotopup_run(account_id=account.pk)

    (topup,) = auto_topups()
    assert topup.status == Topup.Status.FAILED and topup.credited_at is None
    intent = fake.intent(topup.payment_intent_id)
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["code"] == ("card_declined" if card == "declines" else card)
    setting = AutoTopup.objects.get()
    assert setting.paused and setting.paused_reason.startswith(says)
    (email,) = mail.outbox
    assert email.to == ["alice@example.com"] and "paused" in email.subject
    assert says in email.body and "/wallet/#auto-topup" in email.body

    # The failure event, a new trigger and the sweep: no second email, no second charge.
    post_event(alice_client, event("payment_intent.payment_failed", intent))
    assert autotopup_run(account_id=account.pk) == "nothing due"
    autotopups_sweep()
    assert len(mail.outbox) == 1
    assert len(fake.calls("POST", "/v1/payment_intents")) == 1
    assert Account.objects.get(pk=account.pk).balance == DOLLAR
    page = alice_client.get("/wallet/").content.decode()
    assert "Automatic top-up is paused" in page and says in page

    # A working card replaces it: the pause is lifted and the old card detached.
    old = setting.payment_method_id
    save_card(alice_client, fake, card="visa")
    assert not AutoTopup.objects.get().paused
    assert fake.payment_method(old)["customer"] is None
    autotopup_run(account_id=account.pk)
    assert Account.objects.get(pk=account.pk).balance == 11 * DOLLAR


def test_at_most_the_daily_number_then_paused(fake, alice, alice_client, queued, settings):
    settings.AUTOTOPUP_MAX_PER_DAY = 1
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client, below="30", amount="10")  # $10 never lifts it above $30

    autotopup_run(account_id=account.pk)
    assert autotopup_run(account_id=account.pk) == "nothing due"

    assert len(auto_topups()) == 1
    setting = AutoTopup.objects.get()
    assert setting.paused and "1 automatic top-ups in 24 hours" in setting.paused_reason
    assert len(mail.outbox) == 1


def test_removing_the_card_detaches_it_and_stops_charges(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    method = AutoTopup.objects.get().payment_method_id
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)

    alice_client.post("/wallet/auto-topup/card/remove/")

    setting = AutoTopup.objects.get()
    assert not setting.enabled and not setting.has_card
    assert fake.payment_method(method)["customer"] is None
    assert autotopup_run(account_id=account.pk) == "nothing due"
    assert not fake.calls("POST", "/v1/payment_intents")


def test_deleting_the_account_forgets_the_card(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    method = AutoTopup.objects.get().payment_method_id

    alice_client.post("/accounts/profile/delete/", {"password": "correct horse battery staple"})

    assert not AutoTopup.objects.exists()
    assert fake.payment_method(method)["customer"] is None


def test_a_frozen_wallet_is_not_charged(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)
    Account.objects.filter(pk=account.pk).update(frozen_reason="a disputed payment")

    assert autotopup_run(account_id=account.pk) == "nothing due"
    assert not auto_topups() and not fake.calls("POST", "/v1/payment_intents")


def test_the_fake_refuses_what_stripe_refuses(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    setting = AutoTopup.objects.get()
    client = stripe_client._client()
    base = {"amount": 1000, "currency": "usd", "customer": setting.customer_id}
    base["payment_method"] = setting.payment_method_id

    with pytest.raises(stripe.InvalidRequestError, match="off_session can only be used with confirm"):
        client.v1.payment_intents.create({**base, "off_session": True})
    client.v1.payment_intents.create({**base, "confirm": True, "off_session": True}, {"idempotency_key": "k1"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create({**base, "amount": 2000, "confirm": True}, {"idempotency_key": "k1"})
    with pytest.raises(stripe.InvalidRequestError, match="currency"):
        client.v1.checkout.sessions.create({"mode": "setup", "success_url": "https://x/"})
    client.v1.payment_methods.detach(setting.payment_method_id)
    with pytest.raises(stripe.InvalidRequestError, match="may not be used again"):
        client.v1.payment_intents.create({**base, "confirm": True, "off_session": True})


def test_an_automatic_top_up_is_refunded_and_receipted_like_any_other(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)
    autotopup_run(account_id=account.pk)
    (topup,) = auto_topups()

    assert topup_receipt_send(topup_id=topup.pk)
    charge = fake.refund(topup.charge_id, 1000)
    answer = post_event(alice_client, event("charge.refunded", charge))

    (receipt,) = mail.outbox
    assert "$10.00" in receipt.body and topup.receipt_url in receipt.body
    assert answer.json()["status"] == "processed"
    topup.refresh_from_db()
    assert topup.status == Topup.Status.REFUNDED
    assert Account.objects.get(pk=account.pk).balance == DOLLAR


def test_a_checkout_top_ups_intent_event_is_left_to_its_session(fake, alice, alice_client, queued):
    from tests.stripe_helpers import open_topup

    topup = open_topup(alice)
    session = fake.mark_paid(topup.checkout_session_id)

    answer = post_event(alice_client, event("payment_intent.succeeded", fake.intent(session["payment_intent"])))

    assert answer.json()["status"] == "ignored"
    assert not Entry.objects.filter(kind=Entry.Kind.TOPUP).exists()


def test_stripe_unreachable_fails_the_attempt_and_pauses_once(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)
    fake.fail_next = 1 + stripe_client.MAX_NETWORK_RETRIES  # every try answered 500

    autotopup_run(account_id=account.pk)

    (topup,) = auto_topups()
    assert topup.status == Topup.Status.FAILED
    calls = fake.calls("POST", "/v1/payment_intents")
    assert len(calls) == 3 and {c["idempotency_key"] for c in calls} == {charge_idempotency_key(topup)}
    setting = AutoTopup.objects.get()
    assert setting.paused and "Stripe could not charge the card" in setting.paused_reason
    assert len(mail.outbox) == 1 and Account.objects.get(pk=account.pk).balance == DOLLAR


def test_the_sweep_charges_an_attempt_whose_task_was_lost_with_its_own_key(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)
    topup = autotopup_start(account_id=account.pk)  # recorded; then the worker died
    Topup.objects.filter(pk=topup.pk).update(created_at=topup.created_at - dt.timedelta(minutes=5))
    topup.refresh_from_db()

    queued.clear()
    result = autotopups_sweep()
    assert result["retried"] == 1 and queued == [account.pk]
    assert not fake.calls("POST", "/v1/payment_intents")  # not from the sweep's own thread
    autotopup_run(account_id=account.pk)

    (call,) = fake.calls("POST", "/v1/payment_intents")
    assert call["idempotency_key"] == charge_idempotency_key(topup)
    topup.refresh_from_db()
    assert topup.status == Topup.Status.PAID
    assert Account.objects.get(pk=account.pk).balance == 11 * DOLLAR


def test_a_late_event_for_an_older_card_set_up_changes_nothing(fake, alice, alice_client, queued):
    older = alice_client.post("/wallet/auto-topup/card/")["Location"].rsplit("/", 1)[1]
    save_card(alice_client, fake, card="visa")
    saved = AutoTopup.objects.get().payment_method_id

    answer = post_event(alice_client, event("checkout.session.completed", fake.complete_setup(older, "declines")))

    assert answer.json()["status"] == "ignored"
    assert AutoTopup.objects.get().payment_method_id == saved


def test_the_wallet_page_says_when_there_is_no_way_to_save_a_card(alice_client, settings):
    settings.DEMO_ALLOWED = False  # as in production, with no Stripe keys
    page = alice_client.get("/wallet/").content.decode()
    assert "no payment provider configured" in page
    assert 'name="demo_card"' not in page


def test_an_attempt_recorded_before_the_card_was_removed_ends_without_a_charge(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    account = funded_wallet(alice, DOLLAR)
    turn_on(alice_client)
    topup = autotopup_start(account_id=account.pk)
    alice_client.post("/wallet/auto-topup/card/remove/")

    assert autotopup_run(account_id=account.pk).endswith("before it was charged")

    topup.refresh_from_db()
    assert topup.status == Topup.Status.FAILED
    assert not fake.calls("POST", "/v1/payment_intents")
    save_card(alice_client, fake)  # a new card and on again: a new attempt, not the old one
    turn_on(alice_client)
    autotopup_run(account_id=account.pk)
    assert [t.status for t in auto_topups()] == [Topup.Status.FAILED, Topup.Status.PAID]
