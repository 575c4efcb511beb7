"""Refunds and disputes take credits back: only the new part, down to zero, shortfalls recorded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.test import Client

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import balance, dispute, event, open_topup, post_event, stripe_settings
from wallet.errors import WalletFrozen
from wallet.models import Account, Entry, Shortfall, Topup
from wallet.services import wallet_for_user, wallet_hold, wallet_post

# django_db: the database is set up before any autouse fixture that reads it.
pytestmark = [pytest.mark.money, pytest.mark.django_db]

FIVE_DOLLARS = 10_000_000
PER_CENT = 20_000


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


@pytest.fixture
def credited(transactional_db, fake: FakeStripe, alice) -> tuple[Topup, dict]:
    """Alice paid $5 and the webhook credited it; returns the top-up and its charge."""
    topup = open_topup(alice, cents=500)
    session = fake.mark_paid(topup.checkout_session_id)
    assert post_event(Client(), event("checkout.session.completed", session)).status_code == 200
    assert balance(alice) == FIVE_DOLLARS
    topup.refresh_from_db()
    return topup, fake.charge_for(session["id"])


def spend(user, credits: int, key: str = "reply-1") -> None:
    hold = wallet_hold(account=wallet_for_user(user=user), amount=credits, idempotency_key=key)
    wallet_post(hold=hold, amount=credits)


def audit_clean() -> None:
    call_command("wallet", "audit")  # raises CommandError on any mismatch


def test_refund_after_spending_takes_the_rest_records_the_shortfall_and_freezes(
    credited, fake: FakeStripe, alice
) -> None:
    topup, charge = credited
    spend(alice, 3_000_000)

    response = post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 500)))

    assert response.status_code == 200
    assert "7000000 credits" in response.json()["outcome"]
    account = Account.objects.get(user=alice)
    assert (account.balance, account.held) == (0, 0)
    assert account.frozen
    (shortfall,) = Shortfall.objects.all()
    assert (shortfall.account_id, shortfall.amount) == (account.pk, 3_000_000)
    assert shortfall.reference == f"topup:{topup.pk}:refund:500"
    (refund,) = Entry.objects.filter(kind=Entry.Kind.REFUND)
    assert (refund.amount, refund.debit_account_id) == (7_000_000, account.pk)
    topup.refresh_from_db()
    assert (topup.status, topup.refunded_cents, topup.clawed_back_credits) == (
        Topup.Status.REFUNDED,
        500,
        FIVE_DOLLARS,
    )
    with pytest.raises(WalletFrozen):
        wallet_hold(account=account, amount=1, idempotency_key="after-freeze")
    audit_clean()


def test_partial_then_full_refund_takes_back_only_the_new_part(credited, fake: FakeStripe, alice) -> None:
    topup, charge = credited
    client = Client()

    partial = fake.refund(charge["id"], 200)
    post_event(client, event("charge.refunded", partial))
    assert balance(alice) == FIVE_DOLLARS - 200 * PER_CENT

    full = fake.refund(charge["id"], 300)
    post_event(client, event("charge.refunded", full))
    assert balance(alice) == 0

    assert list(Entry.objects.filter(kind=Entry.Kind.REFUND).order_by("pk").values_list("amount", flat=True)) == [
        200 * PER_CENT,
        300 * PER_CENT,
    ]
    assert not Shortfall.objects.exists()
    assert not Account.objects.get(user=alice).frozen
    topup.refresh_from_db()
    assert topup.status == Topup.Status.REFUNDED
    audit_clean()


def test_refund_events_out_of_order_or_repeated_take_back_once(credited, fake: FakeStripe, alice) -> None:
    _, charge = credited
    client = Client()
    partial = fake.refund(charge["id"], 200)
    full = fake.refund(charge["id"], 300)

    # The full refund's event arrives first; the partial one (cumulative 200) is then old news.
    post_event(client, event("charge.refunded", full))
    post_event(client, event("charge.refunded", partial))
    post_event(client, event("charge.refunded", full))  # a different event id, same refund state

    assert balance(alice) == 0
    assert Entry.objects.filter(kind=Entry.Kind.REFUND).count() == 1
    audit_clean()


def test_dispute_created_freezes_won_unfreezes(credited, fake: FakeStripe, alice) -> None:
    topup, charge = credited
    client = Client()

    post_event(client, event("charge.dispute.created", dispute(charge)))

    account = Account.objects.get(user=alice)
    assert account.frozen
    with pytest.raises(WalletFrozen):
        wallet_hold(account=account, amount=1, idempotency_key="during-dispute")
    topup.refresh_from_db()
    assert (topup.status, topup.dispute_status) == (Topup.Status.DISPUTED, "open")

    post_event(client, event("charge.dispute.closed", dispute(charge, status="won")))

    account.refresh_from_db()
    assert not account.frozen
    assert account.balance == FIVE_DOLLARS
    wallet_hold(account=account, amount=1, idempotency_key="after-win")
    topup.refresh_from_db()
    assert (topup.status, topup.dispute_status) == (Topup.Status.PAID, "won")
    audit_clean()


def test_dispute_lost_takes_back_and_keeps_the_wallet_frozen(credited, fake: FakeStripe, alice) -> None:
    topup, charge = credited
    client = Client()
    spend(alice, 1_000_000)
    post_event(client, event("charge.dispute.created", dispute(charge)))

    post_event(client, event("charge.dispute.closed", dispute(charge, status="lost")))
    post_event(client, event("charge.dispute.closed", dispute(charge, status="lost")))  # another delivery

    account = Account.objects.get(user=alice)
    assert account.balance == 0
    assert account.frozen
    assert Shortfall.objects.get().amount == 1_000_000
    assert Entry.objects.filter(kind=Entry.Kind.REFUND).get().amount == 9_000_000
    topup.refresh_from_db()
    assert (topup.status, topup.clawed_back_credits) == (Topup.Status.DISPUTE_LOST, FIVE_DOLLARS)
    audit_clean()


def test_dispute_closed_before_created_does_not_freeze_again(credited, fake: FakeStripe, alice) -> None:
    _, charge = credited
    client = Client()

    post_event(client, event("charge.dispute.closed", dispute(charge, status="won")))
    post_event(client, event("charge.dispute.created", dispute(charge)))

    assert not Account.objects.get(user=alice).frozen


def test_refund_then_lost_dispute_never_takes_more_than_the_topup(credited, fake: FakeStripe, alice) -> None:
    topup, charge = credited
    client = Client()
    post_event(client, event("charge.refunded", fake.refund(charge["id"], 300)))

    post_event(client, event("charge.dispute.closed", dispute(charge, status="lost")))

    assert balance(alice) == 0
    assert sum(Entry.objects.filter(kind=Entry.Kind.REFUND).values_list("amount", flat=True)) == FIVE_DOLLARS
    topup.refresh_from_db()
    assert topup.clawed_back_credits == FIVE_DOLLARS
    audit_clean()


def test_a_refund_of_another_users_topup_does_not_touch_this_wallet(credited, fake: FakeStripe, alice, bob) -> None:
    _, charge = credited
    bob_topup = open_topup(bob, cents=100)
    bob_session = fake.mark_paid(bob_topup.checkout_session_id)
    post_event(Client(), event("checkout.session.completed", bob_session))

    post_event(Client(), event("charge.refunded", fake.refund(fake.charge_for(bob_session["id"])["id"], 100)))

    assert balance(alice) == FIVE_DOLLARS
    assert balance(bob) == 0
    audit_clean()
