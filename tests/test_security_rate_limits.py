"""Rate limits on the API's costly writes: sending messages (scope "send", retries included)
and starting top-ups (scope "topup", the page and the API together). Past the limit: a 429
JSON error with Retry-After, and nothing stored. Login and sign-up limits are covered in
tests/test_accounts_throttling.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from django.db import connection
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.throttling import SimpleRateThrottle

from chat.models import Conversation, Message
from panels.ratelimit import ScopedRateLimit
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Hold, Topup

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_limits(db, monkeypatch) -> Iterator[None]:
    # Counters live in Redis under a prefix of this test's own (tests/conftest.py).
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "send", "2/min")
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "topup", "2/min")
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: None)
    yield


def client_for(user) -> APIClient:
    funded_wallet(user, 1_000_000)
    client = APIClient()
    client.force_login(user)
    return client


def send(client: APIClient, user):
    # A conversation each: a second message while a reply runs would be refused for another reason.
    conversation = Conversation.objects.create(user=user)
    return client.post(
        f"/api/v1/conversations/{conversation.pk}/messages",
        {"content": "[demo:tokens=2] hi", "model": "demo"},
        format="json",
    )


def assert_rate_limited(response) -> None:
    assert response.status_code == 429, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    error = json.loads(response.content)["error"]
    assert error["code"] == "rate_limited"
    assert "try again in" in error["message"]
    assert 1 <= int(response["Retry-After"]) <= 60


def test_sending_past_the_limit_is_429_json_and_stores_nothing(alice, chat_catalog):  # noqa: F811
    client = client_for(alice)
    assert [send(client, alice).status_code for _ in range(2)] == [202, 202]
    stored = (Message.objects.count(), Hold.objects.count())

    response = send(client, alice)

    assert_rate_limited(response)
    assert (Message.objects.count(), Hold.objects.count()) == stored


def test_retries_share_the_send_limit(alice, chat_catalog):  # noqa: F811
    client = client_for(alice)
    conversation = Conversation.objects.create(user=alice)
    Message.objects.create(conversation=conversation, role="user", content="hi")
    failed = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="failed",
        error_code="provider_error",
        requested_model="demo",
        model=chat_catalog,
    )
    assert [send(client, alice).status_code for _ in range(2)] == [202, 202]
    stored = (Message.objects.count(), Hold.objects.count())

    response = client.post(f"/api/v1/messages/{failed.pk}/retry")

    assert_rate_limited(response)
    assert (Message.objects.count(), Hold.objects.count()) == stored


def test_the_send_limit_is_per_user(alice, bob, chat_catalog):  # noqa: F811
    alice_client = client_for(alice)
    for _ in range(2):
        send(alice_client, alice)
    assert_rate_limited(send(alice_client, alice))

    assert send(client_for(bob), bob).status_code == 202


def test_reads_are_not_counted_against_the_send_limit(alice, chat_catalog):  # noqa: F811
    client = client_for(alice)
    for _ in range(5):
        assert client.get("/api/v1/conversations").status_code == 200

    assert send(client, alice).status_code == 202


def test_starting_topups_past_the_limit_is_429_json_and_starts_nothing(alice):
    client = client_for(alice)
    assert [client.post("/api/v1/topups", {"amount_usd": "5"}, format="json").status_code for _ in range(2)] == [
        201,
        201,
    ]

    response = client.post("/api/v1/topups", {"amount_usd": "5"}, format="json")

    assert_rate_limited(response)
    assert Topup.objects.count() == 2


def test_the_topup_page_and_api_share_one_limit(alice):
    client = client_for(alice)
    for _ in range(2):
        assert client.post("/api/v1/topups", {"amount_usd": "5"}, format="json").status_code == 201

    response = client.post("/wallet/topup/", {"amount_usd": "5"})

    assert response.status_code == 429
    assert "try again in" in response.content.decode()
    assert Topup.objects.count() == 2


# --- under parallel requests, against the real Redis -------------------------------


def test_exactly_the_limit_passes_when_hundreds_check_at_once(alice, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "send", "60/min")
    barrier = threading.Barrier(40)
    passed: list[bool] = []
    lock = threading.Lock()

    def check(request) -> None:
        barrier.wait()
        for _ in range(15):
            allowed = ScopedRateLimit().allow_request(request, view)
            with lock:
                passed.append(allowed)

    request = APIRequestFactory().post("/")
    request.user = alice
    view = type("View", (), {"throttle_scope": "send"})()
    threads = [threading.Thread(target=check, args=(Request(request),)) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert len(passed) == 600
    assert passed.count(True) == 60


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_parallel_sends_pass_exactly_the_limit(alice, chat_catalog, monkeypatch, settings):  # noqa: F811
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "send", "5/min")
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 0  # the rate limit, not the cap on replies in flight
    funded_wallet(alice, 1_000_000)
    conversations = [Conversation.objects.create(user=alice) for _ in range(16)]
    barrier = threading.Barrier(16)
    codes: list[int] = []
    lock = threading.Lock()

    def post(conversation) -> None:
        try:
            client = APIClient()
            client.force_login(alice)
            barrier.wait()
            response = client.post(
                f"/api/v1/conversations/{conversation.pk}/messages",
                {"content": "[demo:tokens=2] hi", "model": "demo"},
                format="json",
            )
            with lock:
                codes.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(c,)) for c in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert sorted(codes) == [202] * 5 + [429] * 11
    assert Message.objects.filter(role="assistant").count() == Hold.objects.count() == 5


def test_with_redis_down_the_limit_fails_open_and_says_so(alice, settings, caplog):
    settings.REDIS_URL = f"redis://127.0.0.1:{_dead_port()}/0"
    client = client_for(alice)

    codes = [client.post("/api/v1/topups", {"amount_usd": "5"}, format="json").status_code for _ in range(3)]

    assert codes == [201, 201, 201]
    assert Topup.objects.count() == 3
    assert [r.getMessage() for r in caplog.records].count("rate limit not applied: Redis is unavailable") == 3


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
