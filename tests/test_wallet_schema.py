"""The ledger tables carry only the indexes and keys their queries and rules need
(migration 0014); these pin what the code relies on of them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tests.wallet_helpers import funded_wallet
from wallet import ledger_sql
from wallet.models import Entry, Hold
from wallet.selectors import entries_for_user, ledger_audit
from wallet.services import holds_expire, wallet_hold, wallet_post, wallet_void

pytestmark = [pytest.mark.django_db, pytest.mark.money]

postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'")


def _plan(sql: str, params: dict | list) -> str:
    """The plan PostgreSQL picks when a sequential scan is its last resort (the test
    tables are tiny, where a scan is cheapest): whether an index serves the query at all."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_an_entry_whose_wallet_is_neither_side_is_refused(alice, bob):
    """The wallet has no foreign key of its own: a CHECK makes it the debit or credit account."""
    funded_wallet(alice, 1000)
    other = funded_wallet(bob, 0)
    entry = Entry.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Entry.objects.create(
            kind=Entry.Kind.GRANT,
            debit_account_id=entry.debit_account_id,
            credit_account_id=entry.credit_account_id,
            amount=1,
            idempotency_key="elsewhere",
            wallet=other,
            created_at=timezone.now(),
            digest="0" * 64,
        )
    assert Entry.objects.count() == 1 and ledger_audit() == []


def test_the_statement_lists_every_entry_that_moves_the_wallet(alice, bob):
    account = funded_wallet(alice, 1000)
    funded_wallet(bob, 500)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1")
    wallet_post(hold=hold, amount=200)
    entries = list(entries_for_user(user=alice))
    assert [(e.kind, e.amount) for e in entries] == [(Entry.Kind.USAGE, 200), (Entry.Kind.GRANT, 1000)]
    assert all(account.pk in (e.debit_account_id, e.credit_account_id) for e in entries)


def test_the_sweep_expires_pending_holds_only(alice):
    """Resolved holds leave the partial expiry index; the sweep finds the pending ones past due."""
    account = funded_wallet(alice, 1000)
    wallet_post(hold=wallet_hold(account=account, amount=100, idempotency_key="p"), amount=50)
    wallet_void(hold=wallet_hold(account=account, amount=100, idempotency_key="v"), reason="stopped")
    wallet_hold(account=account, amount=100, idempotency_key="d")
    later = timezone.now() + dt.timedelta(days=2)
    assert holds_expire(now=later) == 1
    statuses = dict(Hold.objects.values_list("idempotency_key", "status"))
    assert statuses == {"p": Hold.Status.POSTED, "v": Hold.Status.VOIDED, "d": Hold.Status.EXPIRED}
    account.refresh_from_db()
    assert account.held == 0 and account.balance == 950 and ledger_audit() == []


@postgres_only
def test_the_expiry_index_holds_pending_holds_only():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'wallet_hold' AND indexname = 'hold_pending_expiry_idx'"
        )
        (definition,) = cursor.fetchone()
    assert "(expires_at)" in definition and "WHERE ((status)::text = 'pending'::text)" in definition


@postgres_only
def test_the_ledger_tables_carry_only_the_indexes_their_queries_use():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, count(*) FROM pg_indexes WHERE tablename IN ('wallet_entry', 'wallet_hold') "
            "GROUP BY tablename"
        )
        counts = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'wallet_entry'::regclass AND contype = 'f'")
        (entry_keys,) = cursor.fetchone()
    # entry: primary key, idempotency key, hold (one entry per hold), chain (wallet, id);
    # hold: primary key, idempotency key, pending expiry.
    assert counts == {"wallet_entry": 4, "wallet_hold": 3}
    assert entry_keys == 3  # debit and credit account, hold: the wallet is one of the accounts


@postgres_only
def test_the_sweep_the_audit_and_the_statement_are_served_by_an_index(alice):
    funded_wallet(alice, 1000)
    sweep = _plan(ledger_sql._EXPIRE, {"now": timezone.now(), "batch": 500})
    assert "hold_pending_expiry_idx" in sweep
    held = _plan("SELECT account_id, sum(amount) FROM wallet_hold WHERE status = 'pending' GROUP BY account_id", [])
    assert "hold_pending_expiry_idx" in held
    statement = entries_for_user(user=alice)
    sql, params = statement.query.sql_with_params()
    assert "wallet_entry_chain_idx" in _plan(sql, list(params))
