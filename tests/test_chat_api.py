"""The chat HTTP API: each endpoint's response, then what it left in the database."""

from __future__ import annotations

import contextlib
import json
import socket

import pytest
from django.db import connection

from chat import streams, worker
from chat.models import Conversation, Message, ModelSpec
from chat.router import route_decide
from chat.tokens import REPLY_PRIMING_TOKENS, estimate_message_tokens, model_message_tokens
from panels.celery import app as celery_app
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server, parse_events, read_until_end, text_of  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold
from wallet.services import cost_in_credits, wallet_freeze

pytestmark = pytest.mark.django_db

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


@pytest.fixture
def api(api_client, alice, chat_catalog, queued):  # noqa: F811
    funded_wallet(alice, 1_000_000)
    api_client.force_login(alice)
    return api_client


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(user=alice, title="Test")


def send(api, conversation, content="[demo:tokens=5] hi", model="demo", **extra):
    return api.post(
        f"/api/v1/conversations/{conversation.pk}/messages",
        {"content": content, "model": model, **extra},
        format="json",
    )


def error_of(response) -> dict:
    return response.json()["error"]


# --- auth and catalog ---------------------------------------------------------------


def test_the_api_needs_a_login(api_client, db):
    response = api_client.get("/api/v1/conversations")
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"


