"""The OpenAI-compatible API driven by the real `openai` SDK (sync, async, streaming) over
HTTP against a live uvicorn process, with the demo model server behind it. Each test
checks the reply text, the usage and the exact debit."""

from __future__ import annotations

import asyncio

import openai
import pytest

from chat.demo_server import build_reply_tokens
from chat.demo_server import estimate_prompt_tokens as demo_prompt_tokens
from chat.models import ModelSpec
from chat.usage import usage_report
from openai_api.models import ApiCall
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server, live_web  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold
from wallet.selectors import ledger_audit
from wallet.services import cost_in_credits

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

START = 1_000_000


@pytest.fixture
def key(alice, chat_catalog) -> str:  # noqa: F811
    funded_wallet(alice, START)
    _, secret = ApiKey.issue(user=alice, name="sdk")
    return secret


@pytest.fixture
def client(key, live_web) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=f"{live_web.url}/v1", api_key=key, max_retries=0)


def expected_text(prompt: str, tokens: int) -> str:
    return "".join(build_reply_tokens(prompt, tokens))


def demo_cost(input_tokens: int, output_tokens: int) -> int:
    demo = ModelSpec.objects.get(slug="demo")
    return cost_in_credits(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_price=demo.input_price,
        output_price=demo.output_price,
    )


def balance(user) -> tuple[int, int]:
    account = Account.objects.get(user=user)
    return account.balance, account.held


def assert_billed(user, call: ApiCall, input_tokens: int, output_tokens: int) -> int:
    cost = demo_cost(input_tokens, output_tokens)
    assert call.cost == cost and call.input_tokens == input_tokens and call.output_tokens == output_tokens
    entry = Entry.objects.get(hold=call.hold)
    assert entry.amount == cost and entry.kind == Entry.Kind.USAGE
    assert call.hold.status == Hold.Status.POSTED
    assert balance(user) == (START - cost, 0)
    assert ledger_audit() == []
    return cost


def test_non_stream_reply_usage_and_exact_debit(client, alice):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "[demo:tokens=7] Say hi"}]

    reply = client.chat.completions.create(model="demo", messages=messages, max_tokens=50, temperature=0.2, user="u1")

    assert reply.object == "chat.completion" and reply.model == "demo"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected_text("Say hi", 7)
    assert reply.choices[0].finish_reason == "stop"
    prompt_tokens = demo_prompt_tokens(messages)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, 7)
    assert reply.usage.total_tokens == prompt_tokens + 7
    call = ApiCall.objects.get()
    assert reply.id == call.completion_id and call.status == ApiCall.Status.DONE
    cost = assert_billed(alice, call, prompt_tokens, 7)
    assert reply.model_extra["panels"]["cost"] == cost
    # The call is in the usage report by model and by day.
    report = usage_report(user=alice)
    assert [(m.slug, m.tally.credits, m.tally.messages) for m in report.models] == [("demo", cost, 1)]
    assert report.days[-1].tally.credits == cost
    # Content is not stored unless the operator turns it on.
    assert call.prompt is None and call.reply == "" and call.response_body is None


