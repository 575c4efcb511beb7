"""Top-ups: buying credits through Stripe Checkout (or the demo checkout), and taking
them back after a refund or a lost dispute.

Money only moves through wallet/services.py. Each function here that writes locks the
top-up row first and the wallet second (always in that order), and none of them holds
a transaction open across a call to Stripe: callers fetch from Stripe first and pass
the facts in.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urljoin

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from wallet import stripe_client
from wallet.alerts import topup_receipt_queue
from wallet.models import Account, Entry, Shortfall, Topup
from wallet.services import (
    credits_for_cents,
    wallet_credit,
    wallet_for_user,
    wallet_freeze,
    wallet_resolve_freeze,
    wallet_take_back,
    wallet_unfreeze,
)

log = logging.getLogger(__name__)

PACKS_USD = (1, 5, 20)
DEMO_SESSION_PREFIX = "demo_"
# A Checkout Session expires 24 hours after it was created unless told otherwise
# (https://docs.stripe.com/api/checkout/sessions/create, `expires_at`); the demo checkout
# keeps the same rule.
CHECKOUT_LIFETIME = dt.timedelta(hours=24)


class TopupAmountInvalid(ValueError):
    """An amount a person typed that can't be bought; the message says why, for the form."""


class TopupMismatch(Exception):
    """A paid session that does not match its top-up (amount, currency or owner): not credited."""


class TopupsUnavailable(Exception):
    """No top-up can be started on this server just now; the message says why, for the page."""


class TopupWalletFrozen(TopupsUnavailable):
    """This wallet is frozen (a dispute or an unresolved shortfall): it takes no top-ups."""


def topups_unavailable_reason() -> str:
    """Why this server starts no top-ups at all, or "" when it does."""
    if not settings.TOPUPS_ENABLED:
        return "Top-ups are turned off on this server, so no payment can be started. Your balance is unchanged."
    if not stripe_client.stripe_enabled() and not settings.DEMO_ALLOWED:
        # Unreachable through settings (production refuses to start like this), kept as a second lock.
        return "Top-ups are not available: this server has no payment provider configured."
    return ""


def demo_checkout_enabled() -> bool:
    """The demo checkout credits wallets for nothing: only outside production, and without Stripe."""
    return settings.DEMO_ALLOWED and settings.TOPUPS_ENABLED and not stripe_client.stripe_enabled()


_NUMBER_HELP = "Enter the amount as a number of US dollars, for example 10 or 12.50."
# One separator followed by exactly three digits: "1,000" is a thousand dollars to some
# and one dollar to others (decimal comma), "1.000" the other way round. Refused.
_AMBIGUOUS = re.compile(r"[+-]?[1-9]\d*[.,]\d{3}")
_AMOUNT_FORMS = (
    (re.compile(r"[+-]?\d+(?:\.\d+)?"), None),  # 12, 12.5, 12.50 (0.001: whole cents, below)
    (re.compile(r"[+-]?\d+,\d{1,2}"), ","),  # 2,50 9,99 2,5: a decimal comma
    (re.compile(r"[+-]?\d{1,3}(?:,\d{3})+\.\d{1,2}|[+-]?\d{1,3}(?:,\d{3}){2,}"), "us"),  # 1,000.50
    (re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+,\d{1,2}|[+-]?\d{1,3}(?:\.\d{3}){2,}"), "eu"),  # 1.000,50
)


def _amount_text(value: object) -> str:
    """A typed amount as plain decimal text ("2,50" -> "2.50"); never multiplies.

    A decimal comma is read as one ("2,50" is $2.50) and grouped thousands are read in
    either convention when the grouping shows which it is ("1,000.50", "1.000,50"); a
    lone separator with three digits after it ("1,000", "1.000") could be either, and
    is refused rather than guessed.
    """
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)  # a JSON number: no separators to read
    text = str(value if value is not None else "").strip().removeprefix("$").strip()
    if not text:
        return ""
    if _AMBIGUOUS.fullmatch(text):
        raise TopupAmountInvalid(
            f"We can't tell whether {text} means thousands or a decimal part. "
            "Write the amount without a thousands separator, for example 1000 or 12.50."
        )
    for pattern, convention in _AMOUNT_FORMS:
        if pattern.fullmatch(text):
            if convention == ",":
                return text.replace(",", ".")
            if convention == "us":
                return text.replace(",", "")
            if convention == "eu":
                return text.replace(".", "").replace(",", ".")
            return text
    raise TopupAmountInvalid(_NUMBER_HELP)


