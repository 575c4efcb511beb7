"""manage.py stripe_reconcile: credit paid sessions whose webhook never arrived."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import balance, entry_count, open_topup, stripe_settings
from wallet.models import Topup

# django_db: the database is set up before any autouse fixture that reads it.
pytestmark = [pytest.mark.money, pytest.mark.django_db]


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def reconcile(*args: str) -> str:
    out = io.StringIO()
    call_command("stripe_reconcile", *args, stdout=out)
    return out.getvalue()


def test_credits_a_lost_webhook_once_and_is_a_noop_the_second_time(transactional_db, fake: FakeStripe, alice) -> None:
    lost = open_topup(alice, cents=500)
    fake.mark_paid(lost.checkout_session_id)
    open_topup(alice, cents=100)  # never paid

    first = reconcile()
    second = reconcile()

    assert f"credited top-up {lost.pk}" in first
    assert "1 paid session(s): 1 credited now, 0 already credited" in first
    assert "1 paid session(s): 0 credited now, 1 already credited" in second
    assert balance(alice) == 10_000_000
    assert entry_count() == 1
    lost.refresh_from_db()
    assert lost.status == Topup.Status.PAID
    assert lost.receipt_url.startswith("https://pay.stripe.com/receipts/")


def test_since_limits_the_sessions_looked_at(transactional_db, fake: FakeStripe, alice) -> None:
    old = open_topup(alice, cents=500)
    fake.mark_paid(old.checkout_session_id)
    fake.set_created(old.checkout_session_id, int(time.time()) - 40 * 86400)

    assert "0 paid session(s)" in reconcile()
    assert entry_count() == 0

    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 41 * 86400))
    assert f"credited top-up {old.pk}" in reconcile("--since", since)
    assert balance(alice) == 10_000_000


def test_refuses_without_stripe_or_with_a_bad_date(transactional_db, settings) -> None:
    settings.STRIPE_SECRET_KEY = ""
    with pytest.raises(CommandError, match="STRIPE_SECRET_KEY"):
        reconcile()
    settings.STRIPE_SECRET_KEY = "sk_test_x"
    with pytest.raises(CommandError, match="--since"):
        reconcile("--since", "yesterday")