def test_an_api_key_works_as_well_as_a_session(api_client, alice, conversation):
    _, key = ApiKey.issue(user=alice, name="test")
    response = api_client.get("/api/v1/conversations", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    assert [c["id"] for c in response.json()] == [conversation.pk]


def test_models_lists_the_catalog_with_availability(api, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    response = api.get("/api/v1/models")
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json()}
    assert models["demo"]["available"] is True and models["demo"]["is_demo"] is True
    assert models["gpt-4o"]["available"] is False
    # Users are told it is unavailable, never which variable the operator forgot.
    assert models["gpt-4o"]["unavailable_reason"] == "temporarily unavailable"
    assert "OPENAI_API_KEY" not in response.content.decode()
    assert models["gpt-4o-mini"]["input_price"] == "0.1500" and models["gpt-4o-mini"]["output_price"] == "0.6000"
    assert models["gpt-4o-mini"]["context_window"] == 128_000 and models["mistral-small"]["image_input"] is False


# --- conversations ----------------------------------------------------------------


def test_conversations_create_list_rename_delete(api, alice, bob):
    Conversation.objects.create(user=bob, title="Bob's")
    response = api.post("/api/v1/conversations", {"title": "  Plans  "}, format="json")
    assert response.status_code == 201
    created = response.json()
    assert created["title"] == "Plans"
    conversation = Conversation.objects.get(pk=created["id"])
    assert conversation.user == alice

    listed = api.get("/api/v1/conversations").json()
    assert [c["title"] for c in listed] == ["Plans"]

    response = api.patch(f"/api/v1/conversations/{conversation.pk}", {"title": "Trip"}, format="json")
    assert response.status_code == 200 and response.json()["title"] == "Trip"
    conversation.refresh_from_db()
    assert conversation.title == "Trip"

    detail = api.get(f"/api/v1/conversations/{conversation.pk}").json()
    assert detail["messages"] == [] and detail["title"] == "Trip"

    assert api.delete(f"/api/v1/conversations/{conversation.pk}").status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_a_conversation_with_a_running_reply_is_not_deleted(api, conversation):
    assert send(api, conversation).status_code == 202
    response = api.delete(f"/api/v1/conversations/{conversation.pk}")
    assert response.status_code == 409 and error_of(response)["code"] == "reply_in_progress"
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_conversation_detail_lists_its_messages_in_order(api, conversation):
    reply_id = send(api, conversation, "First [demo:tokens=5]").json()["id"]
    detail = api.get(f"/api/v1/conversations/{conversation.pk}").json()
    assert [(m["role"], m["status"]) for m in detail["messages"]] == [("user", "done"), ("assistant", "queued")]
    assert detail["messages"][0]["content"] == "First [demo:tokens=5]"
    assert detail["messages"][1]["id"] == reply_id and detail["messages"][1]["model"] == "demo"


# --- sending -------------------------------------------------------------------------


def test_send_holds_the_worst_case_and_queues_the_reply(
    api, alice, conversation, queued, django_capture_on_commit_callbacks
):
    content = "[demo:tokens=5] What is a ledger?"
    with django_capture_on_commit_callbacks(execute=True):
        response = send(api, conversation, content)
    assert response.status_code == 202
    body = response.json()
    reply = Message.objects.get(pk=body["id"])
    demo = ModelSpec.objects.get(slug="demo")
    estimate = REPLY_PRIMING_TOKENS + estimate_message_tokens(content)
    worst = cost_in_credits(
        input_tokens=estimate, output_tokens=demo.max_output_tokens, input_price=demo.input_price,
        output_price=demo.output_price,
    )  # fmt: skip
    assert body == {
        "id": reply.pk,
        "status": "queued",
        "model": "demo",
        "hold": worst,
        "routed_by": "",
        "conversation": conversation.pk,
        "user_message": reply.context_ids[-1],
        "stream_url": f"/api/v1/messages/{reply.pk}/stream",
    }
    assert queued == [reply.pk]
    prompt = Message.objects.get(pk=body["user_message"])
    assert prompt.role == "user" and prompt.content == content
    assert reply.role == "assistant" and reply.status == "queued" and reply.input_estimate == estimate
    hold = reply.hold
    assert hold.amount == worst and hold.status == Hold.Status.PENDING
    assert hold.idempotency_key == hold.reference == f"message:{reply.pk}"
    assert Account.objects.get(user=alice).held == worst
    conversation.refresh_from_db()
    assert conversation.title == "Test"  # a title the user gave is kept


def test_the_first_message_names_an_untitled_conversation(api, alice):
    conversation = Conversation.objects.create(user=alice)
    send(api, conversation, "How do holds work in a double-entry ledger, and why do they expire after a while?")
    conversation.refresh_from_db()
    assert conversation.title.startswith("How do holds work") and len(conversation.title) <= 60


@pytest.mark.money  # the send's own statements differ on PostgreSQL (chat/send_sql.py)
def test_a_send_leaves_its_reply_for_its_first_reader(api, alice, bob, conversation):
    """What the stream request's set-up needs of the reply (its owner, the name of its stream),
    from the send, for its owner's first reader only: the stream is the one the worker writes."""
    reply_id = send(api, conversation).json()["id"]
    assert streams.accepted_for_reader(user_id=bob.pk, message_id=reply_id) is None  # not bob's
    kept = streams.accepted_for_reader(user_id=alice.pk, message_id=reply_id)
    stored = Message.objects.get(pk=reply_id)
    assert (kept.pk, kept.role, kept.status) == (reply_id, "assistant", "queued")
    assert streams.stream_key(kept) == streams.stream_key(stored)
    assert streams.accepted_for_reader(user_id=alice.pk, message_id=reply_id) is None  # once


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"content": "   ", "model": "demo"}, "empty_message"),
        ({"content": "hi", "model": "gpt-9"}, "unknown_model"),
        ({"content": "hi", "model": "gpt-4o"}, "model_unavailable"),
        (
            {"content": "hi", "model": "demo", "attachments": ["data:text/html;base64,PHNjcmlwdD4="]},
            "invalid_attachments",
        ),
        ({"content": "hi", "model": "demo", "attachments": [PNG] * 5}, "invalid_attachments"),
        ({"model": "demo"}, "invalid_request"),
    ],
)
def test_send_refuses_bad_requests_and_stores_nothing(api, conversation, monkeypatch, payload, code):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    response = api.post(f"/api/v1/conversations/{conversation.pk}/messages", payload, format="json")
    assert response.status_code == 400
    assert error_of(response)["code"] == code
    assert error_of(response)["message"]
    assert not Message.objects.exists() and not Hold.objects.exists()


def test_images_go_only_to_models_that_take_them(api, conversation, monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "test-key")
    response = send(api, conversation, "What is this?", model="mistral-small", attachments=[PNG])
    assert response.status_code == 400 and error_of(response)["code"] == "images_not_supported"
    assert not Message.objects.exists()

    response = send(api, conversation, "What is this?", model="demo", attachments=[{"type": "image", "url": PNG}])
    assert response.status_code == 202
    prompt = Message.objects.get(role="user")
    assert prompt.attachments == [{"type": "image", "url": PNG}]
    reply = Message.objects.get(role="assistant")
    demo = reply.model
    assert reply.input_estimate == REPLY_PRIMING_TOKENS + model_message_tokens(demo, "What is this?", [PNG])