def topup_amount_cents(value: object) -> int:
    """Whole cents from a dollar amount as typed ("5", "12.50", "2,50", "$1,000.00"); clear errors otherwise."""
    text = _amount_text(value)
    if not text:
        raise TopupAmountInvalid("Enter an amount in US dollars, for example 10 or 12.50.")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise TopupAmountInvalid(_NUMBER_HELP)
    if not amount.is_finite():
        raise TopupAmountInvalid(_NUMBER_HELP)
    low, high = settings.TOPUP_MIN_CENTS, settings.TOPUP_MAX_CENTS
    # The range is checked before any arithmetic: 100 x "1e999999999" overflows Decimal.
    if amount < Decimal(low) / 100:
        raise TopupAmountInvalid(f"The smallest top-up is ${low / 100:,.2f}.")
    if amount > Decimal(high) / 100:
        raise TopupAmountInvalid(f"The largest top-up is ${high / 100:,.2f}.")
    if amount * 100 != (amount * 100).to_integral_value():
        raise TopupAmountInvalid("Use whole cents: at most two digits after the decimal point.")
    return int(amount * 100)


def _idempotency_key(topup: Topup) -> str:
    # Stable for the top-up (a retry sends the same key), and not just its id: ids repeat
    # across databases (a reset development database) while Stripe keeps keys for a day.
    return f"panels-topup-{topup.pk}-{int(topup.created_at.timestamp() * 1_000_000)}-checkout"


def topup_create(*, user: AbstractBaseUser, amount_cents: int, base_url: str) -> Topup:
    """Record a top-up and open its checkout: a Stripe Checkout Session, or the demo page.

    Raises TopupsUnavailable when this server or this wallet takes no top-ups, and
    StripeUnavailable when Stripe can't open the session (the top-up is then failed).
    """
    if not settings.TOPUP_MIN_CENTS <= amount_cents <= settings.TOPUP_MAX_CENTS:
        raise TopupAmountInvalid("The amount is outside the allowed range.")
    if reason := topups_unavailable_reason():
        raise TopupsUnavailable(reason)
    account = wallet_for_user(user=user)
    if account.frozen:
        # Money paid into a frozen wallet could not be spent, and a chargeback under
        # review should not grow: nothing is charged until an operator resolves it.
        raise TopupWalletFrozen(
            f"Your wallet is frozen ({account.frozen_reason}), so it can't be topped up until this is resolved. "
            "Nothing was charged."
        )
    provider = Topup.Provider.STRIPE if stripe_client.stripe_enabled() else Topup.Provider.DEMO
    if provider == Topup.Provider.DEMO and not demo_checkout_enabled():
        raise TopupsUnavailable("Top-ups are not available: this server has no payment provider configured.")
    topup = Topup.objects.create(
        user=user,
        account=account,
        provider=provider,
        amount_cents=amount_cents,
        credits=credits_for_cents(amount_cents),
    )
    if provider == Topup.Provider.DEMO:
        topup.checkout_session_id = f"{DEMO_SESSION_PREFIX}{topup.pk}"
        topup.checkout_url = urljoin(base_url, reverse("topup_demo_pay", args=[topup.pk]))
        topup.save(update_fields=["checkout_session_id", "checkout_url", "updated_at"])
        return topup
    done = urljoin(base_url, reverse("topup_done", args=[topup.pk]))
    try:
        # No transaction is open here: the top-up row above is already committed.
        session = stripe_client.checkout_session_create(
            amount_cents=amount_cents,
            credits=topup.credits,
            topup_id=topup.pk,
            user_id=user.pk,
            email=getattr(user, "email", "") or "",
            success_url=done + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=urljoin(base_url, reverse("topup")) + f"?cancelled={topup.pk}",
            idempotency_key=_idempotency_key(topup),
        )
    except stripe_client.StripeUnavailable:
        Topup.objects.filter(pk=topup.pk, status=Topup.Status.CREATED).update(
            status=Topup.Status.FAILED, updated_at=timezone.now()
        )
        raise
    topup.checkout_session_id = session.id
    topup.checkout_url = session.url
    topup.save(update_fields=["checkout_session_id", "checkout_url", "updated_at"])
    return topup


