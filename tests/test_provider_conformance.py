"""Each of the five families, end to end against its provider's conformance fake
(tests/fakes/): send (hold), the worker's stream, settlement, billed exactly at the
usage the fake reported and at the prices the reply was held at. Also what each fake
refuses, and that the adapters never send it."""

from __future__ import annotations

import openai
import pytest

from chat import providers, services, worker
from chat.costs import reply_cost
from chat.errors import InvalidMessage
from chat.models import Conversation, Message, ModelSpec
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.fakes.model_api import reply_words
from tests.provider_fakes import FAMILIES, fakes, png  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold
from wallet.selectors import ledger_audit

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

START = 10_000_000


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


@pytest.fixture
def conversation(alice, chat_catalog, queued, fakes) -> Conversation:  # noqa: F811
    funded_wallet(alice, START)
    return Conversation.objects.create(user=alice)


def send(conversation: Conversation, content: str, model: str, attachments: list | None = None) -> Message:
    return services.message_send(
        user=conversation.user, conversation=conversation, content=content, model=model, attachments=attachments
    )


def run(reply: Message) -> Message:
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    return reply


def assert_billed_exactly(reply: Message, conversation: Conversation) -> int:
    hold = Hold.objects.get(pk=reply.hold_id)
    expected = reply_cost(reply.prices, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
    assert reply.status == Message.Status.DONE, (reply.error_code, reply.error_message)
    assert reply.usage_estimated is False
    assert reply.cost == expected > 0
    assert hold.status == Hold.Status.POSTED and hold.posted_amount == expected <= hold.amount
    assert Entry.objects.get(reference=f"message:{reply.pk}").amount == expected
    assert Account.objects.get(user=conversation.user).balance == START - expected
    assert ledger_audit() == []
    return expected


@pytest.mark.parametrize("family", FAMILIES, ids=[f.slug for f in FAMILIES])
def test_each_family_streams_and_bills_exactly_at_its_fakes_usage(conversation, fakes, family):  # noqa: F811
    fake = fakes[family.api]
    spec = ModelSpec.objects.get(slug=family.slug)
    reply = run(send(conversation, "[fake:words=7] Hello there", family.slug))

    assert reply.content == " ".join(reply_words(spec.upstream_id, 7))
    assert reply.output_tokens == 7
    body = fake.bodies("/messages" if family.api == "anthropic" else "/chat/completions")[-1]
    if family.api == "anthropic":
        assert reply.input_tokens == fake.input_tokens(body)
    else:
        assert reply.input_tokens == fake.prompt_tokens(body["messages"])
    assert_billed_exactly(reply, conversation)
    # Each adapter sent only what its API takes.
    if family.api == "mistral":
        assert "stream_options" not in body and "max_completion_tokens" not in body and body["max_tokens"] > 0
    if family.api == "openai":
        assert body["max_completion_tokens"] == spec.max_output_tokens and "max_tokens" not in body
        assert body["stream_options"] == {"include_usage": True}
    if family.api == "gemini":
        assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == spec.max_output_tokens
    if family.api == "anthropic":
        assert body["max_tokens"] == spec.max_output_tokens and body["messages"][0]["role"] == "user"


def _reasoning_model(slug: str, upstream_id: str) -> ModelSpec:
    spec = ModelSpec.objects.get(slug=slug)
    spec.pk, spec.slug, spec.upstream_id, spec.sort_order = None, f"{slug}-thinking", upstream_id, 99
    spec.save()
    return spec


@pytest.mark.parametrize(
    ("slug", "upstream_id"),
    [("gpt-4o", "gpt-5"), ("gemini-flash", "gemini-3.8-flash"), ("claude-sonnet", "claude-sonnet-5-5")],
)
def test_reasoning_tokens_are_billed_as_output(conversation, fakes, slug, upstream_id):  # noqa: F811
    spec = _reasoning_model(slug, upstream_id)
    reply = run(send(conversation, "[fake:words=5][fake:reasoning=300] Think first", spec.slug))
    # Visible text only; the 300 reasoning tokens are paid for (Gemini's layer leaves them
    # out of completion_tokens but not out of total_tokens).
    assert reply.content == " ".join(reply_words(upstream_id, 5))
    assert reply.output_tokens == 5 + 300
    assert_billed_exactly(reply, conversation)


def test_openai_refuses_max_tokens_for_gpt5_and_o_series_and_the_adapter_never_sends_it(fakes):  # noqa: F811
    client = openai.OpenAI(base_url=fakes["openai"].origin + "/v1", api_key="key-openai", max_retries=0)
    for model in ("gpt-5", "o3-mini"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
            )
        assert "max_completion_tokens" in str(refused.value)
    # gpt-4o still takes max_tokens, as documented.
    stream = client.chat.completions.create(
        model="gpt-4o-2024-11-20", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_mistral_refuses_what_its_schema_does_not_define(fakes):  # noqa: F811
    client = openai.OpenAI(base_url=fakes["mistral"].origin + "/v1", api_key="key-mistral", max_retries=0)
    message = [{"role": "user", "content": "hi"}]
    for extra in (
        {"stream_options": {"include_usage": True}},
        {"max_completion_tokens": 5},
        {"n": 1},
        {"extra_body": {"unknown": 1}},
    ):
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client.chat.completions.create(model="mistral-small-2603", messages=message, stream=True, **extra)
        err = providers.translate_error(refused.value)
        assert err.code == "provider_rejected" and "Extra inputs are not permitted" in err.message
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="mistral-small-2603", messages=[{"role": "user", "content": "hi", "name": "alice"}], stream=True
        )


def test_anthropic_refuses_sampling_parameters_and_the_adapter_never_sends_them(conversation, fakes):  # noqa: F811
    import anthropic

    client = anthropic.Anthropic(base_url=fakes["anthropic"].origin, api_key="key-anthropic", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="claude-sonnet-5-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
            stream=True, extra_body={"temperature": 1.0},
        )  # fmt: skip
    assert "temperature: Extra inputs are not permitted" in str(refused.value)
    spec = ModelSpec.objects.get(slug="claude-sonnet")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "[fake:words=3] hi"}]
    reply = providers.chat_stream(spec=spec, messages=messages, max_tokens=50, temperature=0.5, top_p=0.9)
    text = "".join(chunk.text for chunk in reply)
    assert text == " ".join(reply_words("claude-sonnet-5-5", 3))
    assert reply.usage.output_tokens == 3 and not reply.usage.estimated
    body = fakes["anthropic"].bodies("/messages")[-1]
    assert "temperature" not in body and "top_p" not in body and body["system"] == "Be brief."
    assert fakes["anthropic"].requests[-1].headers["anthropic-version"] >= "2026-10-21"


