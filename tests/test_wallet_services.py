from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.wallet_helpers import funded_wallet
from wallet.errors import HoldNotPending, IdempotencyConflict, InsufficientCredits, WalletFrozen
from wallet.models import Account, Entry, Hold, LedgerImmutable, Shortfall
from wallet.selectors import account_balance_from_entries, ledger_audit
from wallet.services import (
    cost_in_credits,
    credits_for_cents,
    holds_expire,
    wallet_credit,
    wallet_debit,
    wallet_for_user,
    wallet_freeze,
    wallet_grant,
    wallet_hold,
    wallet_post,
    wallet_unfreeze,
    wallet_void,
)

pytestmark = [pytest.mark.django_db, pytest.mark.money]


def test_new_wallet_is_empty(alice):
    account = wallet_for_user(user=alice)
    assert (account.balance, account.held, account.available) == (0, 0, 0)
    assert wallet_for_user(user=alice).pk == account.pk


def test_credit_is_double_entry_and_idempotent(alice):
    account = wallet_for_user(user=alice)
    first = wallet_credit(account=account, amount=500, kind=Entry.Kind.TOPUP, idempotency_key="k1", reference="topup:1")
    again = wallet_credit(account=account, amount=500, kind=Entry.Kind.TOPUP, idempotency_key="k1", reference="topup:1")
    assert first.pk == again.pk
    assert Entry.objects.count() == 1
    assert first.credit_account_id == account.pk and first.debit_account.code == "stripe"
    account.refresh_from_db()
    assert account.balance == 500
    assert account_balance_from_entries(first.debit_account_id) == -500


def test_same_key_with_other_fields_is_an_error(alice):
    account = wallet_for_user(user=alice)
    wallet_credit(account=account, amount=500, kind=Entry.Kind.TOPUP, idempotency_key="k1")
    with pytest.raises(IdempotencyConflict):
        wallet_credit(account=account, amount=600, kind=Entry.Kind.TOPUP, idempotency_key="k1")
    account.refresh_from_db()
    assert account.balance == 500