@dataclass(frozen=True)
class FulfilResult:
    topup: Topup | None
    credited: bool  # credits were added by this call
    outcome: str


def _topup_for_session(*, session_id: str, metadata: dict[str, str]) -> Topup | None:
    """The top-up a checkout session pays for, locked; links the session id if it was never stored."""
    topup = Topup.objects.select_for_update().filter(checkout_session_id=session_id).first()
    if topup is not None:
        return topup
    topup_id = (metadata or {}).get("topup_id", "")
    if not topup_id.isdigit():
        return None
    topup = Topup.objects.select_for_update().filter(pk=int(topup_id)).first()
    if topup is None:
        return None
    if topup.checkout_session_id and topup.checkout_session_id != session_id:
        raise TopupMismatch(f"Top-up {topup.pk} belongs to session {topup.checkout_session_id}, not {session_id}.")
    # The process that opened the session stopped before storing its id.
    topup.checkout_session_id = session_id
    topup.save(update_fields=["checkout_session_id", "updated_at"])
    return topup


def _check_matches(topup: Topup, *, amount_total: int | None, currency: str, metadata: dict[str, str]) -> None:
    if amount_total is not None and amount_total != topup.amount_cents:
        raise TopupMismatch(f"Top-up {topup.pk} is {topup.amount_cents} cents but the session paid {amount_total}.")
    if currency and currency.lower() != settings.STRIPE_CURRENCY:
        raise TopupMismatch(f"Top-up {topup.pk} was paid in {currency}, not {settings.STRIPE_CURRENCY}.")
    owner = (metadata or {}).get("user_id")
    if owner and owner != str(topup.user_id):
        raise TopupMismatch(f"Top-up {topup.pk} belongs to user {topup.user_id}, not {owner}.")


def topup_fulfil(
    *,
    session_id: str,
    payment_status: str,
    payment_intent_id: str = "",
    amount_total: int | None = None,
    currency: str = "",
    metadata: dict[str, str] | None = None,
) -> FulfilResult:
    """Credit the top-up paid by a checkout session, exactly once, whoever calls first.

    The success page, the webhook, the reconcile command and the demo checkout all come
    here. The ledger entry's key (`topup:<session id>`) makes the credit happen once; the
    top-up row lock makes concurrent callers agree on who did it.
    """
    metadata = metadata or {}
    with transaction.atomic():
        topup = _topup_for_session(session_id=session_id, metadata=metadata)
        if topup is None:
            return FulfilResult(None, False, f"no top-up for session {session_id}")
        if topup.provider == Topup.Provider.DEMO and not settings.DEMO_ALLOWED:
            # A demo top-up is paid by nobody: where the demo is not allowed it is never credited.
            return FulfilResult(topup, False, f"top-up {topup.pk} is a demo top-up; not credited here")
        _check_matches(topup, amount_total=amount_total, currency=currency, metadata=metadata)
        if payment_intent_id and not topup.payment_intent_id:
            topup.payment_intent_id = payment_intent_id
            topup.save(update_fields=["payment_intent_id", "updated_at"])
        if topup.credited_at is not None:
            return FulfilResult(topup, False, f"top-up {topup.pk} already credited")
        if payment_status != "paid":
            if topup.status == Topup.Status.CREATED:
                topup.status = Topup.Status.PENDING
                topup.save(update_fields=["status", "updated_at"])
            return FulfilResult(topup, False, f"top-up {topup.pk} awaiting payment ({payment_status or 'unknown'})")
        wallet_credit(
            account=topup.account,
            amount=topup.credits,
            kind=Entry.Kind.TOPUP,
            idempotency_key=f"topup:{session_id}",
            reference=f"topup:{topup.pk}",
            memo=f"Top-up ${topup.amount_usd}",
        )
        topup.credited_at = timezone.now()
        credited_id = topup.pk
        transaction.on_commit(lambda: topup_receipt_queue(topup_id=credited_id))
        if topup.status in (
            Topup.Status.CREATED,
            Topup.Status.PENDING,
            Topup.Status.FAILED,
            Topup.Status.EXPIRED,
            Topup.Status.CANCELLED,
        ):
            topup.status = Topup.Status.PAID
        topup.save(update_fields=["credited_at", "status", "updated_at"])
    log.info("top-up credited", extra={"topup_id": topup.pk, "credits": topup.credits, "session": session_id})
    return FulfilResult(topup, True, f"top-up {topup.pk} credited {topup.credits} credits")


