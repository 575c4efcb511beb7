"""Top-ups whose webhook was lost: ask Stripe how they came out, and apply what the event would have.

Two kinds are left waiting on a webhook:
- an automatic top-up whose off-session PaymentIntent answered `processing` (a payment
  method that settles later; https://docs.stripe.com/payments/paymentintents/lifecycle):
  only `payment_intent.succeeded` or `payment_intent.payment_failed` ends it;
- a Checkout top-up whose buyer paid and never came back to the success page, or whose
  bank debit is still clearing: only `checkout.session.completed` (or
  `async_payment_succeeded`/`failed`, `expired`) ends it.

The worker's sweep (panels/heartbeat.py) picks those untouched for
AUTOTOPUP_RECONCILE_AFTER seconds, claims each (compare-and-swap on `updated_at`, so
one worker's sweep queues it, once per interval) and queues `wallet.tasks.topup_reconcile`.
It looks again at growing intervals: once as long has passed since the last look as the
top-up had waited until then, so the interval doubles with its age (15, 30 minutes, 1, 2,
4 hours...) up to AUTOTOPUP_RECONCILE_MAX_INTERVAL: a checkout looked at for 25 hours is
asked about 8 times, not 100. The sweep itself never calls Stripe. The task retrieves the PaymentIntent or the Checkout
Session with no transaction open and hands the answer to the same services the webhook
uses: a payment is credited once by `topup_fulfil` (its ledger key), a failure is marked
once (a compare-and-swap), so a webhook arriving late, or twice, changes nothing.
The daily `manage.py stripe_reconcile` remains for what this misses (a top-up marked
expired here before Stripe reported it paid).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, QuerySet, Value
from django.utils import timezone

from wallet import stripe_client
from wallet.autotopups import autotopup_failed, autotopup_paid, failure_text
from wallet.models import Topup
from wallet.stripe_events import stripe_session_fulfil
from wallet.topups import CHECKOUT_LIFETIME, TopupMismatch, topup_fetch_receipt, topup_mark_failed

log = logging.getLogger(__name__)

# Checkout sessions are looked at only while they can still be paid (and a little after,
# for a payment made in their last minutes); a `pending` one (a bank debit clearing) until it ends.
CHECKOUT_LOOK_FOR = CHECKOUT_LIFETIME + dt.timedelta(hours=1)
FAILED_INTENT = ("requires_payment_method", "requires_action", "canceled")


def _waiting(now: dt.datetime) -> Q:
    """Top-ups only a lost webhook would end: Stripe's, not credited, in flight."""
    checkout = Q(kind=Topup.Kind.CHECKOUT) & (
        Q(status=Topup.Status.PENDING) | Q(status=Topup.Status.CREATED, created_at__gte=now - CHECKOUT_LOOK_FOR)
    )
    auto = Q(kind=Topup.Kind.AUTO, status=Topup.Status.PENDING) & ~Q(payment_intent_id="")
    return (
        Q(provider=Topup.Provider.STRIPE, credited_at__isnull=True)
        & ~Q(checkout_session_id__isnull=True)
        & (checkout | auto)
    )


def _looked_at_long_enough_ago(now: dt.datetime) -> Q:
    """Due a look: untouched (or last looked at, `updated_at`) at least one period ago, and at
    least as long ago as the top-up had waited by then, or longer ago than the cap."""
    period = dt.timedelta(seconds=settings.AUTOTOPUP_RECONCILE_AFTER)
    cap = max(period, dt.timedelta(seconds=settings.AUTOTOPUP_RECONCILE_MAX_INTERVAL))
    return Q(updated_at__lt=now - period) & (Q(updated_at__lt=now - cap) | Q(waited_then__lte=F("since_look")))


def topups_due(*, now: dt.datetime) -> QuerySet[Topup]:
    """The top-ups due a look at Stripe, longest untouched first (served by the partial index
    `topup_reconcile_waiting_idx`, whose condition every arm of `_waiting` implies)."""
    return (
        Topup.objects.alias(
            waited_then=ExpressionWrapper(F("updated_at") - F("created_at"), output_field=DurationField()),
            since_look=ExpressionWrapper(Value(now, output_field=DateTimeField()) - F("updated_at"), DurationField()),
        )
        .filter(_waiting(now), _looked_at_long_enough_ago(now))
        .order_by("updated_at")
    )


def topups_reconcile_due(*, now: dt.datetime | None = None) -> list[int]:
    """The sweep's part: claim the top-ups due a look at Stripe and queue a task for each.

    Each is claimed by moving its `updated_at` on (compare-and-swap), so however many
    workers sweep, one task per top-up is queued per interval (wallet/reconcile.py above).
    """
    if not stripe_client.stripe_enabled():
        return []
    now = now or timezone.now()
    claimed: list[int] = []
    for pk, updated_at in topups_due(now=now).values_list("pk", "updated_at")[:500]:
        if Topup.objects.filter(pk=pk, updated_at=updated_at).update(updated_at=now):
            claimed.append(pk)
            _queue(topup_id=pk)
    return claimed


