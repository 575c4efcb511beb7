"""Random sequences of ledger operations keep every balance equal to its entries."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wallet.errors import HoldNotPending, IdempotencyConflict, InsufficientCredits, WalletFrozen
from wallet.models import Account, Entry, Hold
from wallet.selectors import account_balance_from_entries, ledger_audit
from wallet.services import holds_expire, wallet_credit, wallet_for_user, wallet_hold, wallet_post, wallet_void

pytestmark = [pytest.mark.django_db, pytest.mark.money]

keys = st.integers(min_value=0, max_value=4)  # few keys, so retries with a used key are frequent
operations = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), st.integers(1, 5_000), keys),
        st.tuples(st.just("hold"), st.integers(1, 3_000), keys),
        st.tuples(st.just("post"), st.integers(0, 7), st.integers(0, 110)),
        st.tuples(st.just("void"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("expire"), st.just(0), st.just(0)),
    ),
    max_size=25,
)
_users = itertools.count()


def _check_invariants(account: Account, expected_balance: int) -> None:
    account.refresh_from_db()
    pending = sum(Hold.objects.filter(account=account, status="pending").values_list("amount", flat=True))
    assert account.balance == account_balance_from_entries(account.pk) == expected_balance
    assert account.held == pending
    assert account.balance - account.held >= 0
    assert account.held >= 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_random_ledger_sequences_keep_balances_rebuildable(ops):
    with transaction.atomic():
        user = get_user_model().objects.create_user(username=f"prop{next(_users)}", email="p@example.com")
        account = wallet_for_user(user=user)
        balance = 0
        topups: dict[int, int] = {}  # key -> amount first used
        holds: dict[int, tuple[int, Hold | None]] = {}  # key -> (amount, hold or None if refused)
        placed: list[Hold] = []
        frozen = False  # a post above its hold that the wallet could not cover freezes it

        for op, a, b in ops:
            if op == "topup":
                amount, key = a, b
                if key in topups and topups[key] != amount:
                    with pytest.raises(IdempotencyConflict):
                        wallet_credit(account=account, amount=amount, kind=Entry.Kind.TOPUP, idempotency_key=f"t{key}")
                else:
                    wallet_credit(account=account, amount=amount, kind=Entry.Kind.TOPUP, idempotency_key=f"t{key}")
                    if key not in topups:
                        topups[key] = amount
                        balance += amount
            elif op == "hold":
                amount, key = a, b
                account.refresh_from_db()
                if key in holds:
                    first_amount, first_hold = holds[key]
                    if first_amount != amount:
                        with pytest.raises(IdempotencyConflict):
                            wallet_hold(account=account, amount=amount, idempotency_key=f"h{key}")
                    elif first_hold is None:
                        with pytest.raises(InsufficientCredits):
                            wallet_hold(account=account, amount=amount, idempotency_key=f"h{key}")
                    else:
                        assert (
                            wallet_hold(account=account, amount=amount, idempotency_key=f"h{key}").pk == first_hold.pk
                        )
                elif frozen:
                    with pytest.raises(WalletFrozen):
                        wallet_hold(account=account, amount=amount, idempotency_key=f"h{key}")
                elif account.available >= amount:
                    hold = wallet_hold(account=account, amount=amount, idempotency_key=f"h{key}")
                    holds[key] = (amount, hold)
                    placed.append(hold)
                else:
                    with pytest.raises(InsufficientCredits):
                        wallet_hold(account=account, amount=amount, idempotency_key=f"h{key}")
                    holds[key] = (amount, None)
            elif op == "post" and placed:
                hold = placed[a % len(placed)]
                current = Hold.objects.get(pk=hold.pk)
                amount = current.amount * b // 100
                if current.status == "pending":
                    account.refresh_from_db()
                    # Above the hold, the excess comes from what is available once the
                    # hold is released; what that can't cover is a shortfall.
                    excess = max(0, amount - current.amount)
                    available_after = account.balance - account.held
                    wallet_post(hold=hold, amount=amount)
                    balance -= min(amount, current.amount) + min(excess, available_after)
                    frozen = frozen or excess > available_after
                elif current.status == "posted":
                    if amount == current.posted_amount + current.excess:
                        wallet_post(hold=hold, amount=amount)
                    else:
                        with pytest.raises(IdempotencyConflict):
                            wallet_post(hold=hold, amount=amount)
                else:
                    with pytest.raises(HoldNotPending):
                        wallet_post(hold=hold, amount=amount)
            elif op == "void" and placed:
                hold = placed[a % len(placed)]
                if Hold.objects.get(pk=hold.pk).status == "posted":
                    with pytest.raises(HoldNotPending):
                        wallet_void(hold=hold)
                else:
                    wallet_void(hold=hold)
            elif op == "expire":
                holds_expire(now=timezone.now() + dt.timedelta(days=1))
            _check_invariants(account, balance)

        assert ledger_audit() == []
        transaction.set_rollback(True)