def topup_demo_pay(*, topup: Topup) -> FulfilResult:
    """The demo checkout's "Pay" button: the same fulfilment as Stripe's, with no card.

    Refused (TopupsUnavailable) wherever the demo is not allowed, whatever the caller.
    """
    if topup.provider != Topup.Provider.DEMO or not demo_checkout_enabled():
        raise TopupsUnavailable("There is no demo checkout on this server.")
    return topup_fulfil(
        session_id=topup.checkout_session_id or "",
        payment_status="paid",
        amount_total=topup.amount_cents,
        currency=settings.STRIPE_CURRENCY,
        metadata={"topup_id": str(topup.pk), "user_id": str(topup.user_id)},
    )


def topup_fulfil_session(*, session: stripe_client.CheckoutSession) -> FulfilResult:
    """`topup_fulfil` for a session as Stripe returned it."""
    return topup_fulfil(
        session_id=session.id,
        payment_status=session.payment_status,
        payment_intent_id=session.payment_intent_id,
        amount_total=session.amount_total,
        currency=session.currency,
        metadata=session.metadata,
    )


def topup_mark_failed(*, session_id: str, expired: bool = False) -> Topup | None:
    """An asynchronous payment failed, or the session expired unpaid: nothing will be credited."""
    status = Topup.Status.EXPIRED if expired else Topup.Status.FAILED
    # Compare-and-swap: a top-up already credited keeps its status.
    updated = Topup.objects.filter(
        checkout_session_id=session_id,
        credited_at__isnull=True,
        status__in=[Topup.Status.CREATED, Topup.Status.PENDING],
    ).update(status=status, updated_at=timezone.now())
    topup = Topup.objects.filter(checkout_session_id=session_id).first()
    if updated:
        log.info("top-up not paid", extra={"topup_id": topup.pk if topup else None, "status": status})
    return topup


def topup_cancel(*, topup: Topup) -> Topup:
    """The buyer came back from checkout without paying: close the checkout, so it can't
    be paid later, and mark the top-up cancelled. A session that was paid after all is
    credited instead. Call it with no transaction open (it may call Stripe)."""
    if topup.status != Topup.Status.CREATED or topup.credited_at is not None:
        return topup
    if topup.provider == Topup.Provider.STRIPE and topup.checkout_session_id:
        session = stripe_client.checkout_session_expire(
            session_id=topup.checkout_session_id,
            idempotency_key=_idempotency_key(topup).removesuffix("-checkout") + "-expire",
        )
        if session.status == "complete":
            topup_fulfil_session(session=session)
            topup.refresh_from_db()
            return topup
    # Compare-and-swap: a payment that lands meanwhile keeps its status.
    Topup.objects.filter(pk=topup.pk, status=Topup.Status.CREATED, credited_at__isnull=True).update(
        status=Topup.Status.CANCELLED, updated_at=timezone.now()
    )
    topup.refresh_from_db()
    return topup


def topups_expire_stale(*, user: AbstractBaseUser) -> int:
    """Mark the user's checkouts past their 24 hours expired (Stripe's own
    `checkout.session.expired` event does the same when it arrives). A payment that
    Stripe still reports later is credited all the same (`topup_fulfil`)."""
    return Topup.objects.filter(
        user=user,
        status=Topup.Status.CREATED,
        credited_at__isnull=True,
        created_at__lt=timezone.now() - CHECKOUT_LIFETIME,
    ).update(status=Topup.Status.EXPIRED, updated_at=timezone.now())


