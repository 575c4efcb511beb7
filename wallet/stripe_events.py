"""Stripe events about top-ups: record, claim, run, replay, and the handler of each type.

Each event id is stored once (StripeEvent); a redelivery finds it and does nothing.
Stripe delivers at least once and in any order, so every handler calls an idempotent
service in wallet/topups.py, and an event about a payment whose top-up is not credited
yet is kept (`deferred`) and applied once it is (`stripe_session_fulfil`, the reconcile
command). The webhook view (wallet/webhooks.py) only checks the signature and calls
`stripe_event_receive`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from wallet import stripe_client
from wallet.autotopups import autotopup_card_setup_complete, autotopup_failed, autotopup_paid
from wallet.models import StripeEvent, Topup
from wallet.stripe_privacy import stripe_event_scrub_if_closed
from wallet.topups import (
    FulfilResult,
    TopupMismatch,
    topup_dispute_closed,
    topup_dispute_opened,
    topup_fetch_receipt,
    topup_for_payment,
    topup_fulfil_session,
    topup_link_payment,
    topup_mark_failed,
    topup_refund,
)

log = logging.getLogger(__name__)

# A claim older than this belongs to a process that died mid-way; the next delivery takes over.
CLAIM_TIMEOUT = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Outcome:
    status: str
    message: str
    topup: Topup | None = None
    payment_intent_id: str = ""
    charge_id: str = ""


def _id(value: Any) -> str:
    """An expandable field: an id string, or the expanded object."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def stripe_session_fulfil(*, session: stripe_client.CheckoutSession) -> FulfilResult:
    """Credit a Stripe Checkout Session's top-up (once), then apply the events that waited for it.

    Raises TopupMismatch for a paid session that does not match its top-up. Call with no
    transaction open: applying waiting events may call Stripe.
    """
    result = topup_fulfil_session(session=session)
    if result.credited and result.topup is not None:
        stripe_events_apply_deferred(topup=result.topup)
    return result


def _session_event(obj: dict[str, Any]) -> Outcome:
    if obj.get("mode") == "setup":
        saved = autotopup_card_setup_complete(session=obj)
        return Outcome(
            StripeEvent.Status.PROCESSED if saved else StripeEvent.Status.IGNORED,
            f"card set-up {obj.get('id')}: " + ("card saved" if saved else "nothing to save (already saved or stale)"),
        )
    session = stripe_client.CheckoutSession.from_dict(obj)
    try:
        result = stripe_session_fulfil(session=session)
    except TopupMismatch as exc:
        log.error("paid session does not match its top-up", extra={"session": session.id, "error": str(exc)})
        return Outcome(StripeEvent.Status.IGNORED, f"rejected: {exc}"[:300])
    if result.topup is None:
        return Outcome(StripeEvent.Status.IGNORED, result.outcome)
    topup_fetch_receipt(topup=result.topup)
    return Outcome(StripeEvent.Status.PROCESSED, result.outcome, topup=result.topup)


def _session_unpaid(obj: dict[str, Any], *, expired: bool) -> Outcome:
    topup = topup_mark_failed(session_id=str(obj.get("id") or ""), expired=expired)
    if topup is None:
        return Outcome(StripeEvent.Status.IGNORED, f"no top-up for session {obj.get('id')}")
    what = "checkout expired" if expired else "payment failed"
    return Outcome(StripeEvent.Status.PROCESSED, f"top-up {topup.pk}: {what} (now {topup.status})", topup=topup)


def _match(*, payment_intent_id: str, charge_id: str, metadata: dict[str, Any]) -> tuple[Topup | None, bool]:
    """(the top-up, whether the payment is a top-up at all) for a charge or dispute."""
    topup = topup_for_payment(payment_intent_id=payment_intent_id, charge_id=charge_id, metadata=metadata)
    if topup is not None or metadata.get("topup_id"):
        return topup, True
    if payment_intent_id and stripe_client.stripe_enabled():
        try:
            info = stripe_client.payment_info(payment_intent_id=payment_intent_id)
        except stripe_client.StripeUnavailable:
            return None, True  # can't tell now: keep the event rather than lose it
        if not info.metadata.get("topup_id"):
            return None, False
        return topup_for_payment(payment_intent_id=payment_intent_id, metadata=info.metadata), True
    return None, True


