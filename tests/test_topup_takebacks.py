"""Take-backs that reckon with credits held by replies in flight, at the rate the top-up
was sold at, and an operator's review that does not leave a wallet frozen for good.

Real stripe SDK against the local fake, signed webhooks, as tests/test_topup_clawbacks.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import balance, dispute, event, open_topup, post_event, stripe_settings
from wallet.models import Account, Entry, Hold, Shortfall, Takeback, Topup
from wallet.services import holds_expire, wallet_for_user, wallet_hold, wallet_post, wallet_void

pytestmark = [pytest.mark.money, pytest.mark.django_db]

FIVE_DOLLARS = 10_000_000


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def pay(fake: FakeStripe, user, cents: int = 500) -> tuple[Topup, dict]:
    topup = open_topup(user, cents=cents)
    session = fake.mark_paid(topup.checkout_session_id)
    assert post_event(Client(), event("checkout.session.completed", session)).status_code == 200
    topup.refresh_from_db()
    return topup, fake.charge_for(session["id"])


@pytest.fixture
def credited(transactional_db, fake: FakeStripe, alice) -> tuple[Topup, dict]:
    return pay(fake, alice)


def refunds() -> list[int]:
    return list(Entry.objects.filter(kind=Entry.Kind.REFUND).order_by("pk").values_list("amount", flat=True))


def audit_clean() -> None:
    call_command("wallet", "audit")


def test_a_refund_while_a_reply_holds_credits_waits_for_the_hold_instead_of_a_false_shortfall(
    credited, fake: FakeStripe, alice
) -> None:
    topup, charge = credited
    hold = wallet_hold(account=wallet_for_user(user=alice), amount=4_000_000, idempotency_key="reply-1")

    response = post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 500)))

    assert response.status_code == 200
    assert response.json()["outcome"] == (
        f"top-up {topup.pk}: took back 6000000 credits, 4000000 more as replies in flight settle"
    )
    account = Account.objects.get(user=alice)
    assert (account.balance, account.held, account.frozen) == (4_000_000, 4_000_000, False)
    assert not Shortfall.objects.exists()
    assert refunds() == [6_000_000]
    audit_clean()  # what is still owed is accounted for while the reply runs

    wallet_void(hold=hold, reason="provider failed")

    account.refresh_from_db()
    assert (account.balance, account.held, account.frozen) == (0, 0, False)
    assert refunds() == [6_000_000, 4_000_000]
    assert not Shortfall.objects.exists()
    owed = Takeback.objects.get()
    assert (owed.remaining, owed.shortfall, owed.resolved_at is not None) == (0, 0, True)
    topup.refresh_from_db()
    assert (topup.status, topup.clawed_back_credits) == (Topup.Status.REFUNDED, FIVE_DOLLARS)
    audit_clean()


def test_what_a_posted_hold_spent_becomes_the_shortfall_and_the_rest_is_taken(
    credited, fake: FakeStripe, alice
) -> None:
    _, charge = credited
    hold = wallet_hold(account=wallet_for_user(user=alice), amount=4_000_000, idempotency_key="reply-1")
    post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 500)))

    wallet_post(hold=hold, amount=1_000_000)

    account = Account.objects.get(user=alice)
    assert (account.balance, account.held) == (0, 0)
    assert refunds() == [6_000_000, 3_000_000]
    (shortfall,) = Shortfall.objects.all()
    assert shortfall.amount == 1_000_000
    assert account.frozen
    audit_clean()


def test_two_holds_one_posted_in_full_one_voided(credited, fake: FakeStripe, alice) -> None:
    _, charge = credited
    wallet = wallet_for_user(user=alice)
    first = wallet_hold(account=wallet, amount=3_000_000, idempotency_key="reply-1")
    second = wallet_hold(account=wallet, amount=2_000_000, idempotency_key="reply-2")
    post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 500)))
    assert refunds() == [5_000_000]

    wallet_post(hold=first, amount=3_000_000)  # all of it spent: known at once, not at the end

    assert Shortfall.objects.get().amount == 3_000_000
    assert Account.objects.get(user=alice).frozen
    wallet_void(hold=second)
    account = Account.objects.get(user=alice)
    assert (account.balance, account.held) == (0, 0)
    assert refunds() == [5_000_000, 2_000_000]
    assert sum(Shortfall.objects.values_list("amount", flat=True)) == 3_000_000
    audit_clean()


def test_a_hold_that_expires_pays_the_take_back_too(credited, fake: FakeStripe, alice) -> None:
    _, charge = credited
    wallet_hold(account=wallet_for_user(user=alice), amount=4_000_000, idempotency_key="reply-1")
    post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 200)))  # $2 of $5
    # $2 = 4,000,000 credits: all available (6,000,000), nothing deferred.
    assert refunds() == [4_000_000] and not Takeback.objects.exists()
    post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 300)))  # the other $3
    assert refunds() == [4_000_000, 2_000_000]
    assert Takeback.objects.get().remaining == 4_000_000

    assert holds_expire(now=timezone.now() + dt.timedelta(days=1)) == 1

    account = Account.objects.get(user=alice)
    assert (account.balance, account.held, account.frozen) == (0, 0, False)
    assert refunds() == [4_000_000, 2_000_000, 4_000_000]
    assert Hold.objects.get().status == Hold.Status.EXPIRED
    audit_clean()


def test_a_redelivered_refund_defers_nothing_twice(credited, fake: FakeStripe, alice) -> None:
    _, charge = credited
    wallet_hold(account=wallet_for_user(user=alice), amount=4_000_000, idempotency_key="reply-1")
    refunded = fake.refund(charge["id"], 500)

    post_event(Client(), event("charge.refunded", refunded))
    post_event(Client(), event("charge.refunded", refunded))  # another event id, same refund state

    assert Takeback.objects.count() == 1 and refunds() == [6_000_000]
    audit_clean()


def test_take_backs_use_the_rate_the_topup_was_sold_at(credited, fake: FakeStripe, alice, settings) -> None:
    topup, charge = credited
    assert topup.credits == FIVE_DOLLARS  # sold at 2,000,000 credits per dollar
    settings.CREDITS_PER_USD = 1_000_000  # the operator halves the rate later

    post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 200)))
    assert refunds() == [4_000_000]  # $2 of it, at the rate it was bought at
    post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 300)))

    assert refunds() == [4_000_000, 6_000_000]
    assert balance(alice) == 0
    audit_clean()


def test_a_lost_dispute_takes_back_at_the_rate_sold_too(credited, fake: FakeStripe, alice, settings) -> None:
    _, charge = credited
    settings.CREDITS_PER_USD = 4_000_000  # doubling the rate must not take back more than was sold

    post_event(Client(), event("charge.dispute.closed", dispute(charge, status="lost")))

    assert refunds() == [FIVE_DOLLARS]
    assert not Shortfall.objects.exists()


def admin_client() -> Client:
    ops = get_user_model().objects.create_superuser(username="ops", email="ops@example.com", password="x")
    client = Client()
    client.force_login(ops)
    return client


def test_after_the_operator_resolves_a_shortfall_a_later_won_dispute_unfreezes(
    credited, fake: FakeStripe, alice
) -> None:
    _, charge = credited
    spend = wallet_hold(account=wallet_for_user(user=alice), amount=3_000_000, idempotency_key="reply-1")
    wallet_post(hold=spend, amount=3_000_000)
    post_event(Client(), event("charge.refunded", fake.refund(charge["id"], 500)))
    account = Account.objects.get(user=alice)
    assert account.frozen and Shortfall.objects.get().resolved_at is None

    ops = admin_client()
    response = ops.post(f"/admin/wallet/account/{account.pk}/unfreeze/")

    assert response.status_code == 302
    shortfall = Shortfall.objects.get()
    assert shortfall.resolved_at is not None and shortfall.resolution == "resolved by ops"
    assert not Account.objects.get(user=alice).frozen

    # A later top-up is disputed, then the dispute is won: its freeze is lifted.
    _, second = pay(fake, alice, cents=100)
    post_event(Client(), event("charge.dispute.created", dispute(second, dispute_id="dp_2")))
    assert Account.objects.get(user=alice).frozen
    post_event(Client(), event("charge.dispute.closed", dispute(second, status="won", dispute_id="dp_2")))

    assert not Account.objects.get(user=alice).frozen
    audit_clean()


def test_after_the_operator_reviews_a_lost_dispute_a_later_won_dispute_unfreezes(
    credited, fake: FakeStripe, alice
) -> None:
    topup, charge = credited
    post_event(Client(), event("charge.dispute.closed", dispute(charge, status="lost")))
    account = Account.objects.get(user=alice)
    assert account.frozen

    admin_client().post(f"/admin/wallet/account/{account.pk}/unfreeze/")
    topup.refresh_from_db()
    assert topup.dispute_reviewed_at is not None
    _, second = pay(fake, alice, cents=100)
    post_event(Client(), event("charge.dispute.created", dispute(second, dispute_id="dp_2")))
    post_event(Client(), event("charge.dispute.closed", dispute(second, status="won", dispute_id="dp_2")))

    assert not Account.objects.get(user=alice).frozen


def test_staff_without_superuser_cannot_unfreeze(credited, fake: FakeStripe, alice) -> None:
    _, charge = credited
    post_event(Client(), event("charge.dispute.created", dispute(charge)))
    account = Account.objects.get(user=alice)
    staff = get_user_model().objects.create_user(username="s", email="s@example.com", password="x", is_staff=True)
    client = Client()
    client.force_login(staff)

    client.post(f"/admin/wallet/account/{account.pk}/unfreeze/")

    assert Account.objects.get(user=alice).frozen
