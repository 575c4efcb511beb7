"""Capacity: a per-user cap on replies in flight (MAX_REPLIES_IN_FLIGHT_PER_USER), answered
with a 429 and Retry-After and nothing stored; with it one user's many slow replies cannot
hold the worker pool while another user's reply waits."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from chat.models import Conversation, Message
from tests.e2e_servers import celery_worker, chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Hold

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


def client_for(user) -> APIClient:
    funded_wallet(user, 10_000_000)
    client = APIClient()
    client.force_login(user)
    return client


def send(client, user, content="[demo:tokens=2] hi", conversation=None):
    conversation = conversation or Conversation.objects.create(user=user)
    return client.post(
        f"/api/v1/conversations/{conversation.pk}/messages", {"content": content, "model": "demo"}, format="json"
    )


def test_past_the_cap_a_send_is_429_with_retry_after_and_stores_nothing(alice, chat_catalog, queued, settings):  # noqa: F811
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 2
    client = client_for(alice)
    assert [send(client, alice).status_code for _ in range(2)] == [202, 202]
    before = (Message.objects.count(), Hold.objects.count(), Account.objects.get(user=alice).held)

    response = send(client, alice)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_replies"
    assert "2 replies running" in response.json()["error"]["message"]
    assert int(response["Retry-After"]) > 0
    assert (Message.objects.count(), Hold.objects.count(), Account.objects.get(user=alice).held) == before


def test_a_finished_reply_frees_its_place(alice, chat_catalog, queued, settings):  # noqa: F811
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 1
    client = client_for(alice)
    first = send(client, alice).json()["id"]
    assert send(client, alice).status_code == 429

    client.post(f"/api/v1/messages/{first}/cancel")

    assert send(client, alice).status_code == 202


def test_retries_count_against_the_cap(alice, chat_catalog, queued, settings):  # noqa: F811
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 1
    client = client_for(alice)
    conversation = Conversation.objects.create(user=alice)
    Message.objects.create(conversation=conversation, role="user", content="hi")
    failed = Message.objects.create(
        conversation=conversation, role="assistant", status="failed", requested_model="demo", model=chat_catalog
    )
    assert send(client, alice).status_code == 202

    response = client.post(f"/api/v1/messages/{failed.pk}/retry")

    assert response.status_code == 429
    assert not failed.retries.exists()


def test_the_cap_is_per_user(alice, bob, chat_catalog, queued, settings):  # noqa: F811
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 1
    assert send(client_for(alice), alice).status_code == 202
    assert send(client_for(bob), bob).status_code == 202


def test_zero_means_no_cap(alice, chat_catalog, queued, settings):  # noqa: F811
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 0
    client = client_for(alice)
    assert {send(client, alice).status_code for _ in range(6)} == {202}


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_parallel_sends_stop_exactly_at_the_cap(alice, chat_catalog, queued, settings):  # noqa: F811
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 3
    funded_wallet(alice, 10_000_000)
    conversations = [Conversation.objects.create(user=alice) for _ in range(10)]
    barrier = threading.Barrier(10)
    codes: list[int] = []
    lock = threading.Lock()

    def post(conversation) -> None:
        try:
            client = APIClient()
            client.force_login(alice)
            barrier.wait()
            code = send(client, alice, conversation=conversation).status_code
            with lock:
                codes.append(code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(c,)) for c in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert sorted(codes) == [202] * 3 + [429] * 7
    assert Message.objects.filter(role="assistant").count() == Hold.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_one_users_slow_replies_do_not_hold_up_another_users_reply(
    alice,
    bob,
    chat_catalog,  # noqa: F811
    celery_worker,  # noqa: F811
    settings,
):
    # The worker runs 20 replies at once. Alice tries to start 30 slow ones (12 s each):
    # without the cap they would take every thread and Bob's reply would start only when
    # one of hers ended.
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 4
    alice_client = client_for(alice)
    codes = [send(alice_client, alice, "[demo:tokens=120] [demo:tps=10] slow").status_code for _ in range(30)]
    assert codes.count(202) == 4 and codes.count(429) == 26
    slow = list(Message.objects.filter(role="assistant", conversation__user=alice).values_list("pk", flat=True))

    bob_client = client_for(bob)
    reply = send(bob_client, bob, "[demo:tokens=3] quick").json()["id"]
    deadline = time.monotonic() + 60
    while Message.objects.get(pk=reply).status in ("queued", "streaming") and time.monotonic() < deadline:
        time.sleep(0.1)

    assert Message.objects.get(pk=reply).status == "done"
    # Bob's reply ended while Alice's slow ones were still running.
    assert set(Message.objects.filter(pk__in=slow).values_list("status", flat=True)) <= {"queued", "streaming"}
    for pk in slow:
        alice_client.post(f"/api/v1/messages/{pk}/cancel")


def test_regenerating_and_editing_count_against_the_cap(alice, chat_catalog, queued, settings):  # noqa: F811
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 1
    client = client_for(alice)
    conversation = Conversation.objects.create(user=alice)
    prompt = Message.objects.create(conversation=conversation, role="user", content="hi")
    done = Message.objects.create(
        conversation=conversation, role="assistant", status="done", content="hello", requested_model="demo",
        model=chat_catalog, context_ids=[prompt.pk],
    )  # fmt: skip
    assert send(client, alice).status_code == 202
    before = Message.objects.count()

    regenerate = client.post(f"/api/v1/messages/{done.pk}/regenerate", {}, format="json")
    edit = client.post(f"/api/v1/messages/{prompt.pk}/edit", {"content": "hi again", "model": "demo"}, format="json")

    assert (regenerate.status_code, edit.status_code) == (429, 429), (regenerate.json(), edit.json())
    assert Message.objects.count() == before