def topup_link_payment(
    *, topup: Topup, payment_intent_id: str = "", charge_id: str = "", receipt_url: str = ""
) -> None:
    """Remember the payment's ids and receipt on the top-up (fills blanks only)."""
    changes: dict[str, Any] = {}
    if payment_intent_id and not topup.payment_intent_id:
        changes["payment_intent_id"] = payment_intent_id
    if charge_id and not topup.charge_id:
        changes["charge_id"] = charge_id
    if receipt_url and not topup.receipt_url:
        changes["receipt_url"] = receipt_url
    if changes:
        Topup.objects.filter(pk=topup.pk).update(**changes, updated_at=timezone.now())
        for name, value in changes.items():
            setattr(topup, name, value)


def topup_fetch_receipt(*, topup: Topup) -> None:
    """Fetch the charge id and receipt URL from Stripe when still unknown; best effort.

    Call with no transaction open: this is a network call.
    """
    if topup.provider != Topup.Provider.STRIPE or not topup.payment_intent_id or topup.receipt_url:
        return
    if not stripe_client.stripe_enabled():
        return
    try:
        info = stripe_client.payment_info(payment_intent_id=topup.payment_intent_id)
    except stripe_client.StripeUnavailable as exc:
        log.warning("receipt lookup failed", extra={"topup_id": topup.pk, "error": str(exc)})
        return
    topup_link_payment(topup=topup, charge_id=info.charge_id, receipt_url=info.receipt_url)


def topup_for_payment(
    *, payment_intent_id: str = "", charge_id: str = "", metadata: dict | None = None
) -> Topup | None:
    """The top-up behind a charge, refund or dispute, from what the event names."""
    topup_id = str((metadata or {}).get("topup_id", ""))
    if topup_id.isdigit():
        topup = Topup.objects.filter(pk=int(topup_id)).first()
        if topup is not None and (not payment_intent_id or topup.payment_intent_id in ("", payment_intent_id)):
            return topup
    lookups = Q()
    if payment_intent_id:
        lookups |= Q(payment_intent_id=payment_intent_id)
    if charge_id:
        lookups |= Q(charge_id=charge_id)
    if not lookups:
        return None
    return Topup.objects.filter(lookups).first()


def _status_after_refunds(topup: Topup) -> str:
    if topup.dispute_status == Topup.DisputeStatus.OPEN:
        return Topup.Status.DISPUTED
    if topup.dispute_status == Topup.DisputeStatus.LOST:
        return Topup.Status.DISPUTE_LOST
    if topup.refunded_cents >= topup.amount_cents:
        return Topup.Status.REFUNDED
    if topup.refunded_cents > 0:
        return Topup.Status.PARTIALLY_REFUNDED
    return Topup.Status.PAID


@dataclass(frozen=True)
class ClawbackResult:
    taken: int  # credits taken from the wallet by this call
    shortfall: int  # credits that were already spent and could not be taken
    deferred: int = 0  # credits held by replies in flight, taken as their holds resolve


def _credits_sold(topup: Topup, cents: int) -> int:
    """The credits `cents` of this top-up bought, at the rate it was sold at (not today's)."""
    return topup.credits * min(cents, topup.amount_cents) // topup.amount_cents


def _take_back(*, topup: Topup, credits: int, key: str, memo: str) -> ClawbackResult:
    """Take up to `credits` from the top-up's wallet (never below zero); a shortfall freezes it.

    Credits that replies in flight hold are taken as those holds resolve (see
    `wallet_take_back`). The caller holds the top-up row lock inside a transaction.
    """
    credits = min(credits, topup.credits - topup.clawed_back_credits)
    if credits <= 0:
        return ClawbackResult(0, 0)
    result = wallet_take_back(
        account=topup.account, amount=credits, idempotency_key=key, reference=f"topup:{topup.pk}", memo=memo
    )
    topup.clawed_back_credits += credits
    if result.shortfall:
        log.warning("refunded top-up already spent", extra={"topup_id": topup.pk, "shortfall": result.shortfall})
    return ClawbackResult(result.taken, result.shortfall, result.deferred)


