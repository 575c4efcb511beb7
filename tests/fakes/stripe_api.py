"""A local fake of the slice of the Stripe API that Panels uses, over real HTTP.

Standard library only (http.server in a thread), so the real `stripe` SDK talks to it
exactly as it talks to Stripe: form-encoded requests, JSON answers in Stripe's shapes,
Stripe's error bodies, and Idempotency-Key replay (the same key returns the same object;
the same key with other parameters is an idempotency_error).

    fake = FakeStripe().start()
    ... settings STRIPE_API_BASE=fake.url ...
    fake.mark_paid(session_id)      # the buyer paid: a PaymentIntent and a Charge appear
    fake.refund(charge_id, 200)     # returns the charge with its cumulative amount_refunded
    fake.complete_setup(session_id, card="declines")  # a setup-mode session saved a card
    fake.stop()

Saved cards and off-session charges (automatic top-ups) follow
https://docs.stripe.com/payments/save-and-reuse?platform=checkout: a setup-mode Checkout
Session needs `currency` (dynamic payment methods) and attaches the SetupIntent's card to
its `customer`; a PaymentIntent with `off_session=true` must also have `confirm=true`
(https://docs.stripe.com/api/payment_intents/create#create_payment_intent-off_session);
a failed off-session charge answers 402 with a card error whose body carries the
PaymentIntent, now `requires_payment_method`; a detached card can't be charged or
detached again (https://docs.stripe.com/api/payment_methods/detach).

Payments that settle later (bank debits; https://docs.stripe.com/payments/paymentintents/lifecycle)
stay `processing` until the test settles them (`settle(intent_id, succeeds=...)`): to
`succeeded` with a Charge, or back to `requires_payment_method` with a `last_payment_error`.
Retrieving a PaymentIntent (https://docs.stripe.com/api/payment_intents/retrieve) returns it as
it stands; an unknown id is a 404 `resource_missing`. Cancelling one
(https://docs.stripe.com/api/payment_intents/cancel) is refused unless it is
`requires_payment_method`, `requires_capture`, `requires_confirmation` or `requires_action`
(Stripe allows `processing` only "in rare cases"; the fake never does), and is refused for a
Checkout Session's PaymentIntent, whose session must be expired instead.

Deleting a Customer (https://docs.stripe.com/api/customers/delete) answers
`{"id", "object": "customer", "deleted": true}`; an id that "does not exist" raises an
error, the 404 `resource_missing` (a Customer deleted before included: Stripe answers a
second delete "No such customer"). A deleted Customer can still be retrieved, as
`deleted: true`, and deleting it "removes all credit card details and prevents any further
operations": its cards are detached, and a PaymentIntent or a setup-mode Checkout Session
(its SetupIntent) for it is refused as for a Customer Stripe does not know.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_test_{next(_ids):06d}{secrets.token_hex(6)}"


def parse_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`, `expand[]=x`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "[]":
                part = str(sum(1 for k in node if k.isdigit()))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


class FakeStripe:
    def __init__(self, api_key: str = "sk_test_x") -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.setup_intents: dict[str, dict[str, Any]] = {}
        self.payment_methods: dict[str, dict[str, Any]] = {}
        self.idempotent: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.fail_next: int = 0  # answer this many requests with a 500, to test retries and outages
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> FakeStripe:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-stripe", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- what tests do -------------------------------------------------------------
    def session(self, session_id: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.sessions[session_id])

    def set_created(self, session_id: str, created: int) -> None:
        with self.lock:
            self.sessions[session_id]["created"] = created

    def mark_paid(self, session_id: str) -> dict[str, Any]:
        """The buyer paid: the session completes, with a PaymentIntent and a Charge behind it."""
        with self.lock:
            session = self.sessions[session_id]
            # "After it expires, a customer can't complete a Checkout Session"
            # (https://docs.stripe.com/api/checkout/sessions/expire).
            # (A complete but unpaid session is a delayed payment method clearing later.)
            assert session["status"] != "expired", "an expired Checkout Session can't be paid"
            intent_id = session.get("payment_intent") or new_id("pi")
            charge_id = new_id("ch")
            metadata = dict(session.get("_payment_metadata") or {})
            self.charges[charge_id] = {
                "id": charge_id,
                "object": "charge",
                "amount": session["amount_total"],
                "amount_captured": session["amount_total"],
                "amount_refunded": 0,
                "captured": True,
                "currency": session["currency"],
                "created": int(time.time()),
                "livemode": False,
                "metadata": metadata,
                "paid": True,
                "payment_intent": intent_id,
                "receipt_url": f"https://pay.stripe.com/receipts/payment/{charge_id}",
                "refunded": False,
                "refunds": {"object": "list", "data": [], "has_more": False, "url": f"/v1/charges/{charge_id}/refunds"},
                "status": "succeeded",
                "disputed": False,
            }
            self.payment_intents[intent_id] = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": session["amount_total"],
                "amount_received": session["amount_total"],
                "currency": session["currency"],
                "created": int(time.time()),
                "latest_charge": charge_id,
                "livemode": False,
                "metadata": metadata,
                "status": "succeeded",
                "_session": session_id,
            }
            session.update(payment_intent=intent_id, payment_status="paid", status="complete")
            return self._public(session)

    def mark_unpaid(self, session_id: str) -> dict[str, Any]:
        """The buyer finished checkout with a delayed method (a bank debit): complete, not paid
        yet, its PaymentIntent `processing`."""
        with self.lock:
            session = self.sessions[session_id]
            intent_id = session.get("payment_intent") or new_id("pi")
            self.payment_intents.setdefault(
                intent_id,
                {
                    "id": intent_id,
                    "object": "payment_intent",
                    "amount": session["amount_total"],
                    "amount_received": 0,
                    "currency": session["currency"],
                    "created": int(time.time()),
                    "latest_charge": None,
                    "last_payment_error": None,
                    "livemode": False,
                    "metadata": dict(session.get("_payment_metadata") or {}),
                    "status": "processing",
                    "_session": session_id,
                },
            )
            session.update(payment_intent=intent_id, payment_status="unpaid")
            session["status"] = "complete"
            return self._public(session)

    def settle(self, intent_id: str, *, succeeds: bool) -> dict[str, Any]:
        """A `processing` payment ends: `succeeded` with a Charge, or failed, back to
        `requires_payment_method` (https://docs.stripe.com/payments/paymentintents/lifecycle).
        No event is sent: the tests post one, or lose it."""
        with self.lock:
            intent = self.payment_intents[intent_id]
            assert intent["status"] == "processing", "only a processing PaymentIntent settles later"
            if succeeds:
                charge = self._new_charge(intent)
                intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"])
            else:
                intent.update(
                    status="requires_payment_method",
                    last_payment_error={
                        "type": "card_error",
                        "code": "payment_method_provider_decline",
                        "message": "The bank declined the debit.",
                    },
                )
            return self._public(intent)

    def refund(self, charge_id: str, amount: int) -> dict[str, Any]:
        """Refund `amount` cents more; returns the charge (amount_refunded is cumulative)."""
        with self.lock:
            charge = self.charges[charge_id]
            refund = {
                "id": new_id("re"),
                "object": "refund",
                "amount": amount,
                "charge": charge_id,
                "payment_intent": charge["payment_intent"],
                "status": "succeeded",
                "created": int(time.time()),
            }
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            charge["refunds"]["data"].insert(0, refund)
            return copy.deepcopy(charge)

    # Test cards by behaviour, after Stripe's test PaymentMethods (https://docs.stripe.com/testing):
    # pm_card_visa succeeds, pm_card_chargeDeclined is declined, pm_card_authenticationRequired
    # needs the cardholder (off-session: declined with authentication_required).
    CARDS = {
        "visa": ("visa", "4242", "succeeds"),
        "declines": ("visa", "0002", "card_declined"),
        "authentication_required": ("visa", "3184", "authentication_required"),
        # Stands for a method that settles later (a bank debit): the charge answers `processing`.
        "processing": ("us_bank_account", "6789", "processing"),
    }

    def complete_setup(self, session_id: str, card: str = "visa") -> dict[str, Any]:
        """The buyer saved a card in a setup-mode session: a succeeded SetupIntent and a
        PaymentMethod attached to the session's customer."""
        brand, last4, behaviour = self.CARDS[card]
        with self.lock:
            session = self.sessions[session_id]
            assert session["mode"] == "setup", "only a setup-mode session saves a card this way"
            assert session["status"] == "open", "only an open Checkout Session can be completed"
            customer = self.customers.get(session.get("customer") or "")
            assert not (customer and customer.get("deleted")), "a deleted Customer can't save a card"
            method_id = new_id("pm")
            self.payment_methods[method_id] = {
                "id": method_id,
                "object": "payment_method",
                "type": "card",
                "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2030, "country": "US"},
                "customer": session.get("customer"),
                "created": int(time.time()),
                "livemode": False,
                "metadata": {},
                "_behaviour": behaviour,
            }
            intent_id = new_id("seti")
            self.setup_intents[intent_id] = {
                "id": intent_id,
                "object": "setup_intent",
                "customer": session.get("customer"),
                "payment_method": method_id,
                "status": "succeeded",
                "usage": "off_session",
                "metadata": dict(session.get("_setup_metadata") or {}),
                "created": int(time.time()),
                "livemode": False,
            }
            session.update(setup_intent=intent_id, status="complete", payment_status="no_payment_required")
            return self._public(session)

    def customer(self, customer_id: str) -> dict[str, Any]:
        with self.lock:
            return self._public(self.customers[customer_id])

    def payment_method(self, method_id: str) -> dict[str, Any]:
        with self.lock:
            return self._public(self.payment_methods[method_id])

    def intent(self, intent_id: str) -> dict[str, Any]:
        with self.lock:
            return self._public(self.payment_intents[intent_id])

    def charge_for(self, session_id: str) -> dict[str, Any]:
        with self.lock:
            intent = self.payment_intents[self.sessions[session_id]["payment_intent"]]
            return copy.deepcopy(self.charges[intent["latest_charge"]])

    def calls(self, method: str, path_prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(path_prefix)]

    # -- the API ---------------------------------------------------------------------
    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}

    def handle(self, method: str, path: str, query: dict[str, Any], form: dict[str, Any]) -> tuple[int, dict]:
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._session_create(form)
        if method == "GET" and path == "/v1/checkout/sessions":
            return self._session_list(query)
        m = re.fullmatch(r"/v1/checkout/sessions/([^/]+)", path)
        if method == "GET" and m:
            session = self.sessions.get(m.group(1))
            if session is None:
                return _missing("checkout session", m.group(1))
            session = self._public(session)
            if "setup_intent" in _expand(query) and session.get("setup_intent"):
                session["setup_intent"] = copy.deepcopy(self.setup_intents[session["setup_intent"]])
            return 200, session
        m = re.fullmatch(r"/v1/checkout/sessions/([^/]+)/expire", path)
        if method == "POST" and m:
            return self._session_expire(m.group(1))
        m = re.fullmatch(r"/v1/payment_intents/([^/]+)", path)
        if method == "GET" and m:
            intent = self.payment_intents.get(m.group(1))
            if intent is None:
                return _missing("payment_intent", m.group(1))
            intent = self._public(intent)
            expand = query.get("expand") or []
            if isinstance(expand, str):
                expand = [expand]
            if "latest_charge" in expand and intent.get("latest_charge"):
                intent["latest_charge"] = copy.deepcopy(self.charges[intent["latest_charge"]])
            if "charges" in expand:  # the pre-2022 shape, for older API versions
                charge = self.charges.get(self.payment_intents[m.group(1)].get("latest_charge") or "")
                intent["charges"] = {"object": "list", "data": [charge] if charge else [], "has_more": False}
            return 200, intent
        if method == "POST" and path == "/v1/customers":
            return self._customer_create(form)
        m = re.fullmatch(r"/v1/customers/([^/]+)", path)
        if method == "GET" and m:
            return self._customer_retrieve(m.group(1))
        if method == "DELETE" and m:
            return self._customer_delete(m.group(1))
        if method == "POST" and path == "/v1/payment_intents":
            return self._intent_create(form)
        m = re.fullmatch(r"/v1/payment_intents/([^/]+)/cancel", path)
        if method == "POST" and m:
            return self._intent_cancel(m.group(1), form)
        m = re.fullmatch(r"/v1/setup_intents/([^/]+)", path)
        if method == "GET" and m:
            intent = self.setup_intents.get(m.group(1))
            if intent is None:
                return _missing("setup_intent", m.group(1))
            intent = copy.deepcopy(intent)
            if "payment_method" in _expand(query) and intent.get("payment_method"):
                intent["payment_method"] = self._public(self.payment_methods[intent["payment_method"]])
            return 200, intent
        m = re.fullmatch(r"/v1/payment_methods/([^/]+)", path)
        if method == "GET" and m:
            found = self.payment_methods.get(m.group(1))
            return (200, self._public(found)) if found else _missing("payment_method", m.group(1))
        m = re.fullmatch(r"/v1/payment_methods/([^/]+)/detach", path)
        if method == "POST" and m:
            return self._method_detach(m.group(1))
        m = re.fullmatch(r"/v1/charges/([^/]+)", path)
        if method == "GET" and m:
            charge = self.charges.get(m.group(1))
            if charge is None:
                return _missing("charge", m.group(1))
            return 200, copy.deepcopy(charge)
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _session_create(self, form: dict[str, Any]) -> tuple[int, dict]:
        setup = form.get("mode") == "setup"
        # Setup mode has no line items, and needs `currency` with dynamic payment methods
        # (https://docs.stripe.com/payments/save-and-reuse?platform=checkout).
        for required in ("mode", "success_url", "currency" if setup else "line_items"):
            if not form.get(required):
                return 400, _error("invalid_request_error", f"Missing required param: {required}.", param=required)
        if form.get("customer") and not self._live_customer(form["customer"]):
            return _missing("customer", form["customer"], param="customer")
        if setup and form.get("payment_intent_data"):
            return 400, _error(
                "invalid_request_error",
                "payment_intent_data can only be used in payment mode.",
                param="payment_intent_data",
            )
        total = 0
        currency = ""
        for item in form.get("line_items") or []:
            price = item.get("price_data") or {}
            total += int(price.get("unit_amount") or 0) * int(item.get("quantity") or 1)
            currency = price.get("currency") or currency
        session_id = new_id("cs")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": form.get("cancel_url"),
            "client_reference_id": form.get("client_reference_id"),
            "created": int(time.time()),
            "currency": currency or form.get("currency"),
            "customer": form.get("customer"),
            "customer_email": form.get("customer_email"),
            "expires_at": int(time.time()) + 86400,
            "livemode": False,
            "metadata": form.get("metadata") or {},
            "mode": form["mode"],
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": form["success_url"],
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "_payment_metadata": (form.get("payment_intent_data") or {}).get("metadata") or {},
            "_setup_metadata": (form.get("setup_intent_data") or {}).get("metadata") or {},
        }
        if setup:
            session.update(amount_subtotal=None, amount_total=None, setup_intent=None)
        self.sessions[session_id] = session
        return 200, self._public(session)

    def _customer_create(self, form: dict[str, Any]) -> tuple[int, dict]:
        customer_id = new_id("cus")
        self.customers[customer_id] = {
            "id": customer_id,
            "object": "customer",
            "email": form.get("email"),
            "metadata": form.get("metadata") or {},
            "created": int(time.time()),
            "livemode": False,
        }
        return 200, copy.deepcopy(self.customers[customer_id])

    def _live_customer(self, customer_id: str) -> bool:
        found = self.customers.get(customer_id)
        return found is not None and not found.get("deleted")

    def _customer_retrieve(self, customer_id: str) -> tuple[int, dict]:
        """A deleted Customer "can still be retrieved", as `deleted: true`."""
        found = self.customers.get(customer_id)
        if found is None:
            return _missing("customer", customer_id)
        if found.get("deleted"):
            return 200, {"id": customer_id, "object": "customer", "deleted": True}
        return 200, self._public(found)

    def _customer_delete(self, customer_id: str) -> tuple[int, dict]:
        """https://docs.stripe.com/api/customers/delete: permanent; its cards go with it."""
        if not self._live_customer(customer_id):
            return _missing("customer", customer_id)
        self.customers[customer_id] = {"id": customer_id, "object": "customer", "deleted": True}
        for found in self.payment_methods.values():
            if found.get("customer") == customer_id:
                found["customer"] = None
                found["_detached"] = True
        return 200, {"id": customer_id, "object": "customer", "deleted": True}

    def _method_detach(self, method_id: str) -> tuple[int, dict]:
        found = self.payment_methods.get(method_id)
        if found is None:
            return _missing("payment_method", method_id)
        if not found.get("customer"):
            return 400, _error(
                "invalid_request_error",
                "The payment method you provided is not attached to a customer so detachment is impossible.",
            )
        found["customer"] = None
        found["_detached"] = True
        return 200, self._public(found)

    def _intent_create(self, form: dict[str, Any]) -> tuple[int, dict]:
        """POST /v1/payment_intents, for saved cards charged off-session."""
        for required in ("amount", "currency"):
            if not form.get(required):
                return 400, _error("invalid_request_error", f"Missing required param: {required}.", param=required)
        confirm = form.get("confirm") == "true"
        off_session = form.get("off_session") in ("true", "one_off", "recurring")
        if off_session and not confirm:
            return 400, _error(
                "invalid_request_error",
                "off_session can only be used with confirm=true.",
                param="off_session",
            )
        amount = int(form["amount"])
        if amount < 50:
            # "The minimum amount is $0.50 US" (https://docs.stripe.com/api/payment_intents/object#payment_intent_object-amount)
            return 400, _error("invalid_request_error", "Amount must be at least $0.50 usd", param="amount")
        if form.get("customer") and not self._live_customer(form["customer"]):
            return _missing("customer", form["customer"], param="customer")
        method = self.payment_methods.get(form.get("payment_method") or "")
        if form.get("payment_method") and method is None:
            return _missing("payment_method", form["payment_method"])
        if method is not None and (method.get("_detached") or method.get("customer") != form.get("customer")):
            return 400, _error(
                "invalid_request_error",
                "The provided PaymentMethod was previously used without being attached to a Customer or was "
                "detached from a Customer, and may not be used again."
                if method.get("_detached")
                else "The provided PaymentMethod does not belong to the Customer given.",
                param="payment_method",
            )
        intent_id = new_id("pi")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": form["currency"],
            "customer": form.get("customer"),
            "payment_method": form.get("payment_method"),
            "description": form.get("description"),
            "created": int(time.time()),
            "latest_charge": None,
            "last_payment_error": None,
            "livemode": False,
            "metadata": form.get("metadata") or {},
            "status": "requires_payment_method" if method is None else "requires_confirmation",
        }
        self.payment_intents[intent_id] = intent
        if not confirm or method is None:
            return 200, copy.deepcopy(intent)
        behaviour = method["_behaviour"]
        if behaviour == "processing":
            intent.update(status="processing")
            return 200, self._public(intent)
        if behaviour != "succeeds":
            error = {
                "type": "card_error",
                "code": behaviour,
                "message": "Your card was declined."
                if behaviour == "card_declined"
                else "Your card was declined. This transaction requires authentication.",
                "payment_method": self._public(method),
            }
            if behaviour == "card_declined":
                error["decline_code"] = "generic_decline"
            intent.update(status="requires_payment_method", last_payment_error=copy.deepcopy(error))
            return 402, {"error": {**error, "payment_intent": copy.deepcopy(intent)}}
        charge = self._new_charge(intent)
        intent.update(status="succeeded", amount_received=amount, latest_charge=charge["id"])
        return 200, copy.deepcopy(intent)

    def _new_charge(self, intent: dict[str, Any]) -> dict[str, Any]:
        charge_id = new_id("ch")
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "captured": True,
            "currency": intent["currency"],
            "created": int(time.time()),
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "paid": True,
            "payment_intent": intent["id"],
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{charge_id}",
            "refunded": False,
            "refunds": {"object": "list", "data": [], "has_more": False, "url": f"/v1/charges/{charge_id}/refunds"},
            "status": "succeeded",
            "disputed": False,
        }
        return self.charges[charge_id]

    CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action")

    def _intent_cancel(self, intent_id: str, form: dict[str, Any]) -> tuple[int, dict]:
        """https://docs.stripe.com/api/payment_intents/cancel: only in CANCELABLE statuses, and
        not a Checkout Session's PaymentIntent (expire the session instead)."""
        intent = self.payment_intents.get(intent_id)
        if intent is None:
            return _missing("payment_intent", intent_id)
        if intent.get("_session"):
            return 400, _error(
                "invalid_request_error",
                "You can't cancel the PaymentIntent for a Checkout Session. Expire the Checkout Session instead.",
            )
        if intent["status"] not in self.CANCELABLE:
            return 400, _error(
                "invalid_request_error",
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses may be canceled: "
                + ", ".join(self.CANCELABLE)
                + ".",
                code="payment_intent_unexpected_state",
            )
        intent.update(
            status="canceled",
            canceled_at=int(time.time()),
            cancellation_reason=form.get("cancellation_reason") or None,
        )
        return 200, self._public(intent)

    def _session_expire(self, session_id: str) -> tuple[int, dict]:
        """https://docs.stripe.com/api/checkout/sessions/expire: "A Checkout Session can be
        expired when it is in one of these statuses: open"; otherwise an error."""
        session = self.sessions.get(session_id)
        if session is None:
            return _missing("checkout session", session_id)
        if session["status"] != "open":
            return 400, _error(
                "invalid_request_error",
                f"This Checkout Session is {session['status']}: only an open session can be expired.",
            )
        session["status"] = "expired"
        return 200, self._public(session)

    def _session_list(self, query: dict[str, Any]) -> tuple[int, dict]:
        created = query.get("created") or {}
        gte = int(created.get("gte", 0)) if isinstance(created, dict) else 0
        limit = max(1, min(100, int(query.get("limit") or 10)))
        rows = sorted(self.sessions.values(), key=lambda s: (s["created"], s["id"]), reverse=True)
        rows = [s for s in rows if s["created"] >= gte]
        if query.get("status"):
            rows = [s for s in rows if s["status"] == query["status"]]
        after = query.get("starting_after")
        if after:
            ids = [s["id"] for s in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        page = rows[:limit]
        return 200, {
            "object": "list",
            "data": [self._public(s) for s in page],
            "has_more": len(rows) > limit,
            "url": "/v1/checkout/sessions",
        }


def _expand(query: dict[str, Any]) -> list[str]:
    expand = query.get("expand") or []
    return [expand] if isinstance(expand, str) else list(expand)


def _error(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **extra}}


