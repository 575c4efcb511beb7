"""Every change to a wallet goes through these functions.

Each one locks the user's wallet row, checks, and writes in one transaction, and is
idempotent: a retry with the same key returns the first outcome and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from wallet import ledger_sql
from wallet.errors import HoldNotPending, IdempotencyConflict, InsufficientCredits, WalletFrozen
from wallet.models import Account, Entry, Hold, Shortfall, Takeback

log = logging.getLogger(__name__)

# System accounts: where credits come from and where they go.
SYSTEM_STRIPE = "stripe"  # money paid in through Stripe (or the demo checkout)
SYSTEM_REVENUE = "usage"  # credits spent on model calls
SYSTEM_GRANTS = "grants"  # credits given by an operator
SYSTEM_ADJUSTMENTS = "adjustments"  # operator corrections
SYSTEM_REFUNDS = "refunds"  # credits taken back after a refund or lost dispute

EXPIRE_BATCH = 500  # holds expired per statement by the sweep

_SOURCE_FOR_KIND = {
    Entry.Kind.TOPUP: SYSTEM_STRIPE,
    Entry.Kind.GRANT: SYSTEM_GRANTS,
    Entry.Kind.ADJUSTMENT: SYSTEM_ADJUSTMENTS,
    Entry.Kind.REVERSAL: SYSTEM_ADJUSTMENTS,
    Entry.Kind.REFUND: SYSTEM_REFUNDS,
    Entry.Kind.USAGE: SYSTEM_REVENUE,
}


def credits_for_cents(cents: int) -> int:
    return cents * settings.CREDITS_PER_USD // 100


def credits_to_usd(credits: int) -> Decimal:
    return Decimal(credits) / Decimal(settings.CREDITS_PER_USD)


def cost_in_credits(*, input_tokens: int, output_tokens: int, input_price: Decimal, output_price: Decimal) -> int:
    """ceil((in x in_price + out x out_price) x CREDITS_PER_USD / 1e6), exactly."""
    micro_usd = Decimal(input_tokens) * Decimal(input_price) + Decimal(output_tokens) * Decimal(output_price)
    return math.ceil(micro_usd * settings.CREDITS_PER_USD / Decimal(1_000_000))


def system_account(code: str) -> Account:
    return Account.objects.get(pk=ledger_sql.system_account_id(code))


def wallet_for_user(*, user: AbstractBaseUser) -> Account:
    try:
        return Account.objects.get(user=user)
    except Account.DoesNotExist:
        try:
            with transaction.atomic():
                return Account.objects.create(user=user, kind=Account.Kind.USER)
        except IntegrityError:
            return Account.objects.get(user=user)


def _lock(account_id: int) -> Account:
    return Account.objects.select_for_update().get(pk=account_id)


def _check_same(existing: object, **fields: object) -> None:
    for name, value in fields.items():
        if getattr(existing, name) != value:
            raise IdempotencyConflict(
                f"Idempotency key reused with a different {name}: {getattr(existing, name)!r} != {value!r}"
            )


def _write_entry(
    *,
    user_account: Account,
    direction: str,
    amount: int,
    kind: str,
    idempotency_key: str,
    reference: str,
    memo: str,
    hold: Hold | None = None,
) -> Entry:
    """Insert an entry, move the locked wallet's balance and its chain head; the caller
    holds the lock and passes the wallet as read under it."""
    system_id = ledger_sql.system_account_id(_SOURCE_FOR_KIND[kind])
    debit_id, credit_id = (system_id, user_account.pk) if direction == "in" else (user_account.pk, system_id)
    entry = Entry(
        kind=kind,
        debit_account_id=debit_id,
        credit_account_id=credit_id,
        amount=amount,
        idempotency_key=idempotency_key,
        reference=reference,
        memo=memo[:500],
        hold=hold,
        wallet=user_account,
        created_at=timezone.now(),
    )
    entry.digest = entry.chained_digest(user_account.chain_head)
    entry.save()
    delta = amount if direction == "in" else -amount
    Account.objects.filter(pk=user_account.pk).update(balance=F("balance") + delta, chain_head=entry.digest)
    user_account.balance += delta
    user_account.chain_head = entry.digest
    return entry


def _existing_entry(idempotency_key: str, **fields: object) -> Entry | None:
    entry = Entry.objects.filter(idempotency_key=idempotency_key).first()
    if entry is not None:
        _check_same(entry, **fields)
    return entry


def wallet_credit(
    *, account: Account, amount: int, kind: str, idempotency_key: str, reference: str = "", memo: str = ""
) -> Entry:
    """Add credits to a wallet (top-up, grant, positive adjustment)."""
    if amount <= 0:
        raise ValueError("A credit must be a positive whole number of credits.")
    try:
        with transaction.atomic():
            wallet = _lock(account.pk)
            existing = _existing_entry(idempotency_key, kind=kind, amount=amount, credit_account_id=wallet.pk)
            if existing is not None:
                return existing
            return _write_entry(
                user_account=wallet,
                direction="in",
                amount=amount,
                kind=kind,
                idempotency_key=idempotency_key,
                reference=reference,
                memo=memo,
            )
    except IntegrityError:
        existing = _existing_entry(idempotency_key, kind=kind, amount=amount, credit_account_id=account.pk)
        if existing is None:
            raise
        return existing


@dataclass(frozen=True)
class Charge:
    """What a charge took: the entry for the part the wallet covered, and the rest."""

    entry: Entry | None
    shortfall: int

    @property
    def taken(self) -> int:
        return self.entry.amount if self.entry else 0


def wallet_debit(
    *,
    account: Account,
    amount: int,
    kind: str,
    idempotency_key: str,
    reference: str = "",
    memo: str = "",
    partial: bool = False,
) -> tuple[Entry | None, int]:
    """Take credits from a wallet; returns (entry, shortfall).

    With `partial`, takes what is available (down to zero, never below) and records
    the rest as a shortfall (which freezes the wallet) instead of refusing.
    """
    if amount <= 0:
        raise ValueError("A debit must be a positive whole number of credits.")
    with transaction.atomic():
        wallet = _lock(account.pk)
        if not partial:
            existing = _existing_entry(idempotency_key, kind=kind, debit_account_id=wallet.pk, amount=amount)
            if existing is not None:
                return existing, 0
            if amount > wallet.available:
                raise InsufficientCredits(needed=amount, available=wallet.available)
        charge = _charge_locked(
            wallet, amount=amount, kind=kind, idempotency_key=idempotency_key, reference=reference, memo=memo
        )
        return charge.entry, charge.shortfall


def wallet_charge(
    *,
    account: Account,
    amount: int,
    idempotency_key: str,
    reference: str = "",
    memo: str = "",
    kind: str = Entry.Kind.USAGE,
) -> Charge:
    """Charge `amount`: debit what the available balance covers, record the rest as a shortfall.

    Nothing is written off silently: a charge the wallet cannot cover (usage that
    outran its hold, or settled after its hold expired) takes the available credits
    and records the remainder as a `Shortfall`, which freezes the wallet until an
    operator resolves it, as a refund's shortfall does. A repeat with the same key
    returns the first outcome; the same key with another amount is an error.
    """
    if amount <= 0:
        raise ValueError("A charge must be a positive whole number of credits.")
    with transaction.atomic():
        wallet = _lock(account.pk)
        charge = _charge_locked(
            wallet, amount=amount, kind=kind, idempotency_key=idempotency_key, reference=reference, memo=memo
        )
    wallet_after_spend(account.pk)
    return charge


def _charge_locked(
    wallet: Account, *, amount: int, kind: str, idempotency_key: str, reference: str, memo: str
) -> Charge:
    """Take up to `amount` from the locked wallet (never below zero); the rest is a shortfall."""
    entry = Entry.objects.filter(idempotency_key=idempotency_key).first()
    recorded = Shortfall.objects.filter(reference=idempotency_key).first()
    if entry is not None or recorded is not None:
        if entry is not None:
            _check_same(entry, kind=kind, debit_account_id=wallet.pk)
        if recorded is not None:
            _check_same(recorded, account_id=wallet.pk)
        first = (entry.amount if entry else 0) + (recorded.amount if recorded else 0)
        if first != amount:
            raise IdempotencyConflict(f"Idempotency key reused with a different amount: {first} != {amount}")
        return Charge(entry, recorded.amount if recorded else 0)
    take = max(0, min(amount, wallet.available))
    entry = None
    if take:
        entry = _write_entry(
            user_account=wallet,
            direction="out",
            amount=take,
            kind=kind,
            idempotency_key=idempotency_key,
            reference=reference,
            memo=memo,
        )
    shortfall = amount - take
    if shortfall:
        Shortfall.objects.create(account=wallet, amount=shortfall, reference=idempotency_key)
        wallet_freeze(account=wallet, reason=f"{shortfall:,} credits of {kind} were not covered ({idempotency_key})")
        log.warning("charge shortfall", extra={"account_id": wallet.pk, "shortfall": shortfall, "key": idempotency_key})
    return Charge(entry, shortfall)


def wallet_hold(
    *,
    account: Account,
    amount: int,
    idempotency_key: str,
    reference: str = "",
    ttl_seconds: int | None = None,
    attach: tuple[str, int] | None = None,
) -> Hold:
    """Reserve credits before spending them. Raises InsufficientCredits or WalletFrozen.

    A refusal for lack of funds is recorded under the key, so a retry with the same
    key is refused the same way even after a top-up. `attach=(table, row id)`: the
    pending hold becomes that row's `hold_id` in the same write (a chat reply's hold,
    so the hold is the send's last statement).
    """
    if amount <= 0:
        raise ValueError("A hold must be a positive whole number of credits.")
    ttl = settings.HOLD_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    if ledger_sql.enabled():
        return _hold_in_one_statement(
            account=account, amount=amount, idempotency_key=idempotency_key, reference=reference, ttl=ttl, attach=attach
        )
    try:
        with transaction.atomic():
            wallet = _lock(account.pk)
            hold = Hold.objects.filter(idempotency_key=idempotency_key).first()
            if hold is None:
                if wallet.frozen:
                    raise WalletFrozen(wallet.frozen_reason)
                refused = wallet.available < amount
                hold = Hold.objects.create(
                    account=wallet,
                    amount=amount,
                    idempotency_key=idempotency_key,
                    reference=reference,
                    expires_at=timezone.now() + dt.timedelta(seconds=ttl),
                    status=Hold.Status.REJECTED if refused else Hold.Status.PENDING,
                    reason=f"only {wallet.available} credits available" if refused else "",
                    resolved_at=timezone.now() if refused else None,
                )
                if not refused:
                    Account.objects.filter(pk=wallet.pk).update(held=F("held") + amount)
            _attach(hold, attach)
    except IntegrityError:
        hold = Hold.objects.filter(idempotency_key=idempotency_key).first()
        if hold is None:
            raise
        _attach(hold, attach)
    _check_same(hold, account_id=account.pk, amount=amount)
    if hold.status == Hold.Status.REJECTED:
        raise InsufficientCredits(needed=amount, available=_available_now(account.pk))
    return hold


def _attach(hold: Hold, attach: tuple[str, int] | None) -> None:
    if attach is not None and hold.status == Hold.Status.PENDING:
        table, row_id = attach
        if table not in ledger_sql.ATTACHABLE:
            raise ValueError(f"a hold can't be attached to {table!r}")
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET hold_id = %s WHERE id = %s", [hold.pk, row_id])


def _hold_in_one_statement(
    *, account: Account, amount: int, idempotency_key: str, reference: str, ttl: int, attach: tuple[str, int] | None
) -> Hold:
    attempt = ledger_sql.hold(
        account_id=account.pk,
        amount=amount,
        idempotency_key=idempotency_key,
        reference=reference,
        ttl_seconds=ttl,
        attach=attach,
    )
    hold = attempt.hold
    if hold is None:
        # The key was used before (a repeat returns its first outcome), or the wallet is frozen.
        hold = Hold.objects.filter(idempotency_key=idempotency_key).first()
        if hold is None:
            if attempt.frozen_reason:
                raise WalletFrozen(attempt.frozen_reason)
            raise RuntimeError(f"hold {idempotency_key!r} was neither placed nor found")
        _check_same(hold, account_id=account.pk, amount=amount)
        if hold.status == Hold.Status.REJECTED:
            raise InsufficientCredits(needed=amount, available=_available_now(account.pk))
        _attach(hold, attach)
        return hold
    if hold.status == Hold.Status.REJECTED:
        raise InsufficientCredits(needed=amount, available=attempt.available)
    return hold


def _available_now(account_id: int) -> int:
    account = Account.objects.get(pk=account_id)
    return account.available


def wallet_after_spend(account_id: int) -> None:
    """Once the spend commits, see whether the wallet's automatic top-up is due.

    After commit, never inside the spend's transaction: a top-up calls Stripe. Robust: a
    failure here never undoes or fails the spend (the worker sweep is the backstop).
    """

    def check() -> None:
        from wallet.autotopups import autotopup_after_spend

        autotopup_after_spend(account_id=account_id)

    transaction.on_commit(check, robust=True)


def wallet_post(*, hold: Hold, amount: int, memo: str = "", reference: str | None = None) -> Hold:
    """Settle a hold at `amount`; the rest of the hold is released.

    Above the hold, the hold is posted in full and the excess is charged like
    `wallet_charge` (available credits, then a shortfall), in the same transaction.
    An expired or voided hold can't be posted: late settlement uses `wallet_charge`.
    """
    if amount < 0:
        raise ValueError("A posted amount cannot be negative.")
    posted = _wallet_post(hold=hold, amount=amount, memo=memo, reference=reference)
    if ledger_sql.autotopup_on(posted):
        wallet_after_spend(hold.account_id)
    return posted


def _wallet_post(*, hold: Hold, amount: int, memo: str, reference: str | None) -> Hold:
    if ledger_sql.enabled() and amount <= hold.amount:
        posted = ledger_sql.post(
            held=hold,
            amount=amount,
            revenue_id=ledger_sql.system_account_id(SYSTEM_REVENUE),
            reference=hold.reference if reference is None else reference,
            memo=memo[:500],
        )
        if posted is not None:
            return posted
        # Not a pending, unexpired hold: the path below says which, with the same rules.
    with transaction.atomic():
        current = Hold.objects.select_for_update().get(pk=hold.pk)  # hold, then wallet: one lock order
        _lock(current.account_id)
        if current.status == Hold.Status.POSTED:
            if current.posted_amount + current.excess != amount:
                raise IdempotencyConflict(
                    f"Hold {current.pk} was already posted at {current.posted_amount + current.excess}, not {amount}."
                )
            return current
        if current.status != Hold.Status.PENDING:
            raise HoldNotPending(f"Hold {current.pk} is {current.status} and cannot be posted.")
        if _expired(current):
            # Commit the expiry, then refuse: an expired hold can't be posted.
            _release(current, Hold.Status.EXPIRED, "expired before it was posted")
            expired = True
        else:
            expired = False
            _post_pending(current, amount=amount, memo=memo, reference=reference)
    if expired:
        raise HoldNotPending(f"Hold {current.pk} expired before it was posted.")
    return current


def _expired(hold: Hold) -> bool:
    if ledger_sql.enabled():  # the database's clock, as its one-statement path uses
        return not Hold.objects.filter(pk=hold.pk, expires_at__gt=Now()).exists()
    return hold.expires_at <= timezone.now()


def _post_pending(current: Hold, *, amount: int, memo: str, reference: str | None) -> None:
    posted = min(amount, current.amount)
    excess = amount - posted
    wallet = Account.objects.get(pk=current.account_id)
    Account.objects.filter(pk=wallet.pk).update(held=F("held") - current.amount)
    wallet.held -= current.amount
    reference = current.reference if reference is None else reference
    if posted:
        _write_entry(
            user_account=wallet,
            direction="out",
            amount=posted,
            kind=Entry.Kind.USAGE,
            idempotency_key=f"hold:{current.pk}:post",
            reference=reference,
            memo=memo,
            hold=current,
        )
    current.status = Hold.Status.POSTED
    current.posted_amount = posted
    current.excess = excess
    current.resolved_at = timezone.now()
    current.save(update_fields=["status", "posted_amount", "excess", "resolved_at"])
    if excess:
        _charge_locked(
            wallet,
            amount=excess,
            kind=Entry.Kind.USAGE,
            idempotency_key=f"hold:{current.pk}:excess",
            reference=reference,
            memo=f"{memo} (above its hold of {current.amount})".strip(),
        )
    _collect_owed(wallet.pk)


def _release(hold: Hold, status: str, reason: str) -> None:
    Account.objects.filter(pk=hold.account_id).update(held=F("held") - hold.amount)
    hold.status = status
    hold.reason = reason[:300]
    hold.resolved_at = timezone.now()
    hold.save(update_fields=["status", "reason", "resolved_at"])
    _collect_owed(hold.account_id)


def wallet_void(*, hold: Hold, reason: str = "") -> Hold:
    """Release a hold without charging. Voiding a voided or expired hold is a no-op."""
    if ledger_sql.enabled():
        voided = ledger_sql.void(held=hold, reason=reason[:300])
        if voided is not None:
            return voided
    with transaction.atomic():
        current = Hold.objects.select_for_update().get(pk=hold.pk)
        _lock(current.account_id)
        if current.status in (Hold.Status.VOIDED, Hold.Status.EXPIRED, Hold.Status.REJECTED):
            return current
        if current.status == Hold.Status.POSTED:
            raise HoldNotPending(f"Hold {current.pk} is already posted and cannot be voided.")
        _release(current, Hold.Status.VOIDED, reason)
        return current


def holds_expire(*, now: dt.datetime | None = None) -> int:
    """Void every pending hold past its time limit; returns how many expired."""
    now = now or timezone.now()
    expired = 0
    if ledger_sql.enabled():
        while True:  # one statement per batch of holds
            count = ledger_sql.expire_batch(now=now, batch=EXPIRE_BATCH)
            expired += count
            if count < EXPIRE_BATCH:
                break
        # The batches release holds without looking at take-backs; collect what those
        # wait for here (also what a post raced past as the take-back arrived).
        for account_id in (
            Takeback.objects.filter(resolved_at__isnull=True).values_list("account_id", flat=True).distinct()
        ):
            with transaction.atomic():
                _lock(account_id)
                _collect_owed(account_id)
        return expired
    for hold_id, account_id in Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lte=now).values_list(
        "pk", "account_id"
    ):
        with transaction.atomic():
            hold = Hold.objects.select_for_update().get(pk=hold_id)
            _lock(account_id)
            if hold.status == Hold.Status.PENDING and hold.expires_at <= now:
                _release(hold, Hold.Status.EXPIRED, "not settled within its time limit")
                expired += 1
    return expired


@dataclass(frozen=True)
class TakeBack:
    """What a take-back did: taken now, owed until replies settle, and already spent."""

    taken: int
    deferred: int
    shortfall: int


def wallet_take_back(*, account: Account, amount: int, idempotency_key: str, reference: str, memo: str) -> TakeBack:
    """Take back `amount` credits after a refund or lost dispute, never below zero.

    What the available balance covers is taken now. Credits held by replies in flight
    are neither available nor spent yet: up to what the holds reserve (less what other
    take-backs already wait for) is owed and taken as the holds resolve. Only the rest,
    credits already spent, is a shortfall now (recorded, and the wallet frozen).
    A repeat with the same key returns the first outcome.
    """
    if amount <= 0:
        raise ValueError("A take-back must be a positive whole number of credits.")
    with transaction.atomic():
        wallet = _lock(account.pk)
        entry = Entry.objects.filter(idempotency_key=idempotency_key).first()
        owed = Takeback.objects.filter(key=idempotency_key).first()
        recorded = Shortfall.objects.filter(reference=idempotency_key).first()
        if entry or owed or recorded:
            if entry is not None:
                _check_same(entry, kind=Entry.Kind.REFUND, debit_account_id=wallet.pk)
            first = (entry.amount if entry else 0) + (owed.amount if owed else 0) + (recorded.amount if recorded else 0)
            if first != amount:
                raise IdempotencyConflict(f"Idempotency key reused with a different amount: {first} != {amount}")
            return TakeBack(
                entry.amount if entry else 0, owed.amount if owed else 0, recorded.amount if recorded else 0
            )
        take = max(0, min(amount, wallet.available))
        if take:
            _write_entry(
                user_account=wallet,
                direction="out",
                amount=take,
                kind=Entry.Kind.REFUND,
                idempotency_key=idempotency_key,
                reference=reference,
                memo=memo,
            )
        waiting = sum(
            Takeback.objects.filter(account=wallet, resolved_at__isnull=True).values_list("remaining", flat=True)
        )
        deferred = max(0, min(amount - take, wallet.held - waiting))
        if deferred:
            Takeback.objects.create(
                account=wallet,
                key=idempotency_key,
                reference=reference,
                memo=memo[:300],
                amount=deferred,
                remaining=deferred,
            )
        shortfall = amount - take - deferred
        if shortfall:
            Shortfall.objects.create(account=wallet, amount=shortfall, reference=idempotency_key)
            wallet_freeze(account=wallet, reason=f"{shortfall:,} credits taken back by {reference} were already spent")
            log.warning(
                "clawback shortfall", extra={"account_id": wallet.pk, "shortfall": shortfall, "key": idempotency_key}
            )
        return TakeBack(take, deferred, shortfall)


def _collect_owed(account_id: int) -> None:
    """A hold just resolved on the locked wallet: take what take-backs still owe from what it released.

    What is still owed beyond what the pending holds could yet release was spent (the
    hold was posted): it becomes a shortfall, and the wallet is frozen.
    """
    owed = list(Takeback.objects.filter(account_id=account_id, resolved_at__isnull=True).order_by("pk"))
    if not owed:
        return
    wallet = Account.objects.get(pk=account_id)
    coverable = wallet.held  # what the holds still pending may release, for the take-backs in order
    for item in owed:
        take = max(0, min(item.remaining, wallet.available))
        if take:
            item.parts += 1
            _write_entry(
                user_account=wallet,
                direction="out",
                amount=take,
                kind=Entry.Kind.REFUND,
                idempotency_key=f"{item.key}:part:{item.parts}",
                reference=item.reference,
                memo=f"{item.memo} (taken as a reply settled)"[:500],
            )
            item.remaining -= take
        spent = max(0, item.remaining - max(0, coverable))
        if spent:
            item.parts += 1
            item.remaining -= spent
            item.shortfall += spent
            Shortfall.objects.create(account=wallet, amount=spent, reference=f"{item.key}:spent:{item.parts}")
            wallet_freeze(account=wallet, reason=f"{spent:,} credits taken back by {item.reference} were already spent")
            log.warning("clawback shortfall", extra={"account_id": wallet.pk, "shortfall": spent, "key": item.key})
        coverable -= item.remaining
        if item.remaining == 0:
            item.resolved_at = timezone.now()
        item.save(update_fields=["remaining", "parts", "shortfall", "resolved_at"])


def wallet_freeze(*, account: Account, reason: str) -> None:
    Account.objects.filter(pk=account.pk).update(frozen_reason=reason[:200])


def wallet_unfreeze(*, account: Account) -> None:
    Account.objects.filter(pk=account.pk).update(frozen_reason="")


def wallet_resolve_freeze(*, account: Account, actor: str) -> int:
    """An operator reviewed a frozen wallet: unfreeze it and mark its shortfalls resolved.

    Resolved shortfalls no longer hold a freeze, so a later won dispute lifts its own
    freeze instead of leaving the wallet frozen for good. Returns how many were resolved.
    """
    with transaction.atomic():
        wallet = _lock(account.pk)
        resolved = Shortfall.objects.filter(account=wallet, resolved_at__isnull=True).update(
            resolved_at=timezone.now(), resolution=f"resolved by {actor}"[:300]
        )
        wallet_unfreeze(account=wallet)
    return resolved


def wallet_grant(*, account: Account, amount: int, reason: str, actor: str, idempotency_key: str) -> Entry | None:
    """An operator's grant (amount > 0) or correction (amount < 0), with a required reason."""
    if not reason.strip():
        raise ValueError("A grant or adjustment needs a reason.")
    if amount == 0:
        raise ValueError("The amount cannot be zero.")
    memo = f"{reason.strip()} (by {actor})"
    if amount > 0:
        return wallet_credit(
            account=account,
            amount=amount,
            kind=Entry.Kind.GRANT,
            idempotency_key=idempotency_key,
            reference=f"admin:{actor}",
            memo=memo,
        )
    entry, _ = wallet_debit(
        account=account,
        amount=-amount,
        kind=Entry.Kind.ADJUSTMENT,
        idempotency_key=idempotency_key,
        reference=f"admin:{actor}",
        memo=memo,
    )
    return entry
