"""POST /api/v1/stripe/webhook: check Stripe's signature, then hand the event to
wallet/stripe_events.py, which handles each event once."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from panels.api_errors import error_body
from wallet import stripe_client
from wallet.stripe_events import StripeEventFailed, stripe_event_receive


def _json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    if not settings.STRIPE_WEBHOOK_SECRET:
        return _json_error(503, "webhook_not_configured", "Stripe webhooks are not configured on this server.")
    try:
        event = stripe_client.event_construct(
            payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
    except stripe_client.WebhookInvalid as exc:
        return _json_error(400, "invalid_webhook", str(exc))
    try:
        received = stripe_event_receive(event=event)
    except StripeEventFailed:
        # Non-2xx so Stripe delivers the event again; the services are idempotent.
        return _json_error(500, "webhook_failed", "The event could not be processed; it will be retried.")
    if received.duplicate:
        return JsonResponse({"received": True, "duplicate": True, "status": received.status})
    return JsonResponse({"received": True, "status": received.status, "outcome": received.outcome})