def test_streaming_chunks_finish_reason_and_final_usage_chunk(client, alice):
    messages = [{"role": "user", "content": "[demo:tokens=6] Stream please"}]

    stream = client.chat.completions.create(
        model="demo", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert all(c.object == "chat.completion.chunk" and c.model == "demo" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text("Stream please", 6)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # Every chunk but the last has usage null; the last has empty choices and the usage.
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 6
    prompt_tokens = demo_prompt_tokens(messages)
    assert last.usage.prompt_tokens == prompt_tokens
    assert_billed(alice, ApiCall.objects.get(), prompt_tokens, 6)


def test_streaming_without_include_usage_sends_no_usage_chunk_but_still_bills(client, alice):
    messages = [{"role": "user", "content": "[demo:tokens=4] no usage chunk"}]
    chunks = list(client.chat.completions.create(model="demo", messages=messages, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected_text("no usage chunk", 4)
    assert_billed(alice, ApiCall.objects.get(), demo_prompt_tokens(messages), 4)


def test_async_client_streams_and_completes(key, live_web, alice):  # noqa: F811
    messages = [{"role": "user", "content": "[demo:tokens=5] async one"}]

    async def run() -> tuple[str, object, object]:
        async with openai.AsyncOpenAI(base_url=f"{live_web.url}/v1", api_key=key, max_retries=0) as aclient:
            stream = await aclient.chat.completions.create(
                model="demo", messages=messages, stream=True, stream_options={"include_usage": True}
            )
            parts, usage = [], None
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if chunk.usage:
                    usage = chunk.usage
            whole = await aclient.chat.completions.create(model="demo", messages=messages, max_completion_tokens=3)
            return "".join(parts), usage, whole

    text, usage, whole = asyncio.run(run())

    prompt_tokens = demo_prompt_tokens(messages)
    assert text == expected_text("async one", 5) and usage.completion_tokens == 5
    # max_completion_tokens reaches the model: the reply stops at 3 with finish_reason "length".
    assert whole.choices[0].message.content == "".join(build_reply_tokens("async one", 5)[:3])
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 3
    total = demo_cost(prompt_tokens, 5) + demo_cost(prompt_tokens, 3)
    assert balance(alice) == (START - total, 0)
    assert sorted(ApiCall.objects.values_list("cost", flat=True)) == sorted(
        [demo_cost(prompt_tokens, 5), demo_cost(prompt_tokens, 3)]
    )


def test_models_lists_the_available_catalog_and_auto(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "auto" and "demo" in ids
    # No provider key is set in the tests: those models are not offered.
    assert "gpt-4o" not in ids


def test_auto_answers_with_the_concrete_model_and_says_why(client, alice):
    messages = [{"role": "user", "content": "[demo:tokens=3] Classify this as spam or not: win a prize"}]
    reply = client.chat.completions.create(model="auto", messages=messages)
    assert reply.model == "demo"
    panels = reply.model_extra["panels"]
    assert panels["tier"] in ("cheap", "flagship") and panels["reason"].startswith("Auto -> Demo model")
    call = ApiCall.objects.get()
    assert call.requested_model == "auto" and call.model.slug == "demo"
    assert_billed(alice, call, demo_prompt_tokens(messages), 3)


def test_image_parts_are_accepted(client, alice):
    pixel = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
        "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    )
    content = [
        {"type": "text", "text": "[demo:tokens=2] what is it"},
        {"type": "image_url", "image_url": {"url": pixel}},
    ]
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content == expected_text("what is it", 2)
    call = ApiCall.objects.get()
    assert call.status == ApiCall.Status.DONE and call.cost == demo_cost(reply.usage.prompt_tokens, 2)


def test_the_api_keeps_request_ids_security_headers_and_the_body_limit(key, live_web):  # noqa: F811
    # /v1 runs its own middleware on the event loop (panels/asgi.py, openai_api/middleware.py).
    import httpx2 as httpx

    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": "trace-v1"}
    listed = httpx.get(f"{live_web.url}/v1/models", headers=headers)
    assert listed.status_code == 200 and listed.headers["X-Request-ID"] == "trace-v1"
    assert listed.headers["X-Content-Type-Options"] == "nosniff"
    assert listed.headers["Referrer-Policy"] == "same-origin"
    made = httpx.get(f"{live_web.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert len(made.headers["X-Request-ID"]) == 32  # one made when the client sent none

    too_big = httpx.post(f"{live_web.url}/v1/chat/completions", headers=headers, content=b"x" * (8 * 1024 * 1024 + 1))
    assert too_big.status_code == 413 and too_big.headers["X-Request-ID"] == "trace-v1"
    assert too_big.json()["error"]["code"] == "too_large"
    assert not ApiCall.objects.exists()
