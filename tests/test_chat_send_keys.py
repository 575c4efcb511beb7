"""Idempotency-Key on sends and retries: a repeat answers the first outcome and stores and
charges nothing more; the same key with another request is a 409 (DESIGN.md, HTTP API and
reliability rules)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from chat.models import Conversation, Message, SendKey
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold

pytestmark = pytest.mark.django_db


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


def send(client, conversation, key, content="[demo:tokens=5] hi", model="demo"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(
        f"/api/v1/conversations/{conversation.pk}/messages",
        {"content": content, "model": model},
        format="json",
        headers=headers,
    )


def stored() -> tuple[int, int, int]:
    return Message.objects.count(), Hold.objects.count(), Account.objects.get(user__username="alice").held


def test_a_repeated_key_returns_the_first_202_and_stores_nothing_more(
    api, conversation, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = send(api, conversation, "key-1")
    assert first.status_code == 202
    after_first = stored()

    with django_capture_on_commit_callbacks(execute=True):
        again = send(api, conversation, "key-1")

    assert again.status_code == 202
    assert again.json() == first.json()
    assert stored() == after_first
    assert Message.objects.filter(role="user").count() == 1
    assert queued == [first.json()["id"]]  # queued once


def test_without_a_key_each_send_is_a_new_message(api, conversation):
    ids = {send(api, conversation, None).json()["id"] for _ in range(2)}
    assert len(ids) == 2
    assert not SendKey.objects.exists()


def test_the_same_key_with_another_body_is_409_and_stores_nothing(api, conversation):
    assert send(api, conversation, "key-1").status_code == 202
    before = stored()

    response = send(api, conversation, "key-1", content="[demo:tokens=5] something else")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert stored() == before


def test_the_same_key_in_another_conversation_is_409(api, alice, conversation):
    assert send(api, conversation, "key-1").status_code == 202
    other = Conversation.objects.create(user=alice)

    response = send(api, other, "key-1")

    assert response.status_code == 409
    assert not other.messages.exists()


def test_keys_are_per_user(api, conversation, bob):
    assert send(api, conversation, "shared").status_code == 202
    funded_wallet(bob, 1_000_000)
    bobs = APIClient()
    bobs.force_login(bob)

    response = send(bobs, Conversation.objects.create(user=bob), "shared")

    assert response.status_code == 202
    assert SendKey.objects.filter(key="shared").count() == 2


def test_a_refusal_for_lack_of_credits_is_repeated_even_after_a_top_up(api_client, bob, chat_catalog):  # noqa: F811
    funded_wallet(bob, 10)
    api_client.force_login(bob)
    conversation = Conversation.objects.create(user=bob)
    first = send(api_client, conversation, "k")
    assert first.status_code == 402
    funded_wallet(bob, 1_000_000)

    again = send(api_client, conversation, "k")

    assert again.status_code == 402
    assert again.json() == first.json()
    assert not Message.objects.exists() and not Hold.objects.filter(status="pending").exists()
    # A new attempt takes a new key.
    assert send(api_client, conversation, "k2").status_code == 202


def test_a_request_refused_as_invalid_keeps_its_key_free(api, conversation):
    assert send(api, conversation, "k", model="no-such-model").status_code == 400
    assert not SendKey.objects.exists()

    assert send(api, conversation, "k").status_code == 202


def test_a_bad_key_is_400(api, conversation):
    for key in ["x" * 256, "caf\u00e9"]:
        response = send(api, conversation, key)
        assert response.status_code == 400, key
        assert response.json()["error"]["code"] == "invalid_request"
    assert not Message.objects.exists()


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_a_send_the_broker_refused_is_503_again_on_repeat(api, conversation, monkeypatch):
    def broker_down(*, message_id):
        raise ConnectionError("broker down")

    monkeypatch.setattr("chat.tasks.message_enqueue", broker_down)
    first = send(api, conversation, "k")
    assert first.status_code == 503
    before = stored()

    again = send(api, conversation, "k")

    assert again.status_code == 503
    assert again.json() == first.json()
    assert stored() == before
    assert Message.objects.get(role="assistant").status == "failed"
    assert Account.objects.get(user__username="alice").held == 0


def test_a_repeated_retry_returns_the_first_new_reply(api, alice, conversation, chat_catalog):  # noqa: F811
    Message.objects.create(conversation=conversation, role="user", content="hi")
    failed = Message.objects.create(
        conversation=conversation, role="assistant", status="failed", requested_model="demo", model=chat_catalog
    )
    url = f"/api/v1/messages/{failed.pk}/retry"

    first = api.post(url, headers={"Idempotency-Key": "r"})
    again = api.post(url, headers={"Idempotency-Key": "r"})

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert failed.retries.count() == 1
    # A send may not reuse the retry's key.
    assert send(api, conversation, "r").status_code == 409


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_of_one_key_store_and_hold_once(alice, chat_catalog, queued):  # noqa: F811
    funded_wallet(alice, 1_000_000)
    conversation = Conversation.objects.create(user=alice)
    barrier = threading.Barrier(12)
    answers: list[tuple[int, int | None]] = []
    lock = threading.Lock()

    def post() -> None:
        try:
            client = APIClient()
            client.force_login(alice)
            barrier.wait()
            response = send(client, conversation, "the-one")
            body = response.json()
            with lock:
                answers.append((response.status_code, body.get("id")))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert len(answers) == 12
    assert {status for status, _ in answers} == {202}, answers
    assert len({reply for _, reply in answers}) == 1
    assert Message.objects.filter(role="assistant").count() == 1
    assert Message.objects.filter(role="user").count() == 1
    assert Hold.objects.count() == 1 and len(queued) == 1
    assert Account.objects.get(user=alice).held == Hold.objects.get().amount
    assert not Entry.objects.filter(kind="usage").exists()