def test_a_message_too_long_for_the_model_is_refused_before_any_hold(api, conversation):
    response = send(api, conversation, "word " * 20_000)  # ~25,000 tokens; the demo model takes 16,000
    assert response.status_code == 400
    assert error_of(response)["code"] == "message_too_long"
    assert "too long for Demo model" in error_of(response)["message"]
    assert not Message.objects.exists() and not Hold.objects.exists()


def test_too_few_credits_is_402_with_a_top_up_link_and_nothing_stored(api_client, bob, chat_catalog):  # noqa: F811
    conversation = Conversation.objects.create(user=bob)
    api_client.force_login(bob)
    response = send(api_client, conversation)
    assert response.status_code == 402
    error = error_of(response)
    assert error["code"] == "insufficient_credits"
    assert error["topup_url"] == "/wallet/topup/" and "/wallet/topup/" in error["message"]
    assert error["available"] == 0 and error["needed"] > 0
    assert not Message.objects.filter(conversation=conversation).exists()
    assert not Hold.objects.exists()
    conversation.refresh_from_db()
    assert conversation.title == ""


def test_a_frozen_wallet_is_403(api, alice, conversation):
    wallet_freeze(account=Account.objects.get(user=alice), reason="a disputed payment")
    response = send(api, conversation)
    assert response.status_code == 403 and error_of(response)["code"] == "wallet_frozen"
    assert "disputed payment" in error_of(response)["message"]
    assert not Message.objects.exists()


def test_history_is_trimmed_to_the_context_window(api, conversation):
    demo = ModelSpec.objects.get(slug="demo")
    # Room for the new message and two earlier ones of ~30 tokens each.
    ModelSpec.objects.filter(pk=demo.pk).update(context_window=demo.max_output_tokens + 110)
    earlier = []
    for i in range(6):
        role = "user" if i % 2 == 0 else "assistant"
        earlier.append(Message.objects.create(conversation=conversation, role=role, content=f"{i} " + "x" * 100))
    content = "y" * 100
    reply = Message.objects.get(pk=send(api, conversation, content).json()["id"])
    prompt_id = reply.context_ids[-1]
    assert reply.context_ids == [earlier[-2].pk, earlier[-1].pk, prompt_id]
    per_message = estimate_message_tokens("0 " + "x" * 100)
    assert reply.input_estimate == REPLY_PRIMING_TOKENS + estimate_message_tokens(content) + 2 * per_message


def test_failed_replies_are_left_out_of_the_context(api, conversation):
    first = Message.objects.create(conversation=conversation, role="user", content="one")
    Message.objects.create(conversation=conversation, role="assistant", status="failed", content="")
    reply = Message.objects.get(pk=send(api, conversation, "two").json()["id"])
    assert reply.context_ids[:-1] == [first.pk]


# --- Auto ---------------------------------------------------------------------------


