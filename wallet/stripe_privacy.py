"""What Panels keeps of a Stripe event once its customer has closed the account.

Stripe's events carry the buyer's email (`customer_email`, `customer_details`,
`receipt_email`, `billing_details`), name, address, card details and a dispute's evidence.
When an account is deleted (panels/services.py `user_delete`), the stored payloads of its
events are cut down to what the ledger, the audit, refunds and disputes need: ids,
amounts, currencies, statuses, times, and the top-up metadata Panels itself set. A kept
field is named in KEEP, at any depth, so a field Stripe adds later is dropped, not kept.
A scrubbed event can still be replayed (a deferred refund or dispute needs only these).
Events that arrive later for a closed account are scrubbed once handled.

The Stripe Customer a card was saved on (one per wallet) holds the email at Stripe: once the
deletion commits it is deleted there (`stripe_customer_erase`), its cards with it; if Stripe
can't be reached, a Celery task (`wallet.tasks.stripe_customer_delete`) tries again later.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Q

from wallet import stripe_client
from wallet.models import AutoTopup, StripeEvent, Topup

log = logging.getLogger(__name__)

SCRUBBED = "panels_scrubbed"
# Fields kept at any depth of `data.object` (a charge's refund list, a dispute's charge...).
KEEP = frozenset(
    {
        "id",
        "object",
        "amount",
        "amount_captured",
        "amount_received",
        "amount_refunded",
        "amount_subtotal",
        "amount_total",
        "currency",
        "status",
        "payment_status",
        "mode",
        "created",
        "livemode",
        "expires_at",
        "payment_intent",
        "charge",
        "latest_charge",
        "setup_intent",
        "refunds",
        "data",
        "has_more",
        "metadata",
        "client_reference_id",  # the Panels user id, as the ledger's references name it
        "reason",  # a dispute's category (fraudulent, duplicate...), not the customer's words
        "refunded",
        "disputed",
        "paid",
        "captured",
        "canceled_at",
        "cancellation_reason",
        "last_payment_error",
        "code",
        "decline_code",
        "failure_code",
        "message",  # Stripe's own words for a failure ("Your card was declined."), kept for the pause email
        "type",
    }
)
# Panels' own metadata on sessions and intents (wallet/stripe_client.py, wallet/autotopups.py).
KEEP_METADATA = frozenset({"topup_id", "user_id", "credits", "kind", "purpose", "account_id"})
KEEP_ENVELOPE = frozenset({"id", "object", "api_version", "created", "livemode", "type", "pending_webhooks"})


def _kept(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: ({k: v for k, v in item.items() if k in KEEP_METADATA} if key == "metadata" else _kept(item))
            for key, item in value.items()
            if key in KEEP and (key != "metadata" or isinstance(item, dict))
        }
    if isinstance(value, list):
        return [_kept(item) for item in value]
    return value


def payload_scrub(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """An event cut down to its ids, amounts, statuses and Panels' metadata."""
    if not isinstance(payload, dict) or payload.get(SCRUBBED):
        return payload
    kept = {key: value for key, value in payload.items() if key in KEEP_ENVELOPE}
    obj = (payload.get("data") or {}).get("object")
    kept["data"] = {"object": _kept(obj)} if isinstance(obj, dict) else {}
    kept[SCRUBBED] = True
    return kept


def _events_of(user: AbstractBaseUser) -> Q:
    """The events about a user's payments and saved cards."""
    found = Q(topup__user=user)
    topups = Topup.objects.filter(user=user).values_list("payment_intent_id", "charge_id", "checkout_session_id")
    intents = {pi for pi, _, _ in topups if pi}
    charges = {ch for _, ch, _ in topups if ch}
    sessions = {cs for _, _, cs in topups if cs}
    if intents:
        found |= Q(payment_intent_id__in=intents)
    if charges:
        found |= Q(charge_id__in=charges)
    if sessions:
        found |= Q(payload__data__object__id__in=sorted(sessions))
    found |= Q(payload__data__object__metadata__user_id=str(user.pk))
    found |= Q(payload__data__object__client_reference_id=str(user.pk))
    customers = [c for c in AutoTopup.objects.filter(account__user=user).values_list("customer_id", flat=True) if c]
    if customers:
        found |= Q(payload__data__object__customer__in=customers)
    return found


def stripe_events_scrub(*, user: AbstractBaseUser) -> int:
    """Cut the user's stored Stripe events down to what the ledger needs; returns how many.

    Inside the account deletion's transaction, before the saved-card setting (which names
    the Stripe Customer) is dropped.
    """
    scrubbed = 0
    rows = StripeEvent.objects.filter(_events_of(user)).only("pk", "payload").order_by("pk")
    for row in rows.iterator(chunk_size=500):
        if isinstance(row.payload, dict) and not row.payload.get(SCRUBBED):
            StripeEvent.objects.filter(pk=row.pk).update(payload=payload_scrub(row.payload))
            scrubbed += 1
    return scrubbed


def _closed(user_id: object) -> bool:
    from panels.services import DELETED_EMAIL_DOMAIN

    if not str(user_id or "").isdigit():
        return False
    return (
        get_user_model()
        .objects.filter(pk=int(str(user_id)), is_active=False, email__endswith=f"@{DELETED_EMAIL_DOMAIN}")
        .exists()
    )


def stripe_event_scrub_if_closed(*, event_pk: int, payload: dict[str, Any], topup: Topup | None) -> bool:
    """An event handled after its customer closed the account is scrubbed at once."""
    obj = (payload.get("data") or {}).get("object") or {}
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    owner = topup.user_id if topup is not None else metadata.get("user_id") or obj.get("client_reference_id")
    if not _closed(owner):
        return False
    return bool(StripeEvent.objects.filter(pk=event_pk).update(payload=payload_scrub(payload)))


def stripe_customer_erase(*, customer_id: str) -> bool:
    """After an account deletion commits: delete its Stripe Customer, or queue a task that
    retries. Returns whether it is gone now. Never raises, so the deletion is never held up."""
    if connection.in_atomic_block:  # a row lock would be held across the call to Stripe
        raise RuntimeError("delete the Stripe Customer once the deletion has committed")
    if not customer_id or not stripe_client.stripe_enabled():
        return False
    try:
        return stripe_client.customer_delete(customer_id=customer_id)
    except stripe_client.StripeUnavailable as exc:
        log.warning(
            "could not delete a Stripe customer; retrying later", extra={"customer": customer_id, "error": str(exc)}
        )
    _queue_customer_delete(customer_id=customer_id)
    return False


def _queue_customer_delete(*, customer_id: str) -> None:
    from wallet.tasks import CUSTOMER_DELETE_FIRST_RETRY, stripe_customer_delete

    try:
        stripe_customer_delete.apply_async(args=[customer_id], countdown=CUSTOMER_DELETE_FIRST_RETRY)
    except Exception:
        # The broker is down too: the Customer stays at Stripe until deleted by hand (the id is logged).
        log.error("could not queue a Stripe customer deletion", extra={"customer": customer_id})