def _missing(what: str, ident: str, *, param: str = "id") -> tuple[int, dict]:
    return 404, _error("invalid_request_error", f"No such {what}: '{ident}'", code="resource_missing", param=param)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStripe
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", f"req_{secrets.token_hex(8)}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, method: str) -> None:
        fake = self.fake
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        query = parse_form(split.query)
        form = parse_form(body) if method == "POST" else {}
        key = self.headers.get("Idempotency-Key") or ""
        with fake.lock:
            fake.requests.append(
                {"method": method, "path": split.path, "query": query, "form": form, "idempotency_key": key}
            )
            if fake.fail_next > 0:
                fake.fail_next -= 1
                return self._answer(500, _error("api_error", "Something went wrong on Stripe's end."))
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return self._answer(401, _error("invalid_request_error", "Invalid API Key provided."))
            if method == "POST" and key and key in fake.idempotent:
                first_form, status, answer = fake.idempotent[key]
                if first_form != form:
                    return self._answer(
                        400,
                        _error(
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same parameters they were "
                            "first used with.",
                        ),
                    )
                return self._answer(status, answer, {"Idempotent-Replayed": "true"})
            status, answer = fake.handle(method, split.path, query, form)
            if method == "POST" and key:
                fake.idempotent[key] = (form, status, answer)
        self._answer(status, answer)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
