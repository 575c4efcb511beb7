"""A checkout the buyer left, or never finished, says so: cancelled or expired, never
"Awaiting payment · pay" for ever; the checkout can't be paid afterwards."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import balance, entry_count, event, post_event, stripe_settings
from wallet.models import Topup

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_throttle(db) -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def _topup_row(html: str, topup: Topup) -> str:
    start = html.index(f'id="topup-{topup.pk}"')
    return html[start : html.index("</tr>", start)]


def test_demo_cancel_marks_the_topup_cancelled_and_it_cannot_be_paid(alice_client: Client, alice) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()

    back = alice_client.get(f"/wallet/topup/?cancelled={topup.pk}")

    assert b"Top-up of $5.00 cancelled. Nothing was charged." in back.content
    topup.refresh_from_db()
    assert topup.status == Topup.Status.CANCELLED
    row = _topup_row(alice_client.get("/wallet/").content.decode(), topup)
    assert "Cancelled (not paid)" in row and "pay</a>" not in row
    paid = alice_client.post(f"/wallet/topup/{topup.pk}/pay/", follow=True)
    assert paid.redirect_chain[-1][0] == f"/wallet/topup/{topup.pk}/done/"
    assert b"Top-up cancelled" in paid.content
    assert entry_count() == 0 and balance(alice) == 0


@pytest.mark.money
def test_stripe_cancel_expires_the_session_at_stripe(fake: FakeStripe, alice_client: Client, alice) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()

    alice_client.get(f"/wallet/topup/?cancelled={topup.pk}")
    alice_client.get(f"/wallet/topup/?cancelled={topup.pk}")  # a reload changes nothing

    topup.refresh_from_db()
    assert topup.status == Topup.Status.CANCELLED
    assert fake.session(topup.checkout_session_id)["status"] == "expired"
    (call,) = fake.calls("POST", f"/v1/checkout/sessions/{topup.checkout_session_id}/expire")
    assert call["idempotency_key"].endswith("-expire")
    with pytest.raises(AssertionError, match="expired Checkout Session can't be paid"):
        fake.mark_paid(topup.checkout_session_id)
    # Stripe's own expired event afterwards leaves it cancelled.
    hook = post_event(Client(), event("checkout.session.expired", fake.session(topup.checkout_session_id)))
    assert hook.status_code == 200
    topup.refresh_from_db()
    assert topup.status == Topup.Status.CANCELLED and entry_count() == 0


@pytest.mark.money
def test_a_session_paid_before_the_buyer_came_back_is_credited_not_cancelled(
    transactional_db, fake: FakeStripe, alice_client: Client, alice
) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()
    fake.mark_paid(topup.checkout_session_id)

    back = alice_client.get(f"/wallet/topup/?cancelled={topup.pk}")

    assert b"was paid after all" in back.content
    topup.refresh_from_db()
    assert topup.status == Topup.Status.PAID
    assert balance(alice) == 10_000_000 and entry_count() == 1


@pytest.mark.money
def test_an_abandoned_checkout_shows_expired_after_24_hours(fake: FakeStripe, alice_client: Client, alice) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    alice_client.post("/wallet/topup/", {"amount_usd": "1"})
    old, fresh = Topup.objects.order_by("pk")
    Topup.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(hours=24, minutes=1))

    html = alice_client.get("/wallet/").content.decode()

    assert "Expired (not paid)" in _topup_row(html, old) and "pay</a>" not in _topup_row(html, old)
    assert "Awaiting payment" in _topup_row(html, fresh) and "pay</a>" in _topup_row(html, fresh)
    done = alice_client.get(f"/wallet/topup/{old.pk}/done/")
    assert b"Top-up expired" in done.content and b"Nothing was charged" in done.content
    # Should Stripe still report it paid (a late webhook), it is credited all the same.
    session = fake.mark_paid(old.checkout_session_id)
    assert post_event(Client(), event("checkout.session.completed", session)).status_code == 200
    old.refresh_from_db()
    assert old.status == Topup.Status.PAID and balance(alice) == 10_000_000
