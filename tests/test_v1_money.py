"""The OpenAI-compatible API's money rules, against a live uvicorn process: Idempotency-Key
retries are not charged again, a client that disconnects pays for the part generated,
a key's spend limit holds under concurrent calls, a provider's 429 is passed on with
Retry-After, and a web process killed mid-stream leaves nothing pending or charged twice."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import pytest

from chat.demo_server import build_reply_tokens
from chat.models import ModelSpec
from chat.tokens import estimate_request_tokens
from openai_api.models import ApiCall
from openai_api.services import calls_fail_stale
from panels.models import ApiKey
from tests.conftest import test_database_url as database_url
from tests.e2e_servers import chat_catalog, demo_server, live_web, start_web, stop_web  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold
from wallet.selectors import ledger_audit
from wallet.services import cost_in_credits, holds_expire

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

START = 1_000_000


@pytest.fixture
def key(alice, chat_catalog) -> str:  # noqa: F811
    funded_wallet(alice, START)
    _, secret = ApiKey.issue(user=alice, name="money")
    return secret


@pytest.fixture
def client(key, live_web) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=f"{live_web.url}/v1", api_key=key, max_retries=0)


def demo_cost(input_tokens: int, output_tokens: int) -> int:
    demo = ModelSpec.objects.get(slug="demo")
    return cost_in_credits(
        input_tokens=input_tokens, output_tokens=output_tokens, input_price=demo.input_price,
        output_price=demo.output_price,
    )  # fmt: skip


def account(user) -> Account:
    return Account.objects.get(user=user)


def wait_for(predicate, timeout: float = 20.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_retry_with_the_same_idempotency_key_returns_the_first_reply_and_is_not_charged_again(client, alice):
    messages = [{"role": "user", "content": "[demo:tokens=5] once only"}]
    headers = {"Idempotency-Key": "retry-1"}

    first = client.chat.completions.with_raw_response.create(model="demo", messages=messages, extra_headers=headers)
    again = client.chat.completions.with_raw_response.create(model="demo", messages=messages, extra_headers=headers)

    one, two = first.parse(), again.parse()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (two.id, two.choices[0].message.content, two.usage) == (one.id, one.choices[0].message.content, one.usage)
    call = ApiCall.objects.get()
    assert Entry.objects.filter(kind=Entry.Kind.USAGE).count() == 1
    assert account(alice).balance == START - call.cost and call.cost == demo_cost(one.usage.prompt_tokens, 5)
    # A streamed retry of a streamed call replays the same text and usage as chunks.
    stream_headers = {"Idempotency-Key": "retry-2"}
    kwargs = {"model": "demo", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    chunks_one = list(client.chat.completions.create(**kwargs, extra_headers=stream_headers))
    chunks_two = list(client.chat.completions.create(**kwargs, extra_headers=stream_headers))
    text = [
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) for chunks in (chunks_one, chunks_two)
    ]
    assert text[0] == text[1] == "".join(build_reply_tokens("once only", 5))
    assert chunks_one[-1].usage == chunks_two[-1].usage and chunks_one[0].id == chunks_two[0].id
    assert Entry.objects.filter(kind=Entry.Kind.USAGE).count() == 2
    assert ledger_audit() == []


def test_the_same_idempotency_key_with_another_body_is_409(client):
    headers = {"Idempotency-Key": "k-409"}
    client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "a"}], extra_headers=headers)
    with pytest.raises(openai.ConflictError) as caught:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "b"}], extra_headers=headers)
    assert caught.value.code == "idempotency_key_reused"
    assert ApiCall.objects.count() == 1


def test_concurrent_requests_with_one_idempotency_key_charge_once(key, live_web, alice):  # noqa: F811
    body = {"model": "demo", "messages": [{"role": "user", "content": "[demo:tokens=5][demo:ttft=300] together"}]}
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "together"}

    def send(_: int) -> httpx.Response:
        return httpx.post(f"{live_web.url}/v1/chat/completions", json=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(send, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 409} and 200 in statuses
    in_progress = [r.json()["error"]["code"] for r in responses if r.status_code == 409]
    assert set(in_progress) <= {"idempotency_key_in_progress"}
    assert len({r.json()["id"] for r in responses if r.status_code == 200}) == 1
    call = ApiCall.objects.get()
    assert Entry.objects.filter(kind=Entry.Kind.USAGE).get().amount == call.cost
    assert account(alice).balance == START - call.cost


def test_a_refusal_for_lack_of_credits_is_the_first_outcome_of_its_key(client, live_web, bob):  # noqa: F811
    funded_wallet(bob, 50)
    _, secret = ApiKey.issue(user=bob)
    poor = openai.OpenAI(base_url=f"{live_web.url}/v1", api_key=secret, max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.APIStatusError) as caught:
        poor.chat.completions.create(model="demo", messages=messages, extra_headers={"Idempotency-Key": "poor"})
    assert caught.value.status_code == 402 and caught.value.code == "insufficient_credits"
    funded_wallet(bob, 1_000_000)
    with pytest.raises(openai.APIStatusError) as again:
        poor.chat.completions.create(model="demo", messages=messages, extra_headers={"Idempotency-Key": "poor"})
    assert again.value.status_code == 402
    # A new key after the top-up goes through.
    reply = poor.chat.completions.create(model="demo", messages=messages, extra_headers={"Idempotency-Key": "rich"})
    assert reply.choices[0].message.content


def test_a_client_that_disconnects_mid_stream_pays_for_the_part_generated(key, live_web, alice):  # noqa: F811
    body = {
        "model": "demo",
        "stream": True,
        "messages": [{"role": "user", "content": "[demo:tokens=400][demo:tps=40] long"}],
    }
    seen = []
    with httpx.stream(
        "POST", f"{live_web.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    seen.append(delta["content"])
            if len(seen) >= 5:
                break  # leaving the block closes the connection mid-reply

    wait_for(lambda: ApiCall.objects.get().status != ApiCall.Status.STREAMING, what="the call to settle")
    call = ApiCall.objects.get()
    assert call.status == ApiCall.Status.CANCELLED and call.usage_estimated
    assert 5 <= call.output_tokens < 400
    assert call.cost == demo_cost(call.input_tokens, call.output_tokens) > 0
    assert Entry.objects.get(hold=call.hold).amount == call.cost
    assert Hold.objects.get(pk=call.hold_id).status == Hold.Status.POSTED
    wallet = account(alice)
    assert (wallet.balance, wallet.held) == (START - call.cost, 0)
    assert ledger_audit() == []


def test_a_key_limit_holds_under_concurrent_calls_and_402_names_it(live_web, alice, chat_catalog):  # noqa: F811
    funded_wallet(alice, START)
    prompt = "[demo:tokens=5][demo:ttft=1500] limited"
    messages = [{"role": "user", "content": prompt}]
    # Worst case of one call: the input estimate and 100 output tokens.
    input_estimate = estimate_request_tokens(ModelSpec.objects.get(slug="demo"), messages)
    worst = demo_cost(input_estimate, 100)
    api_key, secret = ApiKey.issue(user=alice, spend_limit=3 * worst, limit_period=ApiKey.LimitPeriod.DAY)
    limited = openai.OpenAI(base_url=f"{live_web.url}/v1", api_key=secret, max_retries=0)

    def call(_: int):
        try:
            return limited.chat.completions.create(model="demo", messages=messages, max_tokens=100)
        except openai.APIStatusError as exc:
            return exc

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(call, range(6)))
    refused = [o for o in outcomes if isinstance(o, openai.APIStatusError)]
    assert len(refused) == 3 and all(r.status_code == 402 and r.code == "key_limit_exceeded" for r in refused)
    assert f"spend limit of {3 * worst:,} credits per day" in refused[0].message
    calls = ApiCall.objects.filter(api_key=api_key, status=ApiCall.Status.DONE)
    assert calls.count() == 3
    spent = sum(c.cost for c in calls)
    assert account(alice).balance == START - spent and spent <= 3 * worst


def test_a_provider_429_is_passed_on_with_retry_after_and_nothing_charged(client, alice):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "[demo:fail=429] hi"}])
    assert caught.value.response.headers["Retry-After"] == "1"
    assert caught.value.code == "rate_limit_exceeded"
    call = ApiCall.objects.get()
    assert call.status == ApiCall.Status.FAILED and call.cost == 0
    assert Hold.objects.get(pk=call.hold_id).status == Hold.Status.VOIDED
    assert (account(alice).balance, account(alice).held) == (START, 0)


def test_a_web_process_killed_mid_stream_leaves_no_hold_and_no_double_charge(key, alice, tmp_path, live_web):  # noqa: F811
    web = start_web(database_url=database_url(), log_dir=tmp_path)
    body = {
        "model": "demo",
        "stream": True,
        "messages": [{"role": "user", "content": "[demo:tokens=40][demo:tps=20] killed"}],
    }
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"kill-{uuid.uuid4().hex}"}
    seen = 0
    try:
        with httpx.stream("POST", f"{web.url}/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
            for line in r.iter_lines():
                if '"content":"' in line and '"role"' not in line:
                    seen += 1
                if seen >= 3:
                    stop_web(web, kill=True)  # SIGKILL: no finally, no settlement
                    break
    except httpx.HTTPError:
        pass
    finally:
        stop_web(web, kill=True)
    call = ApiCall.objects.get()
    hold = Hold.objects.get(pk=call.hold_id)
    assert call.status == ApiCall.Status.STREAMING and hold.status == Hold.Status.PENDING

    # The sweep, as a worker's heartbeat runs it, once the hold's time limit has passed.
    later = hold.expires_at + dt.timedelta(seconds=1)
    holds_expire(now=later)
    assert calls_fail_stale(now=later) == 1
    call.refresh_from_db()
    hold.refresh_from_db()
    assert call.status == ApiCall.Status.FAILED and call.cost == 0
    assert hold.status in (Hold.Status.EXPIRED, Hold.Status.VOIDED)
    assert not Entry.objects.filter(kind=Entry.Kind.USAGE).exists()
    assert (account(alice).balance, account(alice).held) == (START, 0)

    # The client retries with the same key on a live process: it runs again and is charged once.
    with httpx.stream("POST", f"{live_web.url}/v1/chat/completions", json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    retried = ApiCall.objects.exclude(pk=call.pk).get()
    assert retried.status == ApiCall.Status.DONE and retried.output_tokens == 40
    assert Entry.objects.get(kind=Entry.Kind.USAGE).amount == retried.cost
    assert (account(alice).balance, account(alice).held) == (START - retried.cost, 0)
    assert ledger_audit() == []
