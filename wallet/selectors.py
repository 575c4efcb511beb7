from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet, Sum

from wallet.models import Account, Entry, Hold, Topup
from wallet.services import credits_to_usd


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
    return (
        Entry.objects.filter(Q(debit_account=account) | Q(credit_account=account))
        .select_related("debit_account", "credit_account")
        .order_by("-created_at", "-id")
    )


def topups_for_user(*, user: AbstractBaseUser) -> QuerySet[Topup]:
    return Topup.objects.filter(user=user).order_by("-created_at")


def account_balance_from_entries(account_id: int) -> int:
    credited = Entry.objects.filter(credit_account_id=account_id).aggregate(s=Sum("amount"))["s"] or 0
    debited = Entry.objects.filter(debit_account_id=account_id).aggregate(s=Sum("amount"))["s"] or 0
    return credited - debited


def ledger_audit() -> list[str]:
    """Rebuild every balance and hold total from the entries; return each mismatch, named."""
    problems: list[str] = []
    credited = dict(Entry.objects.values_list("credit_account_id").annotate(s=Sum("amount")).order_by())
    debited = dict(Entry.objects.values_list("debit_account_id").annotate(s=Sum("amount")).order_by())
    pending = dict(
        Hold.objects.filter(status=Hold.Status.PENDING).values_list("account_id").annotate(s=Sum("amount")).order_by()
    )
    for account in Account.objects.filter(kind=Account.Kind.USER).select_related("user").iterator():
        rebuilt = credited.get(account.pk, 0) - debited.get(account.pk, 0)
        label = f"account {account.pk} ({account.user.email if account.user else account.code})"
        if rebuilt != account.balance:
            problems.append(f"{label}: stored balance {account.balance} != {rebuilt} from entries")
        if pending.get(account.pk, 0) != account.held:
            problems.append(f"{label}: stored held {account.held} != {pending.get(account.pk, 0)} from pending holds")
        if account.balance < account.held or account.held < 0:
            problems.append(f"{label}: available is negative (balance {account.balance}, held {account.held})")
    for entry in Entry.objects.iterator(chunk_size=2000):
        if entry.digest != entry.compute_digest():
            problems.append(f"entry {entry.pk} ({entry.idempotency_key}): contents changed after it was written")
        if entry.amount <= 0:
            problems.append(f"entry {entry.pk}: non-positive amount {entry.amount}")
    posted = Hold.objects.filter(status=Hold.Status.POSTED).values_list("pk", "posted_amount")
    usage = dict(Entry.objects.filter(hold__isnull=False).values_list("hold_id", "amount"))
    for hold_id, amount in posted.iterator():
        if usage.get(hold_id, 0) != amount:
            problems.append(f"hold {hold_id}: posted {amount} but its entry says {usage.get(hold_id, 0)}")
    return problems
