"""A key's spend limit covers everything the key spends: its /v1 calls and the chat replies
sent with it (Bearer auth on /api/v1/), read from one place, the holds placed under it.
A key revoked after a /v1 process cached it can't hold credits."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from chat.models import Conversation, Message
from openai_api.errors import OpenAIError
from openai_api.models import ApiCall, KeyHold
from openai_api.selectors import key_usage
from openai_api.services import Begun, Replay, call_begin, call_finish
from openai_api.upstream import Usage
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Hold

pytestmark = [pytest.mark.money, pytest.mark.django_db]

START = 100_000_000


@pytest.fixture(autouse=True)
def not_queued(monkeypatch) -> None:
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: None)


def keyed(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def send(client: APIClient, user):
    conversation = Conversation.objects.create(user=user)
    return client.post(
        f"/api/v1/conversations/{conversation.pk}/messages",
        {"content": "[demo:tokens=5] hi", "model": "demo"},
        format="json",
    )


def v1_begin(secret: str, max_tokens: int) -> Begun | Replay:
    body = json.dumps(
        {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    ).encode()
    return call_begin(authorization=f"Bearer {secret}", body=body)


def chat_worst_case(user) -> int:
    """What one chat send holds (measured with a session, so under no key)."""
    session = APIClient()
    session.force_login(user)
    response = send(session, user)
    assert response.status_code == 202
    return Hold.objects.get(pk=Message.objects.get(pk=response.json()["id"]).hold_id).amount


def held(user) -> int:
    return Account.objects.get(user=user).held


def test_chat_sends_with_a_key_count_against_its_limit_and_past_it_are_refused(alice, chat_catalog):  # noqa: F811
    funded_wallet(alice, START)
    worst = chat_worst_case(alice)
    api_key, secret = ApiKey.issue(user=alice, spend_limit=worst + worst // 2, limit_period=ApiKey.LimitPeriod.DAY)
    client = keyed(secret)

    first = send(client, alice)
    assert first.status_code == 202, first.content
    reply = Message.objects.get(pk=first.json()["id"])
    assert KeyHold.objects.get(api_key=api_key).hold_id == reply.hold_id
    assert key_usage(api_key=api_key).spent_in_period == worst

    messages, holding = Message.objects.count(), held(alice)
    refused = send(client, alice)
    assert refused.status_code == 402, refused.content
    error = refused.json()["error"]
    assert error["code"] == "key_limit_exceeded"
    assert f"spend limit of {worst + worst // 2:,} credits per day" in error["message"]
    assert (error["spent"], error["left"], error["needed"]) == (worst, worst // 2, worst)
    # Nothing of the refused send stays.
    assert (Message.objects.count(), held(alice)) == (messages, holding)

    # The same user's sends by session are under no key's limit.
    assert chat_worst_case(alice) == worst
    assert KeyHold.objects.filter(api_key=api_key).count() == 1


def test_v1_calls_and_chat_replies_share_the_keys_window(alice, chat_catalog):  # noqa: F811
    funded_wallet(alice, START)
    worst = chat_worst_case(alice)
    api_key, secret = ApiKey.issue(user=alice, spend_limit=worst + worst // 2, limit_period=ApiKey.LimitPeriod.DAY)

    # A chat reply sent with the key holds its worst case: a /v1 call that would pass what is left is refused.
    assert send(keyed(secret), alice).status_code == 202
    left = worst // 2
    big = v1_begin(secret, max_tokens=512)
    assert isinstance(big, Replay) and big.status == 402, big
    assert big.body["error"]["code"] == "key_limit_exceeded"
    assert "chat replies sent with this key included" in big.body["error"]["message"]
    assert f"{worst:,} credits are spent or reserved" in big.body["error"]["message"]
    assert big.body["error"]["affordable_output_tokens"] >= 0

    # A /v1 call within what is left runs; while it runs, its hold counts for chat sends too.
    small = v1_begin(secret, max_tokens=50)
    assert isinstance(small, Begun), small
    assert small.call.reserved <= left
    assert key_usage(api_key=api_key).spent_in_period == worst + small.call.reserved
    assert send(keyed(secret), alice).status_code == 402

    # Settled for less, the call counts at its cost.
    done = call_finish(
        begun=small, text="ok", usage=Usage(5, 2), finish_reason="stop", disconnected=False, failure=None
    )
    usage = key_usage(api_key=api_key)
    assert usage.spent_in_period == worst + done.cost and usage.calls == 2
    assert ApiCall.objects.filter(api_key=api_key, status=ApiCall.Status.REFUSED).count() == 1


def test_a_key_revoked_after_it_was_cached_holds_nothing(alice, chat_catalog):  # noqa: F811
    funded_wallet(alice, START)
    api_key, secret = ApiKey.issue(user=alice, name="tool")
    first = v1_begin(secret, max_tokens=50)
    assert isinstance(first, Begun)  # the key is now cached by this process
    call_finish(begun=first, text="ok", usage=Usage(5, 2), finish_reason="stop", disconnected=False, failure=None)
    calls, holds = ApiCall.objects.count(), Hold.objects.count()

    api_key.revoke()
    with pytest.raises(OpenAIError) as refused:
        v1_begin(secret, max_tokens=50)
    assert refused.value.status == 401 and refused.value.code == "invalid_api_key"
    assert (ApiCall.objects.count(), Hold.objects.count(), held(alice)) == (calls, holds, 0)
