"""Low-balance alerts (once per crossing, re-armed when the balance is back up) and an
emailed receipt for each top-up."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.management import call_command

from tests.wallet_helpers import funded_wallet
from wallet.alerts import balance_alerts_send, topup_receipt_send, wallet_emails_sweep
from wallet.models import BalanceAlert, Topup
from wallet.services import wallet_hold, wallet_post
from wallet.topups import topup_demo_pay

pytestmark = pytest.mark.django_db

DOLLAR = 2_000_000


def spend(account, amount: int, key: str) -> None:
    wallet_post(hold=wallet_hold(account=account, amount=amount, idempotency_key=key), amount=amount)


def test_the_wallet_page_sets_and_clears_the_threshold(alice_client, alice):
    funded_wallet(alice, 3 * DOLLAR)

    page = alice_client.post("/wallet/alerts/", {"threshold_usd": "2.50"}, follow=True).content.decode()

    assert BalanceAlert.objects.get(account=alice.wallet).threshold == 5_000_000
    assert "once when your available balance falls below $2.50" in page
    assert 'value="2.50"' in page
    refused = alice_client.post("/wallet/alerts/", {"threshold_usd": "2,50"}, follow=True).content.decode()
    assert "with a dot for cents" in refused
    assert BalanceAlert.objects.get(account=alice.wallet).threshold == 5_000_000
    alice_client.post("/wallet/alerts/", {"threshold_usd": ""})
    assert not BalanceAlert.objects.exists()


@pytest.mark.money
def test_one_email_per_crossing_rearmed_when_back_above(alice_client, alice, settings):
    settings.SITE_NAME = "Panels Test"
    account = funded_wallet(alice, 3 * DOLLAR)
    alice_client.post("/wallet/alerts/", {"threshold_usd": "2"})
    assert balance_alerts_send() == 0  # $3 available: above

    spend(account, int(1.5 * DOLLAR), "a")  # $1.50: below
    assert balance_alerts_send() == 1
    spend(account, DOLLAR // 10, "b")  # still below: no second email
    assert balance_alerts_send() == 0
    (message,) = mail.outbox
    assert message.to == ["alice@example.com"]
    assert message.subject == "[Panels Test] Your balance is below $2.00"
    assert "Hello from Panels Test!" in message.body
    assert "3,000,000 credits ($1.50)" in message.body and "/wallet/topup/" in message.body

    funded_wallet(alice, 2 * DOLLAR)  # back above: re-armed
    assert balance_alerts_send() == 0
    assert BalanceAlert.objects.get().armed
    spend(account, 2 * DOLLAR, "c")  # below again: a new crossing, a new email
    assert balance_alerts_send() == 1
    assert len(mail.outbox) == 2


def test_a_failed_send_is_tried_again(alice, settings, monkeypatch):
    from wallet import alerts

    account = funded_wallet(alice, DOLLAR)
    BalanceAlert.objects.create(account=account, threshold=2 * DOLLAR)

    def broken(**kwargs):
        raise OSError("SMTP down")

    monkeypatch.setattr(alerts, "_send", broken)
    assert balance_alerts_send() == 0
    assert BalanceAlert.objects.get().armed
    monkeypatch.undo()
    assert balance_alerts_send() == 1


@pytest.mark.money
def test_each_topup_gets_one_receipt(transactional_db, alice, alice_client, settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from panels.celery import app

    app.conf.task_always_eager = True
    try:
        alice_client.post("/wallet/topup/", {"amount_usd": "5"})
        topup = Topup.objects.get()
        topup_demo_pay(topup=topup)  # the task runs on commit (eagerly here)
        topup_demo_pay(topup=topup)  # paid again: no second credit, no second receipt
    finally:
        app.conf.task_always_eager = False
    (message,) = mail.outbox
    assert message.subject == "[Panels] Receipt: top-up of $5.00"
    assert "Credits added:  10,000,000" in message.body and "Paid:           $5.00" in message.body
    assert " UTC" in message.body
    topup.refresh_from_db()
    assert topup.receipt_emailed_at is not None
    assert topup_receipt_send(topup_id=topup.pk) is False
    assert wallet_emails_sweep() == {"alerts": 0, "receipts": 0}
    assert len(mail.outbox) == 1


def test_the_sweep_sends_a_receipt_whose_task_was_lost(alice, monkeypatch):
    from wallet import alerts

    monkeypatch.setattr(alerts, "topup_receipt_queue", lambda **kw: None)
    account = funded_wallet(alice, 0)
    topup = Topup.objects.create(
        user=alice, account=account, provider="demo", amount_cents=100, credits=DOLLAR, checkout_session_id="demo_x"
    )
    Topup.objects.filter(pk=topup.pk).update(credited_at=topup.created_at, status="paid")

    call_command("wallet", "emails")

    assert len(mail.outbox) == 1 and "Receipt: top-up of $1.00" in mail.outbox[0].subject
