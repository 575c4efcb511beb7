"""Nothing is written off silently: a charge above what a wallet has, or a post above
its hold, takes the available credits and records the rest as a shortfall."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from tests.wallet_helpers import funded_wallet
from wallet.errors import HoldNotPending, IdempotencyConflict, WalletFrozen
from wallet.models import Account, Entry, Hold, Shortfall
from wallet.selectors import ledger_audit
from wallet.services import wallet_charge, wallet_hold, wallet_post

pytestmark = [pytest.mark.money, pytest.mark.django_db]


def test_a_covered_charge_is_one_entry_and_idempotent(alice):
    account = funded_wallet(alice, 1000)
    first = wallet_charge(account=account, amount=300, idempotency_key="c1", reference="message:7", memo="late")
    again = wallet_charge(account=account, amount=300, idempotency_key="c1", reference="message:7", memo="late")
    assert (first.taken, first.shortfall) == (300, 0)
    assert again == first
    account.refresh_from_db()
    assert (account.balance, account.frozen) == (700, False)
    entry = Entry.objects.get(idempotency_key="c1")
    assert (entry.kind, entry.reference, entry.debit_account_id) == ("usage", "message:7", account.pk)
    assert ledger_audit() == []


def test_a_charge_above_the_balance_records_a_shortfall_and_freezes(alice):
    account = funded_wallet(alice, 1000)
    wallet_hold(account=account, amount=400, idempotency_key="h1")  # held credits are not available
    charge = wallet_charge(account=account, amount=900, idempotency_key="c1")
    assert (charge.taken, charge.shortfall) == (600, 300)
    assert wallet_charge(account=account, amount=900, idempotency_key="c1") == charge
    with pytest.raises(IdempotencyConflict):
        wallet_charge(account=account, amount=800, idempotency_key="c1")
    account.refresh_from_db()
    assert (account.balance, account.held, account.available) == (400, 400, 0)
    shortfall = Shortfall.objects.get()
    assert (shortfall.amount, shortfall.reference, shortfall.account_id) == (300, "c1", account.pk)
    assert account.frozen and "300 credits of usage were not covered" in account.frozen_reason
    with pytest.raises(WalletFrozen):
        wallet_hold(account=account, amount=1, idempotency_key="h2")
    assert ledger_audit() == []


def test_a_charge_on_an_empty_wallet_is_all_shortfall(alice):
    account = funded_wallet(alice, 0)
    charge = wallet_charge(account=account, amount=50, idempotency_key="c1")
    assert (charge.entry, charge.shortfall) == (None, 50)
    assert wallet_charge(account=account, amount=50, idempotency_key="c1") == charge
    assert not Entry.objects.filter(idempotency_key="c1").exists()


def test_a_post_above_its_hold_charges_the_excess_once(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1", reference="message:1")
    posted = wallet_post(hold=hold, amount=450, memo="demo: 10 in / 20 out")
    assert (posted.status, posted.posted_amount, posted.excess) == ("posted", 300, 150)
    assert wallet_post(hold=hold, amount=450).status == Hold.Status.POSTED
    with pytest.raises(IdempotencyConflict):
        wallet_post(hold=hold, amount=300)
    account.refresh_from_db()
    assert (account.balance, account.held, account.frozen) == (550, 0, False)
    entries = list(
        Entry.objects.filter(kind="usage").order_by("id").values_list("idempotency_key", "amount", "reference")
    )
    assert entries == [(f"hold:{hold.pk}:post", 300, "message:1"), (f"hold:{hold.pk}:excess", 150, "message:1")]
    assert not Shortfall.objects.exists()
    assert ledger_audit() == []


def test_a_post_above_what_the_wallet_has_records_the_rest(alice):
    account = funded_wallet(alice, 400)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1")
    wallet_post(hold=hold, amount=1000)
    account.refresh_from_db()
    assert (account.balance, account.held) == (0, 0)
    assert Shortfall.objects.get(reference=f"hold:{hold.pk}:excess").amount == 600
    assert account.frozen
    wallet_post(hold=hold, amount=1000)  # a retry changes nothing
    assert Shortfall.objects.count() == 1 and Entry.objects.filter(kind="usage").count() == 2
    assert ledger_audit() == []


def test_an_expired_hold_is_refused_and_settled_late_by_a_charge(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1", ttl_seconds=0)
    with pytest.raises(HoldNotPending):
        wallet_post(hold=hold, amount=500)
    charge = wallet_charge(account=account, amount=500, idempotency_key=f"hold:{hold.pk}:late")
    assert (charge.taken, charge.shortfall) == (500, 0)
    account.refresh_from_db()
    assert (account.balance, account.held) == (500, 0)
    assert ledger_audit() == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_a_post_above_its_hold_charge_once(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=100, idempotency_key="h1")
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def post() -> None:
        try:
            barrier.wait()
            wallet_post(hold=hold, amount=250)
        except BaseException as exc:  # any error fails the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    account.refresh_from_db()
    assert (account.balance, account.held) == (750, 0)
    assert Entry.objects.filter(kind="usage").count() == 2
    assert ledger_audit() == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_charges_take_exactly_what_the_wallet_has(alice):
    account = funded_wallet(alice, 1000)
    barrier = threading.Barrier(20)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def charge(i: int) -> None:
        try:
            barrier.wait()
            result = wallet_charge(account=Account(pk=account.pk), amount=70, idempotency_key=f"c{i}")
            with lock:
                results.append((result.taken, result.shortfall))
        finally:
            connection.close()

    threads = [threading.Thread(target=charge, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 20
    assert sum(taken for taken, _ in results) == 1000
    assert sum(short for _, short in results) == 20 * 70 - 1000
    account.refresh_from_db()
    assert account.balance == 0
    assert sum(Shortfall.objects.values_list("amount", flat=True)) == 400
    assert ledger_audit() == []