def test_hold_post_releases_the_rest(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1", reference="message:1")
    account.refresh_from_db()
    assert (account.balance, account.held, account.available) == (1000, 300, 700)
    wallet_post(hold=hold, amount=120)
    account.refresh_from_db()
    assert (account.balance, account.held) == (880, 0)
    entry = Entry.objects.get(hold=hold)
    assert (entry.kind, entry.amount, entry.reference) == ("usage", 120, "message:1")
    assert ledger_audit() == []


def test_post_is_once(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1")
    wallet_post(hold=hold, amount=200)
    assert wallet_post(hold=hold, amount=200).status == Hold.Status.POSTED
    with pytest.raises(IdempotencyConflict):
        wallet_post(hold=hold, amount=100)
    with pytest.raises(HoldNotPending):
        wallet_void(hold=hold)
    account.refresh_from_db()
    assert account.balance == 800
    assert Entry.objects.filter(kind="usage").count() == 1


def test_post_of_zero_writes_no_entry(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1")
    wallet_post(hold=hold, amount=0)
    account.refresh_from_db()
    assert (account.balance, account.held) == (1000, 0)
    assert not Entry.objects.filter(kind="usage").exists()


def test_void_releases_and_is_idempotent(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1")
    wallet_void(hold=hold, reason="provider failed")
    wallet_void(hold=hold, reason="again")
    account.refresh_from_db()
    assert (account.balance, account.held) == (1000, 0)
    with pytest.raises(HoldNotPending):
        wallet_post(hold=hold, amount=10)


def test_refused_hold_is_remembered_under_its_key(alice):
    account = funded_wallet(alice, 100)
    with pytest.raises(InsufficientCredits) as refused:
        wallet_hold(account=account, amount=300, idempotency_key="h1")
    assert refused.value.available == 100
    wallet_credit(account=account, amount=1000, kind=Entry.Kind.GRANT, idempotency_key="more")
    # Same key after a top-up: still the first outcome. A new attempt takes a new key.
    with pytest.raises(InsufficientCredits):
        wallet_hold(account=account, amount=300, idempotency_key="h1")
    assert wallet_hold(account=account, amount=300, idempotency_key="h2").status == Hold.Status.PENDING


def test_hold_retry_returns_the_same_hold(alice):
    account = funded_wallet(alice, 1000)
    first = wallet_hold(account=account, amount=300, idempotency_key="h1")
    again = wallet_hold(account=account, amount=300, idempotency_key="h1")
    assert first.pk == again.pk
    account.refresh_from_db()
    assert account.held == 300
    with pytest.raises(IdempotencyConflict):
        wallet_hold(account=account, amount=301, idempotency_key="h1")


def test_expired_holds_are_swept_and_cannot_be_posted(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1", ttl_seconds=60)
    assert holds_expire() == 0
    assert holds_expire(now=timezone.now() + dt.timedelta(seconds=61)) == 1
    account.refresh_from_db()
    assert account.held == 0
    with pytest.raises(HoldNotPending):
        wallet_post(hold=hold, amount=10)
    assert Hold.objects.get(pk=hold.pk).status == Hold.Status.EXPIRED


def test_posting_after_the_time_limit_expires_the_hold(alice):
    account = funded_wallet(alice, 1000)
    hold = wallet_hold(account=account, amount=300, idempotency_key="h1", ttl_seconds=0)
    with pytest.raises(HoldNotPending):
        wallet_post(hold=hold, amount=10)
    account.refresh_from_db()
    assert (account.balance, account.held) == (1000, 0)


def test_frozen_wallet_cannot_hold(alice):
    account = funded_wallet(alice, 1000)
    wallet_freeze(account=account, reason="payment disputed")
    with pytest.raises(WalletFrozen):
        wallet_hold(account=account, amount=10, idempotency_key="h1")
    wallet_unfreeze(account=account)
    assert wallet_hold(account=account, amount=10, idempotency_key="h1").status == Hold.Status.PENDING


def test_partial_debit_goes_to_zero_and_records_shortfall(alice):
    account = funded_wallet(alice, 1000)
    entry, shortfall = wallet_debit(
        account=account, amount=1500, kind=Entry.Kind.REFUND, idempotency_key="refund:re_1", partial=True
    )
    assert (entry.amount, shortfall) == (1000, 500)
    again = wallet_debit(
        account=account, amount=1500, kind=Entry.Kind.REFUND, idempotency_key="refund:re_1", partial=True
    )
    assert again == (entry, 500)
    with pytest.raises(IdempotencyConflict):
        wallet_debit(account=account, amount=1400, kind=Entry.Kind.REFUND, idempotency_key="refund:re_1", partial=True)
    account.refresh_from_db()
    assert account.balance == 0
    assert Shortfall.objects.get().amount == 500
    assert account.frozen
    assert ledger_audit() == []


def test_debit_retry_with_another_amount_is_an_error(alice):
    account = funded_wallet(alice, 1000)
    wallet_debit(account=account, amount=100, kind=Entry.Kind.ADJUSTMENT, idempotency_key="a1")
    with pytest.raises(IdempotencyConflict):
        wallet_debit(account=account, amount=200, kind=Entry.Kind.ADJUSTMENT, idempotency_key="a1")
    account.refresh_from_db()
    assert account.balance == 900


def test_full_debit_refuses_when_short(alice):
    account = funded_wallet(alice, 100)
    with pytest.raises(InsufficientCredits):
        wallet_debit(account=account, amount=200, kind=Entry.Kind.ADJUSTMENT, idempotency_key="a1")


def test_grant_requires_a_reason_and_adjusts_both_ways(alice):
    account = wallet_for_user(user=alice)
    with pytest.raises(ValueError):
        wallet_grant(account=account, amount=100, reason=" ", actor="ops", idempotency_key="g0")
    wallet_grant(account=account, amount=100, reason="welcome", actor="ops", idempotency_key="g1")
    wallet_grant(account=account, amount=-40, reason="correction", actor="ops", idempotency_key="g2")
    account.refresh_from_db()
    assert account.balance == 60
    assert list(Entry.objects.order_by("id").values_list("kind", "memo")) == [
        ("grant", "welcome (by ops)"),
        ("adjustment", "correction (by ops)"),
    ]


def test_entries_are_immutable(alice):
    account = funded_wallet(alice, 100)
    entry = Entry.objects.get(credit_account=account)
    entry.amount = 5
    with pytest.raises(LedgerImmutable):
        entry.save()
    with pytest.raises(LedgerImmutable):
        entry.delete()


def test_database_refuses_negative_available(alice):
    from django.db import IntegrityError, transaction

    account = funded_wallet(alice, 100)
    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(pk=account.pk).update(held=200)


@pytest.mark.parametrize(
    ("tokens_in", "tokens_out", "price_in", "price_out", "expected"),
    [
        (1000, 500, "0.15", "0.60", 900),  # (150 + 300) micro-USD x 2 = 900 credits
        (1, 1, "0.15", "0.60", 2),  # 0.75 micro-USD x 2 = 1.5 -> ceil 2
        (0, 0, "5.00", "15.00", 0),
        (123_456, 7_890, "5.00", "15.00", 1_471_260),
    ],
)
def test_cost_formula_is_exact(tokens_in, tokens_out, price_in, price_out, expected):
    cost = cost_in_credits(
        input_tokens=tokens_in, output_tokens=tokens_out, input_price=Decimal(price_in), output_price=Decimal(price_out)
    )
    assert cost == expected


def test_credits_for_cents():
    assert credits_for_cents(100) == 2_000_000
    assert credits_for_cents(1) == 20_000