def topup_refund(*, topup: Topup, amount_refunded_cents: int, refund_id: str = "") -> ClawbackResult:
    """Apply a charge's cumulative refunded amount: take back only the part not taken yet.

    `amount_refunded` on a charge is cumulative, so redeliveries, out-of-order events and
    a partial refund followed by a full one each take back only what is new.
    """
    with transaction.atomic():
        current = Topup.objects.select_for_update().get(pk=topup.pk)
        amount = min(amount_refunded_cents, current.amount_cents)
        if amount <= current.refunded_cents:
            return ClawbackResult(0, 0)
        credits = _credits_sold(current, amount) - _credits_sold(current, current.refunded_cents)
        result = _take_back(
            topup=current,
            credits=credits,
            key=f"topup:{current.pk}:refund:{amount}",
            memo=f"Refund of top-up ${current.amount_usd} (${amount / 100:.2f} refunded in all) {refund_id}".strip(),
        )
        current.refunded_cents = amount
        current.status = _status_after_refunds(current)
        current.save(update_fields=["refunded_cents", "clawed_back_credits", "status", "updated_at"])
    return result


def topup_dispute_opened(*, topup: Topup, dispute_id: str) -> bool:
    """A chargeback was opened: freeze the wallet (no new chats) until it closes. True if it froze."""
    with transaction.atomic():
        current = Topup.objects.select_for_update().get(pk=topup.pk)
        if current.dispute_id == dispute_id and current.dispute_status:
            # Already opened, or closed before this (late) event arrived.
            return False
        current.dispute_id = dispute_id
        current.dispute_status = Topup.DisputeStatus.OPEN
        current.status = Topup.Status.DISPUTED
        current.save(update_fields=["dispute_id", "dispute_status", "status", "updated_at"])
        wallet_freeze(account=current.account, reason=f"the payment for top-up {current.pk} is disputed")
    return True


def topup_dispute_closed(*, topup: Topup, dispute_id: str, won: bool, amount_cents: int) -> ClawbackResult:
    """Won: lift the dispute's freeze. Lost: take back what it covered; the wallet stays
    frozen for an operator to review, as after any chargeback."""
    with transaction.atomic():
        current = Topup.objects.select_for_update().get(pk=topup.pk)
        if current.dispute_id == dispute_id and current.dispute_status in (
            Topup.DisputeStatus.WON,
            Topup.DisputeStatus.LOST,
        ):
            return ClawbackResult(0, 0)
        current.dispute_id = dispute_id
        result = ClawbackResult(0, 0)
        if won:
            current.dispute_status = Topup.DisputeStatus.WON
        else:
            current.dispute_status = Topup.DisputeStatus.LOST
            result = _take_back(
                topup=current,
                credits=_credits_sold(current, amount_cents),
                key=f"topup:{current.pk}:dispute:{dispute_id}",
                memo=f"Lost dispute on top-up ${current.amount_usd} ({dispute_id})",
            )
        current.status = _status_after_refunds(current)
        current.save(update_fields=["dispute_id", "dispute_status", "clawed_back_credits", "status", "updated_at"])
        account = Account.objects.select_for_update().get(pk=current.account_id)
        if won:
            _unfreeze_if_clear(account)
        elif not result.shortfall:
            wallet_freeze(
                account=account, reason=f"the payment for top-up {current.pk} was charged back (dispute lost)"
            )
    return result


def _unfreeze_if_clear(account: Account) -> None:
    """Lift a freeze only when nothing else holds it: no open dispute, no unresolved shortfall."""
    open_disputes = Topup.objects.filter(account=account, dispute_status=Topup.DisputeStatus.OPEN).exists()
    shortfalls = Shortfall.objects.filter(account=account, resolved_at__isnull=True).exists()
    lost = Topup.objects.filter(
        account=account, dispute_status=Topup.DisputeStatus.LOST, dispute_reviewed_at__isnull=True
    ).exists()
    if not (open_disputes or shortfalls or lost):
        wallet_unfreeze(account=account)


def topup_resolve_freeze(*, account: Account, actor: str) -> int:
    """An operator reviewed a frozen wallet: unfreeze it, resolve its shortfalls, and mark its
    lost disputes reviewed, so none of them keeps a later won dispute from lifting its freeze."""
    with transaction.atomic():
        Topup.objects.filter(
            account=account, dispute_status=Topup.DisputeStatus.LOST, dispute_reviewed_at__isnull=True
        ).update(dispute_reviewed_at=timezone.now())
        return wallet_resolve_freeze(account=account, actor=actor)
