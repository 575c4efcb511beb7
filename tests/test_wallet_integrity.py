"""What the ledger promises, the database enforces; what it can't refuse, the audit finds."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from tests.wallet_helpers import funded_wallet, immutability_lifted
from wallet import digests
from wallet.models import Account, AuditCheckpoint, Entry, Hold, Shortfall, Topup
from wallet.selectors import ledger_audit
from wallet.services import wallet_credit, wallet_debit, wallet_hold, wallet_post, wallet_void

pytestmark = [pytest.mark.django_db, pytest.mark.money]


def _raw(sql: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE wallet_entry SET amount = amount + 1 WHERE id = %s",
        "UPDATE wallet_entry SET memo = 'edited' WHERE id = %s",
        "DELETE FROM wallet_entry WHERE id = %s",
    ],
)
def test_the_database_refuses_changing_or_deleting_an_entry(alice, sql):
    funded_wallet(alice, 1000)
    entry = Entry.objects.get()
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        _raw(sql, [entry.pk])
    assert Entry.objects.get().amount == 1000 and Entry.objects.get().memo == entry.memo
    assert ledger_audit() == []


def test_each_entry_chains_the_previous_one_of_its_wallet(alice, bob):
    account = funded_wallet(alice, 1000)
    other = funded_wallet(bob, 50)
    hold = wallet_hold(account=account, amount=100, idempotency_key="h")
    wallet_post(hold=hold, amount=40)
    entries = list(Entry.objects.filter(wallet=account).order_by("id"))
    assert [e.kind for e in entries] == ["grant", "usage"]
    assert entries[0].digest == digests.chain("", entries[0].content_digest())
    assert entries[1].digest == digests.chain(entries[0].digest, entries[1].content_digest())
    account.refresh_from_db()
    other.refresh_from_db()
    assert account.chain_head == entries[1].digest
    assert other.chain_head == Entry.objects.get(wallet=other).digest


def test_the_chain_digest_is_the_same_in_python_and_in_postgres(alice):
    if connection.vendor != "postgresql":
        pytest.skip("the SQL form of the digest is PostgreSQL's")
    funded_wallet(alice, 1000)
    entry = Entry.objects.get()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {digests.CONTENT_SQL} FROM wallet_entry e WHERE e.id = %s", [entry.pk])
        assert cursor.fetchone()[0] == entry.content_digest()


def test_a_coordinated_edit_of_entry_balance_and_digest_is_caught(alice):
    """Edit an old entry, recompute its own digest and fix the balance: the next link breaks."""
    account = funded_wallet(alice, 1000)
    wallet_credit(account=account, amount=500, kind=Entry.Kind.GRANT, idempotency_key="second")
    first = Entry.objects.filter(wallet=account).order_by("id").first()
    first.amount = 5000
    forged = digests.chain("", first.content_digest())
    with immutability_lifted():
        _raw("UPDATE wallet_entry SET amount = 5000, digest = %s WHERE id = %s", [forged, first.pk])
    _raw("UPDATE wallet_account SET balance = 5500 WHERE id = %s", [account.pk])
    problems = ledger_audit()
    second = Entry.objects.get(idempotency_key="second")
    assert problems == [f"entry {second.pk} (second): contents changed after it was written (digest chain broken)"]


def test_a_deleted_newest_entry_is_caught_by_the_wallet_head(alice):
    account = funded_wallet(alice, 1000)
    entry = wallet_credit(account=account, amount=500, kind=Entry.Kind.GRANT, idempotency_key="second")
    with immutability_lifted():
        _raw("DELETE FROM wallet_entry WHERE id = %s", [entry.pk])
    _raw("UPDATE wallet_account SET balance = 1000 WHERE id = %s", [account.pk])
    assert ledger_audit() == [f"account {account.pk}: chain head does not match its newest entry"]


def test_the_audit_reports_a_missing_trigger(alice):
    funded_wallet(alice, 10)
    with immutability_lifted():
        assert ledger_audit() == ["wallet_entry: the trigger that refuses UPDATE and DELETE is missing or disabled"]
    assert ledger_audit() == []


def test_the_audit_flags_usage_on_a_voided_hold(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=100, idempotency_key="h")
    wallet_post(hold=hold, amount=30)
    _raw("UPDATE wallet_hold SET status = 'voided' WHERE id = %s", [hold.pk])
    assert f"entry {Entry.objects.get(hold=hold).pk}: usage on hold {hold.pk}, which is voided, not posted" in (
        ledger_audit()
    )
    other = wallet_hold(account=account, amount=100, idempotency_key="h2")
    wallet_void(hold=other)
    assert not any(f"hold {other.pk}" in p for p in ledger_audit())


def _topup(user, account: Account, *, credits: int = 2000, credited: bool = True) -> Topup:
    return Topup.objects.create(
        user=user,
        account=account,
        provider=Topup.Provider.DEMO,
        amount_cents=100,
        credits=credits,
        credited_at=timezone.now() if credited else None,
    )


def test_the_audit_reconciles_each_topup_with_its_entries(alice):
    account = funded_wallet(alice, 0)
    paid = _topup(alice, account, credits=3000)
    wallet_credit(
        account=account, amount=3000, kind=Entry.Kind.TOPUP, idempotency_key="t1", reference=f"topup:{paid.pk}"
    )
    wallet_debit(account=account, amount=1000, kind=Entry.Kind.ADJUSTMENT, idempotency_key="spent")
    wallet_debit(
        account=account,
        amount=2500,
        kind=Entry.Kind.REFUND,
        idempotency_key=f"topup:{paid.pk}:refund:100",
        reference=f"topup:{paid.pk}",
        partial=True,
    )
    Topup.objects.filter(pk=paid.pk).update(clawed_back_credits=2000)  # under-recorded: 2000 taken + 500 shortfall
    unpaid = _topup(alice, account, credited=False)
    wallet_credit(
        account=account, amount=7, kind=Entry.Kind.TOPUP, idempotency_key="t2", reference=f"topup:{unpaid.pk}"
    )
    assert sorted(ledger_audit()) == [
        f"top-up {paid.pk}: clawed back 2000 + shortfall 500 + still owed 0 != 2000 recorded",
        f"top-up {unpaid.pk}: credited 7 in 1 entries, expected 0",
    ]
    assert Shortfall.objects.get().reference == f"topup:{paid.pk}:refund:100"
    Topup.objects.filter(pk=paid.pk).update(clawed_back_credits=2500)
    assert ledger_audit() == [f"top-up {unpaid.pk}: credited 7 in 1 entries, expected 0"]


def test_an_expired_hold_with_usage_is_flagged(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=100, idempotency_key="h")
    wallet_post(hold=hold, amount=10)
    Hold.objects.filter(pk=hold.pk).update(status=Hold.Status.EXPIRED)
    assert any("which is expired, not posted" in p for p in ledger_audit())


def test_the_incremental_audit_starts_from_each_wallets_checkpoint(alice, bob):
    account = funded_wallet(alice, 1000)
    funded_wallet(bob, 500)
    assert ledger_audit(full=False) == []  # the first audit sets the checkpoints
    point = AuditCheckpoint.objects.get(account=account)
    first = Entry.objects.get(wallet=account)
    assert (point.entry_id, point.digest, point.balance) == (first.pk, first.digest, 1000)

    hold = wallet_hold(account=account, amount=100, idempotency_key="h")
    wallet_post(hold=hold, amount=40)
    with immutability_lifted():  # an old entry edited behind the application's back
        _raw("UPDATE wallet_entry SET memo = 'edited' WHERE id = %s", [first.pk])
    assert ledger_audit(full=False) == []  # only the new entry is verified, from the checkpoint
    point.refresh_from_db()
    assert (point.entry_id, point.balance) == (Entry.objects.get(hold=hold).pk, 960)
    assert ledger_audit(full=True) == [
        f"entry {first.pk} ({first.idempotency_key}): contents changed after it was written (digest chain broken)"
    ]


def test_the_incremental_audit_catches_a_new_entry_that_does_not_chain(alice):
    account = funded_wallet(alice, 1000)
    assert ledger_audit(full=False) == []
    entry = wallet_credit(account=account, amount=5, kind=Entry.Kind.GRANT, idempotency_key="new")
    with immutability_lifted():
        _raw("UPDATE wallet_entry SET amount = 50 WHERE id = %s", [entry.pk])
    _raw("UPDATE wallet_account SET balance = 1050 WHERE id = %s", [account.pk])
    assert ledger_audit(full=False) == [
        f"entry {entry.pk} (new): contents changed after it was written (digest chain broken)"
    ]
    checkpoint = AuditCheckpoint.objects.get(account=account)
    assert checkpoint.entry_id < entry.pk  # a dirty audit moves no checkpoint
