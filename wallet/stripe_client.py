"""The one module that talks to Stripe.

Everything else works with the plain dataclasses and dicts returned here, so tests
serve this seam (a local fake of the Stripe API over HTTP) and nothing deeper.
Every POST carries a caller-chosen idempotency key: a retry, by the SDK or by us,
sends the same key and gets the same object back.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import stripe
from django.conf import settings

log = logging.getLogger(__name__)

# The SDK retries connection errors and 409/5xx answers with the same idempotency key.
MAX_NETWORK_RETRIES = 2


class StripeUnavailable(Exception):
    """Stripe could not be reached or refused the call; nothing was bought."""


class WebhookInvalid(Exception):
    """A webhook whose signature, timestamp or body does not check out."""


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str
    status: str  # open, complete, expired
    payment_status: str  # paid, unpaid, no_payment_required
    payment_intent_id: str
    client_reference_id: str
    amount_total: int | None
    currency: str
    created: int
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckoutSession:
        intent = data.get("payment_intent") or ""
        if isinstance(intent, dict):
            intent = intent.get("id") or ""
        return cls(
            id=data["id"],
            url=data.get("url") or "",
            status=data.get("status") or "",
            payment_status=data.get("payment_status") or "",
            payment_intent_id=intent,
            client_reference_id=data.get("client_reference_id") or "",
            amount_total=data.get("amount_total"),
            currency=(data.get("currency") or "").lower(),
            created=int(data.get("created") or 0),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )


@dataclass(frozen=True)
class PaymentInfo:
    payment_intent_id: str
    charge_id: str
    receipt_url: str
    metadata: dict[str, str] = field(default_factory=dict)


def stripe_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


@functools.lru_cache(maxsize=8)
def _client_for(api_key: str, api_base: str) -> stripe.StripeClient:
    base_addresses: dict[str, str] = {"api": api_base.rstrip("/")} if api_base else {}
    return stripe.StripeClient(api_key, base_addresses=base_addresses, max_network_retries=MAX_NETWORK_RETRIES)


def _client() -> stripe.StripeClient:
    if not settings.STRIPE_SECRET_KEY:
        raise StripeUnavailable("Stripe is not configured (STRIPE_SECRET_KEY is empty).")
    # Keyed by the settings, so a test that points STRIPE_API_BASE elsewhere gets its own client.
    return _client_for(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def checkout_session_create(
    *,
    amount_cents: int,
    credits: int,
    topup_id: int,
    user_id: int,
    email: str,
    success_url: str,
    cancel_url: str,
    idempotency_key: str,
) -> CheckoutSession:
    """A one-off Checkout Session in payment mode for one top-up."""
    metadata = {"topup_id": str(topup_id), "user_id": str(user_id), "credits": str(credits)}
    params: dict[str, Any] = {
        "mode": "payment",
        "client_reference_id": str(user_id),
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": settings.STRIPE_CURRENCY,
                    "unit_amount": amount_cents,
                    "product_data": {"name": f"Panels credits: {credits:,}"},
                },
            }
        ],
        "metadata": metadata,
        # Copied onto the PaymentIntent and its charge, so refunds and disputes,
        # which only name the charge, still lead back to the top-up.
        "payment_intent_data": {"metadata": metadata},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    if email:
        params["customer_email"] = email
    try:
        session = _client().v1.checkout.sessions.create(params, {"idempotency_key": idempotency_key})
    except stripe.StripeError as exc:
        log.warning("stripe checkout session create failed", extra={"topup_id": topup_id, "error": str(exc)})
        raise StripeUnavailable(str(exc)) from exc
    return CheckoutSession.from_dict(_plain(session))


def checkout_session_retrieve(*, session_id: str) -> CheckoutSession:
    try:
        session = _client().v1.checkout.sessions.retrieve(session_id)
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    return CheckoutSession.from_dict(_plain(session))


def checkout_session_expire(*, session_id: str, idempotency_key: str) -> CheckoutSession:
    """Close an open Checkout Session so it can no longer be paid.

    Stripe expires only an `open` session and answers anything else (complete, already
    expired) with an error (https://docs.stripe.com/api/checkout/sessions/expire): the
    session as it then stands is returned, so the caller sees whether it was paid.
    """
    try:
        session = _client().v1.checkout.sessions.expire(session_id, options={"idempotency_key": idempotency_key})
    except stripe.InvalidRequestError:
        return checkout_session_retrieve(session_id=session_id)
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    return CheckoutSession.from_dict(_plain(session))


def checkout_sessions_since(*, created_gte: int) -> Iterator[CheckoutSession]:
    """Every Checkout Session created at or after `created_gte` (a Unix time), newest first."""
    try:
        page = _client().v1.checkout.sessions.list({"created": {"gte": created_gte}, "limit": 100})
        for session in page.auto_paging_iter():
            yield CheckoutSession.from_dict(_plain(session))
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc


def payment_info(*, payment_intent_id: str) -> PaymentInfo:
    """The charge and receipt URL behind a PaymentIntent, and the metadata it carries."""
    try:
        intent = _client().v1.payment_intents.retrieve(payment_intent_id, {"expand": ["latest_charge"]})
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    data = _plain(intent)
    charge = data.get("latest_charge") or {}
    if isinstance(charge, str):
        charge = {"id": charge}
    return PaymentInfo(
        payment_intent_id=data["id"],
        charge_id=charge.get("id") or "",
        receipt_url=charge.get("receipt_url") or "",
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


def event_construct(*, payload: bytes, signature: str) -> dict[str, Any]:
    """Verify a webhook's `Stripe-Signature` (and its age) and return the event as a dict."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise WebhookInvalid("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is empty).")
    try:
        stripe.Webhook.construct_event(payload, signature, secret)
        data = json.loads(payload)
    except stripe.SignatureVerificationError as exc:
        raise WebhookInvalid(f"Signature check failed: {exc.user_message or exc}") from exc
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # ValueError covers a body that is not JSON (and UnicodeDecodeError); the rest a JSON
        # value that is not an object.
        raise WebhookInvalid(f"The body is not a Stripe event: {exc}") from exc
    if not isinstance(data, dict) or not data.get("id") or not data.get("type"):
        raise WebhookInvalid("The body is not a Stripe event: it needs an id and a type.")
    if not isinstance((data.get("data") or {}).get("object"), dict):
        raise WebhookInvalid("The body is not a Stripe event: data.object is missing.")
    return data


# -- saved cards and off-session charges (automatic top-ups) ------------------------------


@dataclass(frozen=True)
class SavedCard:
    payment_method_id: str
    customer_id: str
    brand: str
    last4: str


@dataclass(frozen=True)
class OffSessionCharge:
    """What an off-session PaymentIntent came to: `succeeded`, `processing`, or a failure
    (`requires_payment_method` after a decline, `requires_action` when the bank wants the
    cardholder), with Stripe's error code and message."""

    payment_intent_id: str
    status: str
    amount: int
    currency: str
    metadata: dict[str, str] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, error_code: str = "", error_message: str = "") -> OffSessionCharge:
        last = data.get("last_payment_error") or {}
        return cls(
            payment_intent_id=str(data.get("id") or ""),
            status=str(data.get("status") or ""),
            amount=int(data.get("amount_received") or data.get("amount") or 0),
            currency=str(data.get("currency") or "").lower(),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            error_code=error_code or str(last.get("decline_code") or last.get("code") or ""),
            error_message=error_message or str(last.get("message") or ""),
        )


