"""A second real OpenAI-compatible client from PyPI against the live /v1 endpoint:
langchain-openai's ChatOpenAI (invoke and stream), checking reply text, usage and the
exact debit."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from chat.demo_server import build_reply_tokens
from chat.demo_server import estimate_prompt_tokens as demo_prompt_tokens
from chat.models import ModelSpec
from openai_api.models import ApiCall
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server, live_web  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry
from wallet.services import cost_in_credits

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

START = 1_000_000


@pytest.fixture
def chat_model(alice, chat_catalog, live_web) -> ChatOpenAI:  # noqa: F811
    funded_wallet(alice, START)
    _, secret = ApiKey.issue(user=alice, name="langchain")
    return ChatOpenAI(
        model="demo", base_url=f"{live_web.url}/v1", api_key=secret, max_retries=0, stream_usage=True, temperature=0.5
    )


def demo_cost(input_tokens: int, output_tokens: int) -> int:
    demo = ModelSpec.objects.get(slug="demo")
    return cost_in_credits(
        input_tokens=input_tokens, output_tokens=output_tokens, input_price=demo.input_price,
        output_price=demo.output_price,
    )  # fmt: skip


def test_invoke_reply_usage_and_debit(chat_model, alice):
    prompt = "[demo:tokens=6] Caption a photo of a cat"
    reply = chat_model.invoke([SystemMessage("You write captions."), HumanMessage(prompt)])

    assert reply.content == "".join(build_reply_tokens("Caption a photo of a cat", 6))
    prompt_tokens = demo_prompt_tokens([{"content": "You write captions."}, {"content": prompt}])
    assert reply.usage_metadata["input_tokens"] == prompt_tokens
    assert reply.usage_metadata["output_tokens"] == 6
    assert reply.response_metadata["model_name"] == "demo"
    call = ApiCall.objects.get()
    assert call.cost == demo_cost(prompt_tokens, 6) == Entry.objects.get(hold=call.hold).amount
    assert Account.objects.get(user=alice).balance == START - call.cost


def test_stream_reply_usage_and_debit(chat_model, alice):
    prompt = "[demo:tokens=8] Stream a subject line"
    chunks = list(chat_model.stream([HumanMessage(prompt)]))

    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.content == "".join(build_reply_tokens("Stream a subject line", 8))
    prompt_tokens = demo_prompt_tokens([{"content": prompt}])
    assert whole.usage_metadata["input_tokens"] == prompt_tokens
    assert whole.usage_metadata["output_tokens"] == 8
    call = ApiCall.objects.get()
    assert call.stream and call.cost == demo_cost(prompt_tokens, 8) == Entry.objects.get(hold=call.hold).amount
    assert Account.objects.get(user=alice).balance == START - call.cost