def _queue(*, topup_id: int) -> None:
    """Best effort: one not queued is claimed again by a later sweep."""
    from wallet.tasks import topup_reconcile as task

    try:
        task.delay(topup_id)
    except Exception:
        log.warning("could not queue a top-up reconcile", extra={"topup_id": topup_id})


def topup_reconcile(*, topup_id: int) -> str:
    """Ask Stripe how this top-up came out and apply it, as its webhook would have. Call
    with no transaction open (it calls Stripe). Idempotent."""
    topup = Topup.objects.filter(pk=topup_id).first()
    if topup is None or topup.credited_at is not None or topup.provider != Topup.Provider.STRIPE:
        return f"top-up {topup_id}: nothing to reconcile"
    if topup.status not in (Topup.Status.CREATED, Topup.Status.PENDING) or not stripe_client.stripe_enabled():
        return f"top-up {topup_id}: nothing to reconcile ({topup.status})"
    try:
        if topup.kind == Topup.Kind.AUTO:
            return _auto(topup)
        return _checkout(topup)
    except stripe_client.StripeUnavailable as exc:
        log.warning("top-up reconcile: Stripe unreachable", extra={"topup_id": topup.pk, "error": str(exc)})
        return f"top-up {topup.pk}: Stripe unreachable; asked again later"


def _auto(topup: Topup) -> str:
    if topup.status != Topup.Status.PENDING or not topup.payment_intent_id:
        # Not charged yet, or charged with no answer: the auto top-up sweep charges it again
        # with its own key, which returns Stripe's first answer.
        return f"top-up {topup.pk}: not waiting on Stripe"
    intent = stripe_client.payment_intent_retrieve(payment_intent_id=topup.payment_intent_id)
    if intent.status == "succeeded":
        try:
            result = autotopup_paid(
                topup=topup,
                payment_intent_id=intent.payment_intent_id,
                amount=intent.amount or None,
                currency=intent.currency,
                metadata=intent.metadata,
            )
        except TopupMismatch as exc:
            log.error("paid intent does not match its top-up", extra={"topup_id": topup.pk, "error": str(exc)})
            return f"top-up {topup.pk}: rejected: {exc}"
        log.info("automatic top-up reconciled: paid", extra={"topup_id": topup.pk})
        return f"reconciled: {result.outcome}"
    if intent.status in FAILED_INTENT:
        reason = (
            "The payment was cancelled at Stripe before it went through. Nothing was charged."
            if intent.status == "canceled"
            else failure_text(intent)
        )
        failed = autotopup_failed(topup=topup, reason=reason)
        log.info("automatic top-up reconciled: failed", extra={"topup_id": topup.pk, "status": intent.status})
        return f"reconciled: top-up {topup.pk} {intent.status}" + (", paused" if failed else ", already ended")
    return f"top-up {topup.pk}: still {intent.status}"


def _checkout(topup: Topup) -> str:
    session = stripe_client.checkout_session_retrieve(session_id=topup.checkout_session_id or "")
    if session.payment_status == "paid":
        try:
            result = stripe_session_fulfil(session=session)
        except TopupMismatch as exc:
            log.error("paid session does not match its top-up", extra={"topup_id": topup.pk, "error": str(exc)})
            return f"top-up {topup.pk}: rejected: {exc}"
        if result.topup is not None:
            topup_fetch_receipt(topup=result.topup)
        log.info("checkout top-up reconciled: paid", extra={"topup_id": topup.pk})
        return f"reconciled: {result.outcome}"
    if session.status == "expired":
        topup_mark_failed(session_id=session.id, expired=True)
        return f"reconciled: top-up {topup.pk} expired unpaid"
    if session.status == "complete" and session.payment_intent_id:
        # Complete but unpaid: a bank debit clearing, or one that failed
        # (`checkout.session.async_payment_failed`), which only its PaymentIntent tells.
        intent = stripe_client.payment_intent_retrieve(payment_intent_id=session.payment_intent_id)
        if intent.status in FAILED_INTENT:
            topup_mark_failed(session_id=session.id)
            return f"reconciled: top-up {topup.pk} payment failed ({intent.status})"
        if topup.status == Topup.Status.CREATED:
            stripe_session_fulfil(session=session)  # marked pending, as the completed event would
            return f"reconciled: top-up {topup.pk} awaiting payment"
    return f"top-up {topup.pk}: still {session.status}/{session.payment_status}"