def customer_create(*, email: str, user_id: int, idempotency_key: str) -> str:
    """A Stripe Customer to save a card on (https://docs.stripe.com/api/customers/create)."""
    params: dict[str, Any] = {"metadata": {"user_id": str(user_id)}}
    if email:
        params["email"] = email
    try:
        customer = _client().v1.customers.create(params, {"idempotency_key": idempotency_key})
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    return str(_plain(customer)["id"])


def customer_delete(*, customer_id: str) -> bool:
    """Delete a Stripe Customer, its saved cards and the email it holds
    (DELETE /v1/customers/{id}; https://docs.stripe.com/api/customers/delete). Returns True
    once it is gone: deleted now (`deleted: true`), or before (an id Stripe no longer knows is a
    404 `resource_missing`, https://docs.stripe.com/error-codes#resource-missing). Anything
    else raises StripeUnavailable; calling again is safe."""
    try:
        answer = _plain(_client().v1.customers.delete(customer_id))
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_missing":
            log.info("stripe customer already gone", extra={"customer": customer_id})
            return True
        raise StripeUnavailable(str(exc)) from exc
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    if not answer.get("deleted"):
        raise StripeUnavailable(f"Stripe did not delete customer {customer_id}")
    return True


def setup_session_create(
    *, customer_id: str, metadata: dict[str, str], success_url: str, cancel_url: str, idempotency_key: str
) -> CheckoutSession:
    """A Checkout Session in setup mode: the buyer saves a card for later off-session charges.

    Setup mode with dynamic payment methods needs `currency`; `customer` makes the
    SetupIntent attach the card to that customer (https://docs.stripe.com/payments/save-and-reuse?platform=checkout).
    `setup_intent_data.metadata` is copied to the SetupIntent.
    """
    params: dict[str, Any] = {
        "mode": "setup",
        "currency": settings.STRIPE_CURRENCY,
        "customer": customer_id,
        "client_reference_id": metadata.get("user_id", ""),
        "metadata": metadata,
        "setup_intent_data": {"metadata": metadata},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    try:
        session = _client().v1.checkout.sessions.create(params, {"idempotency_key": idempotency_key})
    except stripe.StripeError as exc:
        log.warning("stripe setup session create failed", extra={"error": str(exc)})
        raise StripeUnavailable(str(exc)) from exc
    return CheckoutSession.from_dict(_plain(session))


def setup_session_card(*, session: dict[str, Any]) -> SavedCard | None:
    """The card a completed setup-mode session saved (its SetupIntent's payment method), or None."""
    if session.get("mode") != "setup" or session.get("status") != "complete":
        return None
    intent = session.get("setup_intent")
    try:
        if not isinstance(intent, dict):
            if not intent:
                return None
            intent = _plain(_client().v1.setup_intents.retrieve(str(intent), {"expand": ["payment_method"]}))
        method = intent.get("payment_method")
        if isinstance(method, str) and method:
            method = _plain(_client().v1.payment_methods.retrieve(method))
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    if intent.get("status") != "succeeded" or not isinstance(method, dict):
        return None
    card = method.get("card") or {}
    customer = method.get("customer") or intent.get("customer") or session.get("customer") or ""
    if isinstance(customer, dict):
        customer = customer.get("id") or ""
    return SavedCard(
        payment_method_id=str(method["id"]),
        customer_id=str(customer),
        brand=str(card.get("brand") or method.get("type") or ""),
        last4=str(card.get("last4") or ""),
    )


def setup_session_retrieve(*, session_id: str) -> dict[str, Any]:
    try:
        return _plain(_client().v1.checkout.sessions.retrieve(session_id, {"expand": ["setup_intent"]}))
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc


def payment_intent_retrieve(*, payment_intent_id: str) -> OffSessionCharge:
    """A PaymentIntent as it stands now (https://docs.stripe.com/api/payment_intents/retrieve):
    how a charge left `processing` came out when its webhook never arrived."""
    try:
        intent = _client().v1.payment_intents.retrieve(payment_intent_id)
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    return OffSessionCharge.from_dict(_plain(intent))


def payment_method_detach(*, payment_method_id: str) -> None:
    """Forget a saved card on Stripe: a detached PaymentMethod can't be charged again
    (https://docs.stripe.com/api/payment_methods/detach). One already detached is fine."""
    try:
        _client().v1.payment_methods.detach(payment_method_id)
    except stripe.InvalidRequestError as exc:
        log.info("payment method already gone", extra={"payment_method": payment_method_id, "error": str(exc)})
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc


def payment_intent_off_session(
    *,
    amount_cents: int,
    customer_id: str,
    payment_method_id: str,
    metadata: dict[str, str],
    description: str,
    idempotency_key: str,
) -> OffSessionCharge:
    """Charge a saved card with the customer away: a PaymentIntent created with
    `off_session=true` and `confirm=true` (off_session is only valid with confirm;
    https://docs.stripe.com/api/payment_intents/create#create_payment_intent-off_session).

    A decline or a bank asking for authentication is a 402 card error whose body carries
    the PaymentIntent (https://docs.stripe.com/payments/save-and-reuse?platform=checkout,
    "charge the saved payment method later"): returned, not raised. Other failures raise
    StripeUnavailable; retrying with the same key is safe.
    """
    params: dict[str, Any] = {
        "amount": amount_cents,
        "currency": settings.STRIPE_CURRENCY,
        "customer": customer_id,
        "payment_method": payment_method_id,
        "off_session": True,
        "confirm": True,
        "description": description,
        "metadata": metadata,
    }
    try:
        intent = _client().v1.payment_intents.create(params, {"idempotency_key": idempotency_key})
    except stripe.CardError as exc:
        error = exc.error
        body = (exc.json_body or {}).get("error") or {}
        intent_data = body.get("payment_intent") or {}
        code = str(getattr(error, "decline_code", None) or exc.code or "card_error")
        if intent_data:
            return OffSessionCharge.from_dict(intent_data, error_code=code, error_message=exc.user_message or str(exc))
        return OffSessionCharge(
            payment_intent_id="",
            status="requires_payment_method",
            amount=0,
            currency="",
            error_code=code,
            error_message=exc.user_message or str(exc),
        )
    except stripe.StripeError as exc:
        log.warning("stripe off-session charge failed", extra={"error": str(exc)})
        raise StripeUnavailable(str(exc)) from exc
    return OffSessionCharge.from_dict(_plain(intent))
