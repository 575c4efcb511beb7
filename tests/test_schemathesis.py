"""The API against its own OpenAPI schema (/api/schema/), with schemathesis.

Every operation is called in-process through the WSGI app, as a user with a funded wallet
and an API key, with generated valid and invalid input. Checks: no 5xx, every status
documented, every body (errors included) as the schema describes it.

Left out: the Stripe webhook (not in the schema: it takes Stripe-signed events and has its
own tests). The reply stream is in, with its wait bounded: a reply that no worker runs would
otherwise keep the stream open for good.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.throttling import SimpleRateThrottle
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chat import streams
from chat.models import Conversation, Message
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet

pytestmark = pytest.mark.django_db

# Examples per operation: about 30 s for the whole API on a 2-core machine.
EXAMPLES = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def in_process_requests() -> Iterator[None]:
    # The WSGI handler closes the database connection after each request; the test's
    # transaction lives on that connection (Django's test client does the same).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bounded_streams(monkeypatch) -> None:
    """A reply stream ends after its first keep-alive: no worker runs the replies sent here."""
    unbounded = streams.sse_events

    def bounded(message: Message, *, after: str = "0-0") -> Iterator[bytes]:
        for frame in unbounded(message, after=after):
            yield frame
            if frame.startswith(b": keep-alive"):
                return

    monkeypatch.setattr(streams, "KEEPALIVE_SECONDS", 0.01)
    monkeypatch.setattr(streams, "sse_events", bounded)


def seed_messages(user, model) -> dict[str, Message]:
    """A reply in every state, for generated ids to find (Hypothesis tries small integers first)."""
    conversation = Conversation.objects.create(user=user, title="Seed")
    reply = {"conversation": conversation, "role": "assistant", "requested_model": "demo", "model": model}
    seeded = {"user": Message.objects.create(conversation=conversation, role="user", content="hi")}
    seeded["done"] = Message.objects.create(
        **reply, status="done", content="**Hello**", input_tokens=3, output_tokens=2, cost=7
    )
    seeded["cancelled"] = Message.objects.create(**reply, status="cancelled", content="Hel", cost=1)
    seeded["streaming"] = Message.objects.create(**reply, status="streaming")
    seeded["failed"] = Message.objects.create(
        **reply, status="failed", error_code="provider_error", error_message="The model failed."
    )
    return seeded


@pytest.fixture
def api_schema(db, alice, chat_catalog, in_process_requests, bounded_streams, monkeypatch):  # noqa: F811
    from panels.wsgi import application

    cache.clear()
    # Generous limits, so generated requests reach the views rather than the throttle.
    for scope in ("send", "topup", "route"):
        monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, scope, "100000/min")
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: None)
    funded_wallet(alice, 50_000_000)
    seed_messages(alice, chat_catalog)
    return schemathesis.openapi.from_wsgi("/api/schema/", application).exclude(path_regex=r"stripe")


@pytest.fixture
def bearer(alice) -> dict[str, str]:
    _, secret = ApiKey.issue(user=alice, name="schemathesis")
    return {"Authorization": f"Bearer {secret}"}


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
# Once in a full run of the suite this test found its SQLite connection closed part-way
# ("Cannot operate on a closed database") after earlier tests; alone it has always passed.
# The likely cause: an earlier test's half-read test-client stream, closed by the garbage
# collector during this test, connected close_old_connections to request_finished again
# (django.test.client.closing_iterator_wrapper does), undoing `in_process_requests`, so the
# next request closed the test's connection. tests/conftest.py now closes those streams
# after each test body instead. The rerun stays until full runs have shown it unneeded.
@pytest.mark.flaky(reruns=1)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_matches_its_schema(case, bearer):
    case.call_and_validate(headers=bearer, checks=CHECKS)


def test_the_schema_covers_the_whole_api(api_schema):
    operations = {(result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()}
    assert len(operations) >= 15
    for expected in [
        ("GET", "/api/v1/wallet"),
        ("POST", "/api/v1/topups"),
        ("GET", "/api/v1/wallet/auto-topup"),
        ("PUT", "/api/v1/wallet/auto-topup"),
        ("PATCH", "/api/v1/wallet/auto-topup"),
        ("DELETE", "/api/v1/wallet/auto-topup"),
        ("POST", "/api/v1/wallet/auto-topup/card"),
        ("POST", "/api/v1/conversations/{conversation_id}/messages"),
        ("GET", "/api/v1/messages/{message_id}/stream"),
    ]:
        assert expected in operations


def test_every_operation_on_real_objects_matches_the_schema(api_schema, bearer, alice):
    """The generated run may miss the ids that exist; this walks each operation through them."""
    seed = Conversation.objects.get(title="Seed")
    seeded = {m.status if m.role == "assistant" else "user": m for m in seed.messages.all()}
    spare = Conversation.objects.create(user=alice, title="Spare")

    def check(method: str, path: str, status: int, *, body: object = None, query=None, **ids: int):
        operation = api_schema[path][method]
        kwargs = {"path_parameters": ids or None, "query": query}
        if body is not None:
            kwargs.update(body=body, media_type="application/json")
        response = operation.Case(**kwargs).call_and_validate(headers=bearer, checks=CHECKS)
        assert response.status_code == status, (method, path, ids, response.text[:300])
        return response

    check("GET", "/api/v1/models", 200)
    check("GET", "/api/v1/wallet", 200)
    check("GET", "/api/v1/wallet/entries", 200)
    check("GET", "/api/v1/wallet/entries", 404, query={"page": 99})
    check("POST", "/api/v1/topups", 201, body={"amount_usd": "5"})
    check("POST", "/api/v1/topups", 400, body={"amount_usd": "0.5"})
    auto = "/api/v1/wallet/auto-topup"
    check("GET", auto, 200)
    check("PUT", auto, 409, body={"enabled": True, "threshold_usd": "2", "amount_usd": "10"})
    check("PUT", auto, 400, body={"enabled": False, "threshold_usd": "2", "amount_usd": "0.5"})
    check("POST", auto + "/card", 400, body={})
    check("POST", auto + "/card", 200, body={"demo": "card"})
    check("PUT", auto, 200, body={"enabled": True, "threshold_usd": "2", "amount_usd": "10"})
    check("PATCH", auto, 200, body={"paused": False})
    check("PATCH", auto, 400, body={"paused": True})
    check("DELETE", auto, 204)
    check("POST", "/api/v1/route", 200, body={"content": "Classify this email as spam or not."})
    check("GET", "/api/v1/conversations", 200)
    check("POST", "/api/v1/conversations", 201, body={"title": "New"})
    check("GET", "/api/v1/conversations/{conversation_id}", 200, conversation_id=seed.pk)
    check("PATCH", "/api/v1/conversations/{conversation_id}", 200, body={"title": "Renamed"}, conversation_id=seed.pk)
    for message in seeded.values():
        check("GET", "/api/v1/messages/{message_id}", 200, message_id=message.pk)
    check("GET", "/api/v1/messages/{message_id}/stream", 200, message_id=seeded["done"].pk)
    check("GET", "/api/v1/messages/{message_id}/stream", 400, message_id=seeded["user"].pk)
    check("POST", "/api/v1/messages/{message_id}/retry", 409, message_id=seeded["done"].pk)

    send = "/api/v1/conversations/{conversation_id}/messages"
    reply = check("POST", send, 202, body={"content": "hi", "model": "demo"}, conversation_id=spare.pk).json()
    check("POST", send, 400, body={"content": "hi", "model": "no-such-model"}, conversation_id=spare.pk)
    check("GET", "/api/v1/messages/{message_id}", 200, message_id=reply["id"])
    check("GET", "/api/v1/messages/{message_id}/stream", 200, message_id=reply["id"])
    check("DELETE", "/api/v1/conversations/{conversation_id}", 409, conversation_id=spare.pk)
    check("POST", "/api/v1/messages/{message_id}/cancel", 200, message_id=reply["id"])
    check("DELETE", "/api/v1/conversations/{conversation_id}", 204, conversation_id=spare.pk)
    check("GET", "/api/v1/conversations/{conversation_id}", 404, conversation_id=spare.pk)

    failed = Conversation.objects.create(user=alice, title="Failed")
    Message.objects.create(conversation=failed, role="user", content="hi")
    last = Message.objects.create(
        conversation=failed, role="assistant", status="failed", requested_model="demo", model=seeded["done"].model
    )
    check("POST", "/api/v1/messages/{message_id}/retry", 202, message_id=last.pk)
