"""Rate limits on the API's costly writes: sending messages (scope "send", retries included)
and starting top-ups (scope "topup", the page and the API together). Past the limit: a 429
JSON error with Retry-After, and nothing stored. Login and sign-up limits are covered in
tests/test_accounts_throttling.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from chat.models import Conversation, Message
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Hold, Topup

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_limits(db, monkeypatch) -> Iterator[None]:
    # Counters live in the shared cache table; every test starts from zero.
    cache.clear()
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "send", "2/min")
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "topup", "2/min")
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: None)
    yield
    cache.clear()


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
