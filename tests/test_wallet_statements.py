"""On PostgreSQL each ledger phase is one SQL statement; count them so they don't creep back."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.wallet_helpers import funded_wallet
from wallet.errors import HoldNotPending, InsufficientCredits, WalletFrozen
from wallet.models import Account, Entry, Hold
from wallet.selectors import ledger_audit
from wallet.services import holds_expire, wallet_freeze, wallet_hold, wallet_post, wallet_void

pytestmark = [pytest.mark.money, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's; SQLite takes the ORM path")


def _count(fn) -> tuple[object, int]:
    with CaptureQueriesContext(connection) as queries:
        result = fn()
    return result, len(queries)


def test_hold_post_void_and_expire_are_one_statement_each(alice):
    account = funded_wallet(alice, 1000)
    hold, n = _count(lambda: wallet_hold(account=account, amount=300, idempotency_key="h1", reference="message:1"))
    assert n == 1 and hold.status == Hold.Status.PENDING
    posted, n = _count(lambda: wallet_post(hold=hold, amount=120, memo="demo"))
    assert n == 1 and (posted.status, posted.posted_amount) == ("posted", 120)

    other = wallet_hold(account=account, amount=100, idempotency_key="h2")
    voided, n = _count(lambda: wallet_void(hold=other, reason="provider failed"))
    assert n == 1 and voided.status == Hold.Status.VOIDED

    for i in range(3):
        wallet_hold(account=account, amount=10, idempotency_key=f"late{i}", ttl_seconds=60)
    count, n = _count(lambda: holds_expire(now=timezone.now() + dt.timedelta(seconds=61)))
    assert (count, n) == (3, 2)  # one statement per batch, one look-up of take-backs waiting for holds

    account.refresh_from_db()
    assert (account.balance, account.held) == (880, 0)
    entry = Entry.objects.get(hold=hold)
    assert (entry.amount, entry.reference, entry.memo, entry.wallet_id) == (120, "message:1", "demo", account.pk)
    assert ledger_audit() == []


def test_a_refused_hold_is_one_statement_and_remembered(alice):
    account = funded_wallet(alice, 100)
    with CaptureQueriesContext(connection) as queries, pytest.raises(InsufficientCredits) as refused:
        wallet_hold(account=account, amount=300, idempotency_key="h1")
    assert len(queries) == 1 and refused.value.available == 100
    assert Hold.objects.get(idempotency_key="h1").status == Hold.Status.REJECTED
    Account.objects.filter(pk=account.pk).update(balance=1000)  # even with funds now, the key keeps its outcome
    with pytest.raises(InsufficientCredits):
        wallet_hold(account=account, amount=300, idempotency_key="h1")


def test_repeats_and_refusals_keep_the_rules_on_the_fast_path(alice):
    account = funded_wallet(alice, 1000)
    first = wallet_hold(account=account, amount=300, idempotency_key="h1")
    assert wallet_hold(account=account, amount=300, idempotency_key="h1").pk == first.pk
    wallet_post(hold=first, amount=100)
    assert wallet_post(hold=first, amount=100).posted_amount == 100
    with pytest.raises(HoldNotPending):
        wallet_void(hold=first)
    expired = wallet_hold(account=account, amount=50, idempotency_key="h2", ttl_seconds=0)
    with pytest.raises(HoldNotPending):
        wallet_post(hold=expired, amount=10)
    assert Hold.objects.get(pk=expired.pk).status == Hold.Status.EXPIRED
    wallet_freeze(account=account, reason="disputed")
    assert wallet_hold(account=account, amount=300, idempotency_key="h1").pk == first.pk  # a repeat still answers
    with pytest.raises(WalletFrozen):
        wallet_hold(account=account, amount=10, idempotency_key="h3")
    account.refresh_from_db()
    assert (account.balance, account.held) == (900, 0)
    assert ledger_audit() == []
