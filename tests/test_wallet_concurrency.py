"""Concurrent spenders serialise on the wallet row: never a credit lost or invented."""

from __future__ import annotations

import threading

import pytest
from django.db import close_old_connections, connection

from tests.wallet_helpers import funded_wallet
from wallet.errors import InsufficientCredits
from wallet.models import Account, Entry, Hold
from wallet.selectors import ledger_audit
from wallet.services import wallet_hold, wallet_post

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


def _watch_available(account_id: int, stop: threading.Event, seen: list[int]) -> None:
    try:
        while not stop.is_set():
            row = Account.objects.values_list("balance", "held").get(pk=account_id)
            seen.append(row[0] - row[1])
    finally:
        close_old_connections()


def test_fifty_threads_spend_exactly_what_the_wallet_has(alice):
    account = funded_wallet(alice, 1000)
    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def spend(i: int) -> None:
        try:
            barrier.wait()
            try:
                hold = wallet_hold(account=account, amount=100, idempotency_key=f"spend:{i}")
                wallet_post(hold=hold, amount=100)
                result = "posted"
            except InsufficientCredits:
                result = "refused"
            except Exception as exc:  # any other error is a failure of the test
                result = f"error: {exc!r}"
            with lock:
                outcomes.append(result)
        finally:
            connection.close()

    seen: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_available, args=(account.pk, stop, seen))
    watcher.start()
    threads = [threading.Thread(target=spend, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    watcher.join()

    assert sorted(set(outcomes)) == ["posted", "refused"], outcomes
    assert outcomes.count("posted") == 10
    account.refresh_from_db()
    assert (account.balance, account.held) == (0, 0)
    assert Entry.objects.filter(kind="usage").count() == 10
    assert Hold.objects.filter(status="rejected").count() == 40
    assert seen and min(seen) >= 0
    assert ledger_audit() == []


def test_the_same_key_from_many_threads_holds_once(alice):
    account = funded_wallet(alice, 1000)
    barrier = threading.Barrier(20)
    holds: list[int] = []

    def retry() -> None:
        try:
            barrier.wait()
            holds.append(wallet_hold(account=account, amount=100, idempotency_key="same").pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=retry) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(holds) == 20 and len(set(holds)) == 1
    account.refresh_from_db()
    assert account.held == 100