def _with_topup(
    obj: dict[str, Any], *, payment_intent_id: str, charge_id: str, metadata: dict[str, Any], what: str
) -> Outcome | Topup:
    """The credited top-up a payment event is about, or the Outcome saying why not now."""
    topup, ours = _match(payment_intent_id=payment_intent_id, charge_id=charge_id, metadata=metadata)
    if topup is None:
        if not ours:
            return Outcome(StripeEvent.Status.IGNORED, f"{what}: not a top-up payment")
        return Outcome(
            StripeEvent.Status.DEFERRED,
            f"{what}: no top-up matches yet; kept until one is credited",
            payment_intent_id=payment_intent_id,
            charge_id=charge_id,
        )
    topup_link_payment(topup=topup, payment_intent_id=payment_intent_id, charge_id=charge_id)
    if topup.credited_at is None:
        return Outcome(
            StripeEvent.Status.DEFERRED,
            f"{what}: top-up {topup.pk} is not credited yet; applied when it is",
            topup=topup,
            payment_intent_id=payment_intent_id,
            charge_id=charge_id,
        )
    return topup


def _charge_refunded(obj: dict[str, Any]) -> Outcome:
    charge_id = _id(obj.get("id"))
    found = _with_topup(
        obj,
        payment_intent_id=_id(obj.get("payment_intent")),
        charge_id=charge_id,
        metadata=obj.get("metadata") or {},
        what=f"refund of {charge_id}",
    )
    if isinstance(found, Outcome):
        return found
    topup_link_payment(topup=found, receipt_url=str(obj.get("receipt_url") or ""))
    refunds = ((obj.get("refunds") or {}).get("data")) or []
    refund_id = _id(refunds[0]) if refunds else ""
    result = topup_refund(topup=found, amount_refunded_cents=int(obj.get("amount_refunded") or 0), refund_id=refund_id)
    message = f"top-up {found.pk}: took back {result.taken} credits"
    if result.deferred:
        message += f", {result.deferred} more as replies in flight settle"
    if result.shortfall:
        message += f", {result.shortfall} short (wallet frozen)"
    return Outcome(StripeEvent.Status.PROCESSED, message, topup=found)


def _dispute(obj: dict[str, Any], *, closed: bool) -> Outcome:
    dispute_id = _id(obj.get("id"))
    found = _with_topup(
        obj,
        payment_intent_id=_id(obj.get("payment_intent")),
        charge_id=_id(obj.get("charge")),
        metadata={},
        what=f"dispute {dispute_id}",
    )
    if isinstance(found, Outcome):
        return found
    if not closed:
        froze = topup_dispute_opened(topup=found, dispute_id=dispute_id)
        return Outcome(
            StripeEvent.Status.PROCESSED,
            f"top-up {found.pk}: dispute opened{', wallet frozen' if froze else ' (already known)'}",
            topup=found,
        )
    status = str(obj.get("status") or "")
    # warning_closed: an inquiry that never became a chargeback, so the money stayed.
    won = status in ("won", "warning_closed")
    if not won and status != "lost":
        return Outcome(StripeEvent.Status.IGNORED, f"dispute {dispute_id} closed as {status!r}", topup=found)
    result = topup_dispute_closed(
        topup=found, dispute_id=dispute_id, won=won, amount_cents=int(obj.get("amount") or found.amount_cents)
    )
    message = f"top-up {found.pk}: dispute {status}" + ("" if won else f", took back {result.taken} credits")
    return Outcome(StripeEvent.Status.PROCESSED, message, topup=found)


def _auto_topup_for(obj: dict[str, Any]) -> Topup | None:
    """The automatic top-up a PaymentIntent charged, or None (a Checkout top-up's intent is
    credited through its session's events instead)."""
    metadata = obj.get("metadata") or {}
    if metadata.get("kind") != Topup.Kind.AUTO:
        return None
    topup = topup_for_payment(payment_intent_id=_id(obj.get("id")), metadata=metadata)
    return topup if topup is not None and topup.kind == Topup.Kind.AUTO else None