def test_gemini_refuses_gif_and_a_gif_for_gemini_is_refused_before_any_hold(conversation, fakes):  # noqa: F811
    client = openai.OpenAI(base_url=fakes["gemini"].origin + "/v1beta/openai", api_key="key-gemini", max_retries=0)
    gif = png(64, 64, kind="gif")
    content = [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": gif}}]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="gemini-3.8-flash", messages=[{"role": "user", "content": content}], stream=True
        )
    with pytest.raises(InvalidMessage) as refused:
        send(conversation, "what is it?", "gemini-flash", attachments=[gif])
    assert refused.value.code == "image_format_not_supported"
    assert not Message.objects.exists() and not Hold.objects.exists()


def test_a_four_image_gpt4o_mini_message_is_held_for_at_least_what_it_is_billed(conversation, fakes):  # noqa: F811
    images = [png(1024, 1024) for _ in range(4)]
    reply = run(send(conversation, "[fake:words=4] compare these", "gpt-4o-mini", attachments=images))
    # OpenAI bills each 1024 x 1024 image on gpt-4o-mini at 2,833 + 4 tiles x 5,667 = 25,501 tokens.
    assert reply.input_tokens >= 4 * 25_501
    assert reply.input_estimate >= reply.input_tokens
    cost = assert_billed_exactly(reply, conversation)
    assert Hold.objects.get(pk=reply.hold_id).amount >= cost


def test_a_shut_down_model_id_fails_cleanly_and_charges_nothing(conversation, fakes):  # noqa: F811
    # The seed catalog's Gemini Flash: shut down on 2026-06-01, so Google answers 404.
    ModelSpec.objects.filter(slug="gemini-flash").update(upstream_id="gemini-2.0-flash")
    reply = run(send(conversation, "hi", "gemini-flash"))
    assert reply.status == Message.Status.FAILED and reply.error_code == "provider_rejected"
    assert "HTTP 404" in reply.error_message and reply.cost == 0
    assert Hold.objects.get(pk=reply.hold_id).status == Hold.Status.VOIDED
    assert Account.objects.get(user=conversation.user).balance == START
    assert ledger_audit() == []
