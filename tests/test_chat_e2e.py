"""A chat message end to end, through the HTTP API: a real Celery worker subprocess, the
demo model server over HTTP, the real Redis, and the reply read as server-sent events."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
import uuid

import pytest
from rest_framework.test import APIClient

from chat import worker
from chat.demo_server import estimate_prompt_tokens
from chat.models import Conversation, Message, ModelSpec
from chat.tokens import REPLY_PRIMING_TOKENS, estimate_message_tokens, estimate_output_tokens
from tests.conftest import make_user
from tests.conftest import test_database_url as database_url
from tests.e2e_servers import (  # noqa: F401
    Event,
    celery_worker,
    chat_catalog,
    demo_server,
    parse_events,
    read_until_end,
    start_worker,
    stop_worker,
    tasks_routed_to,
    text_of,
)
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold
from wallet.selectors import ledger_audit
from wallet.services import cost_in_credits, holds_expire

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

START = 1_000_000


@pytest.fixture
def api(alice, chat_catalog, celery_worker) -> APIClient:  # noqa: F811
    funded_wallet(alice, START)
    client = APIClient()
    client.force_login(alice)
    return client


@pytest.fixture
def conversation(api) -> int:
    response = api.post("/api/v1/conversations", {"title": "e2e"}, format="json")
    assert response.status_code == 201
    return response.json()["id"]


def send(api: APIClient, conversation_id: int, content: str, model: str = "demo"):
    return api.post(
        f"/api/v1/conversations/{conversation_id}/messages", {"content": content, "model": model}, format="json"
    )


def open_stream(api: APIClient, message_id: int, last_event_id: str | None = None):
    headers = {"HTTP_ACCEPT": "text/event-stream"}
    if last_event_id:
        headers["HTTP_LAST_EVENT_ID"] = last_event_id
    response = api.get(f"/api/v1/messages/{message_id}/stream", **headers)
    assert response.status_code == 200
    return response


def reply_events(api: APIClient, message_id: int) -> list[Event]:
    return read_until_end(parse_events(open_stream(api, message_id).streaming_content))


def cost_of(model: ModelSpec, input_tokens: int, output_tokens: int) -> int:
    return cost_in_credits(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_price=model.input_price,
        output_price=model.output_price,
    )


def wallet(api: APIClient) -> dict:
    return api.get("/api/v1/wallet").json()


def test_the_debit_is_the_formula_for_the_usage_the_server_reported(api, conversation):
    content = "[demo:tokens=5] What is double-entry bookkeeping?"
    response = send(api, conversation, content)
    assert response.status_code == 202
    reply_id = response.json()["id"]

    events = reply_events(api, reply_id)
    kinds = [e.kind for e in events]
    # Five tokens, in as many deltas as the worker's joining of bursts (REPLY_COALESCE_MS) left.
    assert kinds[-1] == "done" and 1 <= kinds.count("delta") <= 5 and set(kinds[:-1]) == {"delta"}
    message = api.get(f"/api/v1/messages/{reply_id}").json()
    assert message["status"] == "done"
    assert message["content"] == text_of(events)
    assert message["input_tokens"] == estimate_prompt_tokens([{"role": "user", "content": content}])
    assert message["output_tokens"] == 5 and message["usage_estimated"] is False

    expected = cost_of(ModelSpec.objects.get(slug="demo"), message["input_tokens"], 5)
    done = events[-1].data
    assert message["cost"] == done["cost"] == expected
    assert done["balance"] == START - expected == wallet(api)["balance"]
    assert wallet(api)["held"] == 0
    entry = Entry.objects.get(reference=f"message:{reply_id}")
    assert entry.amount == expected and entry.kind == Entry.Kind.USAGE
    assert ledger_audit() == []


@pytest.mark.parametrize(
    ("directive", "code", "says"),
    [("[demo:fail=500]", "provider_error", "HTTP 500"), ("[demo:fail=429]", "rate_limited", "limiting requests")],
)
def test_a_provider_failure_charges_nothing_and_says_why(api, conversation, directive, code, says):
    reply_id = send(api, conversation, f"{directive} hello").json()["id"]
    events = reply_events(api, reply_id)
    assert [e.kind for e in events] == ["error"]
    assert events[0].data["code"] == code and says in events[0].data["message"]
    message = api.get(f"/api/v1/messages/{reply_id}").json()
    assert message["status"] == "failed"
    assert message["error"] == {"code": code, "message": events[0].data["message"]}
    assert "Nothing was charged" in message["error"]["message"]
    assert wallet(api)["balance"] == START and wallet(api)["held"] == 0
    assert Hold.objects.get(message__id=reply_id).status == Hold.Status.VOIDED
    assert not Entry.objects.filter(reference=f"message:{reply_id}").exists()


def test_a_429_once_succeeds_after_one_retry(api, conversation):
    started = time.monotonic()
    reply_id = send(api, conversation, f"[demo:tokens=5][demo:fail=429once:{uuid.uuid4().hex}] hi").json()["id"]
    events = reply_events(api, reply_id)
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert events[-1].kind == "done"
    message = Message.objects.get(pk=reply_id)
    assert message.status == "done" and message.output_tokens == 5
    assert Entry.objects.get(reference=f"message:{reply_id}").amount == message.cost > 0


def test_cancel_mid_stream_charges_the_partial_reply(api, conversation):
    reply_id = send(api, conversation, "[demo:tokens=300][demo:tps=40] tell me a long story").json()["id"]
    events = parse_events(open_stream(api, reply_id).streaming_content)
    seen: list[Event] = []
    for event in events:
        seen.append(event)
        if len(text_of(seen).split()) >= 5:
            break
    response = api.post(f"/api/v1/messages/{reply_id}/cancel")
    assert response.status_code == 200
    seen += read_until_end(events)

    done = seen[-1]
    assert done.kind == "done" and done.data["status"] == "cancelled"
    message = Message.objects.get(pk=reply_id)
    assert message.status == "cancelled" and message.usage_estimated is True
    assert message.content == text_of(seen) and 5 <= len(message.content.split()) < 300
    expected = cost_of(message.model, message.input_estimate, estimate_output_tokens(message.content))
    assert message.cost == done.data["cost"] == expected > 0
    assert wallet(api)["balance"] == START - expected and wallet(api)["held"] == 0
    assert ledger_audit() == []


def test_a_reconnect_with_last_event_id_loses_and_repeats_nothing(api, conversation):
    reply_id = send(api, conversation, "[demo:tokens=60][demo:tps=100] resume me").json()["id"]
    first = open_stream(api, reply_id)
    before: list[Event] = []
    for event in parse_events(first.streaming_content):
        before.append(event)
        if len(before) == 4:
            break
    first.close()  # the connection drops
    after = read_until_end(parse_events(open_stream(api, reply_id, before[-1].id).streaming_content))

    ids = [e.id for e in before + after]
    assert len(ids) == len(set(ids))
    assert after[-1].kind == "done"
    message = Message.objects.get(pk=reply_id)
    assert text_of(before) + text_of(after) == message.content
    assert len(message.content.split()) == 60

    # Reconnecting after the end repeats only the end, so the browser stops.
    again = read_until_end(parse_events(open_stream(api, reply_id, after[-1].id).streaming_content))
    assert [e.kind for e in again] == ["done"]


def test_thirty_concurrent_sends_from_a_wallet_that_affords_five(chat_catalog, celery_worker, settings):  # noqa: F811
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 0  # the wallet, not the cap on replies in flight, is under test
    carol = make_user("carol@example.com")
    content = "[demo:tokens=5][demo:ttft=2500] go"
    demo = ModelSpec.objects.get(slug="demo")
    hold = cost_of(demo, REPLY_PRIMING_TOKENS + estimate_message_tokens(content), demo.max_output_tokens)
    account = funded_wallet(carol, 5 * hold + hold // 2)
    clients, conversations = [], []
    for _ in range(30):
        client = APIClient()
        client.force_login(carol)
        clients.append(client)
        conversations.append(Conversation.objects.create(user=carol).pk)

    barrier = threading.Barrier(30)
    results: list[int] = []
    lock = threading.Lock()
    lowest = [account.available]
    stop = threading.Event()

    def watch() -> None:
        from django.db import connection

        try:
            while not stop.is_set():
                balance, held = Account.objects.values_list("balance", "held").get(pk=account.pk)
                lowest[0] = min(lowest[0], balance - held, balance)
                time.sleep(0.02)
        finally:
            connection.close()

    def post(i: int) -> None:
        from django.db import connection

        try:
            barrier.wait()
            status = send(clients[i], conversations[i], content).status_code
            with lock:
                results.append(status)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=post, args=(i,)) for i in range(30)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    burst = time.monotonic() - started

    accepted = results.count(202)
    assert len(results) == 30
    assert results.count(402) == 30 - accepted
    assert 1 <= accepted <= 5, results
    if burst < 2.0:
        # No reply can have been settled yet (each waits 2.5 s for its first token),
        # so exactly five holds fit.
        assert accepted == 5, results

    deadline = time.monotonic() + 30
    while Message.objects.filter(conversation__user=carol, status__in=["queued", "streaming"]).exists():
        assert time.monotonic() < deadline, "replies did not finish"
        time.sleep(0.1)
    stop.set()
    watcher.join()

    replies = Message.objects.filter(conversation__user=carol, role="assistant")
    assert replies.count() == accepted and all(r.status == "done" for r in replies)
    assert Message.objects.filter(conversation__user=carol, role="user").count() == accepted
    account.refresh_from_db()
    assert account.held == 0
    assert account.balance == 5 * hold + hold // 2 - sum(r.cost for r in replies) >= 0
    assert lowest[0] >= 0
    assert ledger_audit() == []


def test_bob_gets_404_for_alices_conversation_message_stream_and_cancel(api, conversation):
    reply_id = send(api, conversation, "[demo:tokens=3] mine").json()["id"]
    reply_events(api, reply_id)
    bob = APIClient()
    bob.force_login(make_user("bob@example.com"))
    for response in (
        bob.get(f"/api/v1/conversations/{conversation}"),
        bob.get(f"/api/v1/messages/{reply_id}"),
        bob.get(f"/api/v1/messages/{reply_id}/stream", HTTP_ACCEPT="text/event-stream"),
        bob.post(f"/api/v1/messages/{reply_id}/cancel"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_script_in_model_output_is_stored_as_text(api, conversation):
    payload = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"
    reply_id = send(api, conversation, f"[demo:echo] {payload}").json()["id"]
    events = reply_events(api, reply_id)
    assert text_of(events) == payload
    message = api.get(f"/api/v1/messages/{reply_id}")
    assert message["Content-Type"] == "application/json"
    assert message.json()["content"] == payload
    assert Message.objects.get(pk=reply_id).content == payload


def test_a_worker_killed_mid_reply_leaves_nothing_held_and_nothing_charged(api, conversation, tmp_path):
    doomed = start_worker(database_url=database_url(), log_dir=tmp_path)
    try:
        with tasks_routed_to(doomed.queue):
            reply_id = send(api, conversation, "[demo:tokens=400][demo:tps=30] a long one").json()["id"]
        events = parse_events(open_stream(api, reply_id).streaming_content)
        seen = [next(events) for _ in range(3)]
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(timeout=10)
    finally:
        stop_worker(doomed)

    message = Message.objects.get(pk=reply_id)
    assert message.status == "streaming" and message.hold.status == Hold.Status.PENDING
    # The task is delivered again (acks_late): the reply is no longer queued, so it does nothing.
    worker.message_run(message_id=reply_id)
    assert Message.objects.get(pk=reply_id).status == "streaming"

    # Once the hold's time limit passes, the worker's periodic sweep ends both.
    later = message.hold.expires_at + dt.timedelta(seconds=1)
    assert holds_expire(now=later) == 1
    assert worker.messages_fail_stale(now=later) == 1
    seen += read_until_end(events)
    assert seen[-1].kind == "error" and seen[-1].data["code"] == "expired"
    message.refresh_from_db()
    assert message.status == "failed" and message.cost == 0
    assert message.hold.status == Hold.Status.EXPIRED
    assert wallet(api)["balance"] == START and wallet(api)["held"] == 0
    assert not Entry.objects.filter(reference=f"message:{reply_id}").exists()
    assert ledger_audit() == []