def _intent_succeeded(obj: dict[str, Any]) -> Outcome:
    topup = _auto_topup_for(obj)
    if topup is None:
        return Outcome(StripeEvent.Status.IGNORED, "not an automatic top-up (credited by its checkout session)")
    try:
        result = autotopup_paid(
            topup=topup,
            payment_intent_id=_id(obj.get("id")),
            amount=int(obj.get("amount_received") or obj.get("amount") or 0) or None,
            currency=str(obj.get("currency") or ""),
            metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
        )
    except TopupMismatch as exc:
        log.error("paid intent does not match its top-up", extra={"topup_id": topup.pk, "error": str(exc)})
        return Outcome(StripeEvent.Status.IGNORED, f"rejected: {exc}"[:300], topup=topup)
    return Outcome(StripeEvent.Status.PROCESSED, result.outcome, topup=topup)


def _intent_failed(obj: dict[str, Any]) -> Outcome:
    topup = _auto_topup_for(obj)
    if topup is None:
        return Outcome(StripeEvent.Status.IGNORED, "not an automatic top-up")
    error = obj.get("last_payment_error") or {}
    reason = f"The card was declined: {error.get('message') or 'no reason given'}"
    if error.get("code") == "authentication_required":
        reason = "Your bank asked to confirm the payment, which can't be done while you are away. Add the card again."
    failed = autotopup_failed(topup=topup, reason=reason)
    return Outcome(
        StripeEvent.Status.PROCESSED,
        f"top-up {topup.pk}: " + ("failed, paused" if failed else "already ended"),
        topup=topup,
    )


HANDLERS: dict[str, Callable[[dict[str, Any]], Outcome]] = {
    "checkout.session.completed": _session_event,
    "checkout.session.async_payment_succeeded": _session_event,
    "checkout.session.async_payment_failed": lambda obj: _session_unpaid(obj, expired=False),
    "checkout.session.expired": lambda obj: _session_unpaid(obj, expired=True),
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_failed,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": lambda obj: _dispute(obj, closed=False),
    "charge.dispute.closed": lambda obj: _dispute(obj, closed=True),
}


def _handle(event: dict[str, Any]) -> Outcome:
    handler = HANDLERS.get(str(event.get("type")))
    if handler is None:
        return Outcome(StripeEvent.Status.IGNORED, "event type not handled")
    return handler(event["data"]["object"])


def stripe_event_record(event: dict[str, Any]) -> StripeEvent:
    try:
        with transaction.atomic():
            return StripeEvent.objects.create(
                event_id=event["id"],
                type=str(event["type"])[:100],
                livemode=bool(event.get("livemode")),
                event_created=int(event.get("created") or 0) or None,
                payload=event,
            )
    except IntegrityError:
        return StripeEvent.objects.get(event_id=event["id"])


def stripe_event_claim(row: StripeEvent, *, from_status: tuple[str, ...]) -> bool:
    """Compare-and-swap to `processing`: exactly one delivery (or replay) works on an event."""
    now = timezone.now()
    claimable = Q(status__in=from_status)
    if StripeEvent.Status.PROCESSING not in from_status:
        claimable |= Q(status=StripeEvent.Status.PROCESSING, claimed_at__lt=now - CLAIM_TIMEOUT)
    return bool(
        StripeEvent.objects.filter(claimable, pk=row.pk).update(
            status=StripeEvent.Status.PROCESSING, claimed_at=now, attempts=F("attempts") + 1
        )
    )


def _finish(row: StripeEvent, outcome: Outcome) -> None:
    done = outcome.status in (StripeEvent.Status.PROCESSED, StripeEvent.Status.IGNORED)
    StripeEvent.objects.filter(pk=row.pk).update(
        status=outcome.status,
        outcome=outcome.message[:300],
        topup_id=outcome.topup.pk if outcome.topup else row.topup_id,
        payment_intent_id=outcome.payment_intent_id or row.payment_intent_id,
        charge_id=outcome.charge_id or row.charge_id,
        processed_at=timezone.now() if done else None,
        claimed_at=None,
    )


