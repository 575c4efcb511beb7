from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.wallet_helpers import funded_wallet, immutability_lifted
from wallet.models import Entry
from wallet.services import wallet_hold, wallet_post

pytestmark = [pytest.mark.django_db, pytest.mark.money]


def _audit() -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("wallet", "audit", stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, err.getvalue()
    return 0, out.getvalue()


def test_grant_command_credits_with_a_reason(alice):
    out = io.StringIO()
    call_command("wallet", "grant", "alice@example.com", "5000", "--reason", "beta tester", stdout=out)
    assert "balance now 5000" in out.getvalue()
    entry = Entry.objects.get()
    assert (entry.kind, entry.amount, entry.memo) == ("grant", 5000, "beta tester (by cli)")


def test_grant_command_is_idempotent_with_a_key(alice):
    for _ in range(2):
        call_command(
            "wallet", "grant", "alice@example.com", "5000", "--reason", "x", "--key", "once", stdout=io.StringIO()
        )
    assert Entry.objects.count() == 1


def test_grant_command_rerun_without_a_key_grants_once(alice):
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        call_command("wallet", "grant", "alice@example.com", "5000", "--reason", "beta tester", stdout=out)
        outputs.append(out.getvalue())
    assert Entry.objects.count() == 1
    assert "Already done under key cli-grant:" in outputs[1]
    call_command("wallet", "grant", "alice@example.com", "5000", "--reason", "second prize", stdout=io.StringIO())
    assert Entry.objects.count() == 2


def test_grant_command_refuses_unknown_user_and_missing_reason(alice):
    with pytest.raises(CommandError, match="No user"):
        call_command("wallet", "grant", "nobody@example.com", "5", "--reason", "x")
    with pytest.raises(CommandError):
        call_command("wallet", "grant", "alice@example.com", "5")


def test_audit_is_clean_on_an_honest_ledger(alice, bob):
    account = funded_wallet(alice, 1000)
    funded_wallet(bob, 500)
    wallet_post(hold=wallet_hold(account=account, amount=300, idempotency_key="h"), amount=250)
    wallet_hold(account=account, amount=100, idempotency_key="h2")
    code, output = _audit()
    assert code == 0, output
    assert "Audit clean" in output


def test_audit_names_a_tampered_balance(alice):
    account = funded_wallet(alice, 1000)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE wallet_account SET balance = balance + 7 WHERE id = %s", [account.pk])
    code, output = _audit()
    assert code == 1
    assert f"account {account.pk} (alice@example.com): stored balance 1007 != 1000 from entries" in output


def test_audit_names_a_tampered_entry(alice):
    funded_wallet(alice, 1000)
    entry = Entry.objects.get()
    with immutability_lifted():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE wallet_entry SET amount = 999 WHERE id = %s", [entry.pk])
            cursor.execute("UPDATE wallet_account SET balance = 999 WHERE user_id = %s", [entry.credit_account.user_id])
    code, output = _audit()
    assert code == 1
    assert f"entry {entry.pk} ({entry.idempotency_key}): contents changed" in output


def test_audit_names_a_tampered_hold_total(alice):
    account = funded_wallet(alice, 1000)
    wallet_hold(account=account, amount=100, idempotency_key="h")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE wallet_account SET held = 0 WHERE id = %s", [account.pk])
    code, output = _audit()
    assert code == 1
    assert "stored held 0 != 100 from pending holds" in output