def test_auto_with_no_provider_key_uses_the_demo_model(api, conversation, monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    body = send(api, conversation, "Write a subject line for a sale", model="auto").json()
    assert body["model"] == "demo"
    assert body["routed_by"].startswith("Auto -> Demo model: ")
    reply = Message.objects.get(pk=body["id"])
    assert reply.requested_model == "auto" and reply.routed_by == body["routed_by"]


@pytest.mark.parametrize(
    "content",
    [
        "Write a subject line for our spring sale",
        "Debug this race condition: two threads deadlock on a mutex under load, then panic with a "
        'segfault in the allocator.\nTraceback (most recent call last):\n  File "app.py", line 3\n'
        "Explain why, step by step, and propose an architecture that avoids it.",
    ],
)
def test_auto_picks_the_tier_the_router_decides(api, conversation, monkeypatch, content):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    decision = route_decide(content=content)
    assert decision.tier == ("flagship" if "Debug" in content else "cheap")
    body = send(api, conversation, content, model="auto").json()
    expected = {"cheap": "gpt-4o-mini", "flagship": "gpt-4o"}[decision.tier]
    assert body["model"] == expected
    name = ModelSpec.objects.get(slug=expected).name
    assert body["routed_by"] == f"Auto -> {name}: {decision.reason}"
    assert Message.objects.get(pk=body["id"]).model.slug == expected


# --- one message: detail, cancel, retry -----------------------------------------------


def test_message_detail(api, conversation):
    reply_id = send(api, conversation).json()["id"]
    Message.objects.filter(pk=reply_id).update(
        status="done", content="Hello <b>there</b>", input_tokens=12, output_tokens=3, cost=7
    )
    body = api.get(f"/api/v1/messages/{reply_id}").json()
    assert body["status"] == "done" and body["content"] == "Hello <b>there</b>"
    assert (body["input_tokens"], body["output_tokens"], body["cost"]) == (12, 3, 7)
    assert body["model"] == "demo" and body["model_name"] == "Demo model"
    assert body["error"] is None and body["usage_estimated"] is False
    assert body["role"] == "assistant" and body["conversation"] == conversation.pk


def test_a_streaming_message_shows_the_text_so_far(api, conversation):
    reply = Message.objects.get(pk=send(api, conversation).json()["id"])
    Message.objects.filter(pk=reply.pk).update(status="streaming")
    writer = streams.ReplyWriter(reply)
    writer.delta("Hel")
    writer.delta("lo")
    assert api.get(f"/api/v1/messages/{reply.pk}").json()["content"] == "Hello"


def test_cancel_a_queued_reply_releases_its_hold(api, alice, conversation):
    reply_id = send(api, conversation).json()["id"]
    response = api.post(f"/api/v1/messages/{reply_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["cost"] == 0
    reply = Message.objects.get(pk=reply_id)
    assert reply.status == "cancelled" and reply.cancel_requested is True
    assert reply.hold.status == Hold.Status.VOIDED
    assert Account.objects.get(user=alice).held == 0
    # Cancelling again changes nothing.
    assert api.post(f"/api/v1/messages/{reply_id}/cancel").json()["status"] == "cancelled"


def test_a_user_message_cannot_be_cancelled_retried_or_streamed(api, conversation):
    prompt_id = send(api, conversation).json()["user_message"]
    assert error_of(api.post(f"/api/v1/messages/{prompt_id}/cancel"))["code"] == "not_a_reply"
    assert api.post(f"/api/v1/messages/{prompt_id}/retry").status_code == 409
    response = api.get(f"/api/v1/messages/{prompt_id}/stream")
    assert response.status_code == 400 and error_of(response)["code"] == "not_a_reply"


def test_retry_a_failed_reply(api, alice, conversation, queued, django_capture_on_commit_callbacks):
    failed_id = send(api, conversation, "[demo:tokens=5] hi").json()["id"]
    failed = Message.objects.get(pk=failed_id)
    worker.message_fail(failed, code="provider_error", text="The model provider had an error (HTTP 500).")

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/messages/{failed_id}/retry")
    assert response.status_code == 202
    body = response.json()
    retry = Message.objects.get(pk=body["id"])
    assert retry.retry_of_id == failed_id and retry.status == "queued"
    assert retry.context_ids == failed.context_ids
    assert retry.hold.status == Hold.Status.PENDING and retry.hold.idempotency_key == f"message:{retry.pk}"
    assert queued == [retry.pk]
    assert api.get(f"/api/v1/messages/{failed_id}").json()["error"]["code"] == "provider_error"

    # Neither the failed reply (no longer the latest) nor a queued one can be retried.
    assert error_of(api.post(f"/api/v1/messages/{failed_id}/retry"))["code"] == "not_retryable"
    assert api.post(f"/api/v1/messages/{retry.pk}/retry").status_code == 409


# --- another user's objects -----------------------------------------------------------


def test_another_users_objects_are_404(api, conversation, bob, api_client):
    reply_id = send(api, conversation).json()["id"]
    other = type(api_client)()
    other.force_login(bob)
    base = f"/api/v1/conversations/{conversation.pk}"
    responses = [
        other.get(base),
        other.patch(base, {"title": "mine"}, format="json"),
        other.delete(base),
        other.post(f"{base}/messages", {"content": "hi", "model": "demo"}, format="json"),
        other.get(f"/api/v1/messages/{reply_id}"),
        other.get(f"/api/v1/messages/{reply_id}/stream"),
        other.post(f"/api/v1/messages/{reply_id}/cancel"),
        other.post(f"/api/v1/messages/{reply_id}/retry"),
    ]
    assert [r.status_code for r in responses] == [404] * len(responses)
    assert all(error_of(r)["code"] == "not_found" for r in responses)
    assert other.get("/api/v1/conversations").json() == []
    conversation.refresh_from_db()
    assert conversation.title == "Test" and Message.objects.get(pk=reply_id).status == "queued"


# --- the stream endpoint (without a worker) -----------------------------------------


def stream(api, message_id: int, **headers):
    return api.get(f"/api/v1/messages/{message_id}/stream", HTTP_ACCEPT="text/event-stream", **headers)


def test_the_stream_of_a_finished_reply_comes_from_the_database_once_redis_has_none(api, conversation):
    reply_id = send(api, conversation).json()["id"]
    Message.objects.filter(pk=reply_id).update(
        status="done", content="Hello world", input_tokens=9, output_tokens=2, cost=5
    )
    response = stream(api, reply_id)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream") and response["Cache-Control"] == "no-cache"
    events = read_until_end(parse_events(response.streaming_content))
    assert [(e.kind, e.id) for e in events] == [("delta", "11-0"), ("done", "11-1")]
    assert text_of(events) == "Hello world"
    assert events[-1].data["usage"] == {"input_tokens": 9, "output_tokens": 2, "estimated": False}
    assert events[-1].data["cost"] == 5 and events[-1].data["balance"] == 1_000_000

    resumed = read_until_end(parse_events(stream(api, reply_id, HTTP_LAST_EVENT_ID="6-0").streaming_content))
    assert text_of(resumed) == "world"


def test_a_reader_waiting_on_a_queued_reply_gets_keep_alives(api, conversation, monkeypatch):
    monkeypatch.setattr(streams, "KEEPALIVE_SECONDS", 0.2)
    reply_id = send(api, conversation).json()["id"]
    chunks = iter(stream(api, reply_id).streaming_content)
    assert next(chunks).startswith(b"retry:")
    assert next(chunks) == b": keep-alive\n\n"
    # It ended while no event reached Redis: the reader finds out from the database.
    Message.objects.filter(pk=reply_id).update(status="failed", error_code="expired", error_message="Too late.")
    rest = list(chunks)
    assert rest[-1].startswith(b"id: 0-1\nevent: error\n")
    assert json.loads(rest[-1].split(b"data: ")[1]) == {"code": "expired", "message": "Too late."}


def test_a_bad_last_event_id_is_400(api, conversation):
    reply_id = send(api, conversation).json()["id"]
    response = stream(api, reply_id, HTTP_LAST_EVENT_ID="abc")
    assert response.status_code == 400


# --- the schema ------------------------------------------------------------------------


def test_the_openapi_schema_is_valid_and_lists_every_chat_endpoint(api):
    from drf_spectacular.validation import validate_schema

    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)
    paths = schema["paths"]
    expected = {
        "/api/v1/models": {"get"},
        "/api/v1/conversations": {"get", "post"},
        "/api/v1/conversations/{conversation_id}": {"get", "patch", "delete"},
        "/api/v1/conversations/{conversation_id}/messages": {"post"},
        "/api/v1/messages/{message_id}": {"get"},
        "/api/v1/messages/{message_id}/stream": {"get"},
        "/api/v1/messages/{message_id}/cancel": {"post"},
        "/api/v1/messages/{message_id}/retry": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    assert "text/event-stream" in paths["/api/v1/messages/{message_id}/stream"]["get"]["responses"]["200"]["content"]
    assert "202" in paths["/api/v1/conversations/{conversation_id}/messages"]["post"]["responses"]
    assert "402" in paths["/api/v1/conversations/{conversation_id}/messages"]["post"]["responses"]


# --- the broker is down -------------------------------------------------------------------


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def broker_at(url: str):
    conf = celery_app.conf
    saved = (conf.broker_url, conf.broker_write_url)

    def reset_pools() -> None:
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    conf.broker_url = conf.broker_write_url = url
    reset_pools()
    try:
        yield
    finally:
        conf.broker_url, conf.broker_write_url = saved
        reset_pools()


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_a_send_while_the_broker_is_down_is_503_and_charges_nothing(api_client, alice, chat_catalog):  # noqa: F811
    funded_wallet(alice, 1_000_000)
    api_client.force_login(alice)
    conversation = Conversation.objects.create(user=alice)
    with broker_at(f"redis://127.0.0.1:{_dead_port()}/0"):
        response = send(api_client, conversation)
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "service_unavailable" and "Nothing was charged" in error["message"]
    reply = Message.objects.get(role="assistant")
    assert reply.status == "failed" and reply.error_code == "service_unavailable"
    assert reply.hold.status == Hold.Status.VOIDED
    account = Account.objects.get(user=alice)
    assert account.held == 0 and account.balance == 1_000_000
    assert not Entry.objects.filter(reference=f"message:{reply.pk}").exists()
    assert connection.in_atomic_block is False
