from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet, Sum

from wallet.audit import ledger_audit
from wallet.models import Account, Entry, Topup
from wallet.services import credits_to_usd

__all__ = ["ledger_audit"]  # the audit lives in wallet/audit.py; callers import it from here too


@dataclass(frozen=True)
class WalletSummary:
    balance: int
    held: int
    frozen_reason: str

    @property
    def available(self) -> int:
        return self.balance - self.held

    @property
    def balance_usd(self) -> Decimal:
        return credits_to_usd(self.balance)

    @property
    def held_usd(self) -> Decimal:
        return credits_to_usd(self.held)

    @property
    def available_usd(self) -> Decimal:
        return credits_to_usd(self.available)


def wallet_summary(*, user: AbstractBaseUser) -> WalletSummary:
    account = Account.objects.filter(user=user).only("balance", "held", "frozen_reason").first()
    if account is None:
        return WalletSummary(balance=0, held=0, frozen_reason="")
    return WalletSummary(balance=account.balance, held=account.held, frozen_reason=account.frozen_reason)


def entries_for_user(*, user: AbstractBaseUser) -> QuerySet[Entry]:
    account = Account.objects.filter(user=user).first()
    if account is None:
        return Entry.objects.none()
    # A wallet's entries are its chain (each moves it: the `entry_wallet_is_a_side`
    # constraint), read by the chain index; the accounts have no index of their own.
    return (
        Entry.objects.filter(wallet=account)
        .select_related("debit_account", "credit_account")
        .order_by("-created_at", "-id")
    )


def topups_for_user(*, user: AbstractBaseUser) -> QuerySet[Topup]:
    return Topup.objects.filter(user=user).order_by("-created_at")


def account_balance_from_entries(account_id: int) -> int:
    credited = Entry.objects.filter(credit_account_id=account_id).aggregate(s=Sum("amount"))["s"] or 0
    debited = Entry.objects.filter(debit_account_id=account_id).aggregate(s=Sum("amount"))["s"] or 0
    return credited - debited
