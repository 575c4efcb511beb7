"""The per-key request rate on /v1 (RATE_V1), driven by the real `openai` SDK over HTTP
against a live uvicorn process started with a small rate: past it, 429 in OpenAI's error
shape with Retry-After, nothing held or charged, and the owner's other keys unaffected."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest

from openai_api.models import ApiCall
from panels.models import ApiKey
from tests.conftest import test_database_url as database_url
from tests.e2e_servers import Web, chat_catalog, demo_server, start_web, stop_web  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Hold

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def limited_web(django_db_setup, django_db_blocker, tmp_path_factory, demo_server) -> Iterator[Web]:  # noqa: F811
    with django_db_blocker.unblock():
        url = database_url()
    web = start_web(
        database_url=url,
        log_dir=tmp_path_factory.mktemp("web"),
        env={"RATE_V1": "2/min", "RATE_LIMIT_PREFIX": f"test-rate:{uuid.uuid4().hex}"},
    )
    try:
        yield web
    finally:
        stop_web(web)


def sdk(web: Web, secret: str) -> openai.OpenAI:
    # The SDK retries a 429 by itself (twice, by default): off, to see the first answer.
    return openai.OpenAI(base_url=f"{web.url}/v1", api_key=secret, max_retries=0)


def ask(client: openai.OpenAI):
    return client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "[demo:tokens=3] hi"}], max_tokens=5
    )


def test_past_the_keys_rate_a_call_is_429_with_retry_after_and_costs_nothing(limited_web, alice, chat_catalog):  # noqa: F811
    funded_wallet(alice, 1_000_000)
    _, secret = ApiKey.issue(user=alice, name="tool")
    _, other = ApiKey.issue(user=alice, name="other")
    client = sdk(limited_web, secret)
    assert ask(client).choices[0].message.content
    assert ask(client).choices[0].message.content
    account = Account.objects.get(user=alice)
    before = (account.balance, account.held, ApiCall.objects.count(), Hold.objects.count())

    with pytest.raises(openai.RateLimitError) as refused:
        ask(client)
    error = refused.value
    assert error.status_code == 429
    assert 1 <= int(error.response.headers["Retry-After"]) <= 60
    assert error.body == {
        "message": error.body["message"],
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert "2 requests per 60 seconds" in error.body["message"]
    # /v1/models counts too: the same key's requests, whatever the endpoint.
    with pytest.raises(openai.RateLimitError):
        client.models.list()
    account.refresh_from_db()
    assert (account.balance, account.held, ApiCall.objects.count(), Hold.objects.count()) == before

    # Per key: the owner's other key still has its own rate.
    assert ask(sdk(limited_web, other)).choices[0].message.content