def stripe_event_run(row: StripeEvent, event: dict[str, Any], *, on_error: str) -> Outcome:
    try:
        outcome = _handle(event)
    except Exception as exc:
        log.exception("stripe event failed", extra={"event_id": row.event_id, "type": row.type})
        StripeEvent.objects.filter(pk=row.pk).update(status=on_error, outcome=f"error: {exc}"[:300], claimed_at=None)
        raise
    _finish(row, outcome)
    # An event about an account closed meanwhile keeps only what the ledger needs.
    stripe_event_scrub_if_closed(event_pk=row.pk, payload=event, topup=outcome.topup)
    log.info(
        "stripe event handled",
        extra={"event_id": row.event_id, "type": row.type, "status": outcome.status, "outcome": outcome.message},
    )
    return outcome


def stripe_event_replay(*, event_pk: int) -> str | None:
    """Apply a deferred event again (its top-up has just been credited); returns its new status."""
    row = StripeEvent.objects.filter(pk=event_pk).first()
    if row is None or not stripe_event_claim(row, from_status=(StripeEvent.Status.DEFERRED,)):
        return None
    try:
        return stripe_event_run(row, row.payload or {}, on_error=StripeEvent.Status.DEFERRED).status
    except Exception:
        # Kept as deferred: `stripe_reconcile` replays it. The credit that led here stands.
        return StripeEvent.Status.DEFERRED


def _credited_meanwhile(outcome: Outcome) -> bool:
    """Whether a deferred event's top-up was credited while the event was being handled.

    Fulfilment replays the deferred events of the top-up it credits, but it may have
    looked before this event was marked deferred; then no one else would replay it.
    """
    if outcome.status != StripeEvent.Status.DEFERRED:
        return False
    topup = outcome.topup or topup_for_payment(payment_intent_id=outcome.payment_intent_id, charge_id=outcome.charge_id)
    return topup is not None and Topup.objects.filter(pk=topup.pk, credited_at__isnull=False).exists()


def stripe_events_apply_deferred(*, topup: Topup) -> int:
    """Apply the events that arrived before this top-up was credited; returns how many."""
    lookups = Q(topup=topup)
    if topup.payment_intent_id:
        lookups |= Q(payment_intent_id=topup.payment_intent_id)
    if topup.charge_id:
        lookups |= Q(charge_id=topup.charge_id)
    ids = list(
        StripeEvent.objects.filter(lookups, status=StripeEvent.Status.DEFERRED)
        .order_by("event_created", "pk")
        .values_list("pk", flat=True)
    )
    for pk in ids:
        stripe_event_replay(event_pk=pk)
    return len(ids)


class StripeEventFailed(Exception):
    """A handler raised: the event is kept as failed, and Stripe should deliver it again."""


@dataclass(frozen=True)
class Received:
    status: str
    duplicate: bool
    outcome: str = ""


def stripe_event_receive(*, event: dict[str, Any]) -> Received:
    """Handle an event whose signature was checked: once, however often it is delivered.

    Raises StripeEventFailed when a handler failed (the services are idempotent, so a
    redelivery is safe).
    """
    row = stripe_event_record(event)
    if not stripe_event_claim(row, from_status=(StripeEvent.Status.RECEIVED, StripeEvent.Status.FAILED)):
        # Handled already, kept for its top-up, or being handled by a concurrent delivery.
        row.refresh_from_db(fields=["status"])
        return Received(status=row.status, duplicate=True)
    try:
        outcome = stripe_event_run(row, event, on_error=StripeEvent.Status.FAILED)
    except Exception as exc:
        raise StripeEventFailed(str(exc)) from exc
    status = outcome.status
    if _credited_meanwhile(outcome):
        status = stripe_event_replay(event_pk=row.pk) or status
    return Received(status=status, duplicate=False, outcome=outcome.message)
