"""Stripe test helpers: settings that point the real SDK at the fake, and signed webhook events.

Signatures use Stripe's real scheme, `t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
so the webhook view checks them with the SDK exactly as in production.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from typing import Any

from django.test import Client
from django.test.utils import override_settings

WEBHOOK_SECRET = "whsec_test"
API_KEY = "sk_test_x"
WEBHOOK_URL = "/api/v1/stripe/webhook"

_events = itertools.count(1)


def stripe_settings(api_base: str) -> override_settings:
    return override_settings(STRIPE_SECRET_KEY=API_KEY, STRIPE_API_BASE=api_base, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET)


def sign(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(kind: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None) -> dict:
    """A Stripe event envelope around `obj`, as Stripe posts it."""
    return {
        "id": event_id or f"evt_test_{next(_events):06d}{secrets.token_hex(4)}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }


def post_event(client: Client, body: dict | str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None):
    payload = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        WEBHOOK_URL,
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(payload, secret=secret, timestamp=timestamp),
    )


def dispute(charge: dict[str, Any], *, status: str = "needs_response", dispute_id: str = "dp_test_1") -> dict:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": charge["amount"],
        "charge": charge["id"],
        "payment_intent": charge["payment_intent"],
        "currency": charge["currency"],
        "reason": "fraudulent",
        "status": status,
        "metadata": {},
    }


def open_topup(user: Any, *, cents: int = 500) -> Any:
    """A top-up with a Checkout Session open on the fake (Stripe settings must be on)."""
    from wallet.topups import topup_create

    return topup_create(user=user, amount_cents=cents, base_url="http://testserver/")


def balance(user: Any) -> int:
    from wallet.models import Account

    return Account.objects.get(user=user).balance


def entry_count() -> int:
    from wallet.models import Entry

    return Entry.objects.count()
