"""Auto through the send API: the routed model and its routed_by line are what a reply records.

Both tiers are made "available" with a fake OPENAI_API_KEY, so no reply is ever run
here: the worker is not started (the enqueue is captured), the provider seam fails the
test if it is reached, and the OpenAI models point at a closed local port besides.
"""

from __future__ import annotations

import pytest

from chat.models import Conversation, Message, ModelSpec
from chat.router import route_decide
from chat.routing import route_for_message
from tests.wallet_helpers import funded_wallet

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")
SENTIMENT = 'Sentiment of this review, positive or negative: "Arrived a day early and works perfectly."'
STACK_TRACE = (
    "Why does this fail? It worked yesterday.\n\n"
    "Traceback (most recent call last):\n"
    '  File "billing/invoice.py", line 88, in total\n'
    "    return sum(line.amount for line in self.lines) / self.count\n"
    "ZeroDivisionError: division by zero\n"
)
REPORT = "\n\n".join(
    f"Section {n}. Quarterly sales in the northern region rose while returns fell; the southern region "
    "lost two large accounts to a competitor with lower prices; marketing spend moved from print to "
    "search; the support backlog doubled after the billing migration and recovered within six weeks."
    for n in range(1, 17)
)
LONG_DOC_SYNTHESIS = (
    f"Our board pack:\n\n{REPORT}\n\nSynthesise the report: how do the sections relate, what explains the "
    "changes, and what should we do next quarter?"
)


@pytest.fixture
def no_keys(monkeypatch):
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def openai_key(no_keys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    ModelSpec.objects.filter(provider="OpenAI").update(base_url="http://127.0.0.1:9/v1")


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))

    def no_model_call(**kwargs):
        raise AssertionError("a model was called")

    monkeypatch.setattr("chat.providers.chat_stream", no_model_call)
    return ids


@pytest.fixture
def api(api_client, alice, queued):
    funded_wallet(alice, 10_000_000)
    api_client.force_login(alice)
    return api_client


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(user=alice)


def send_auto(api, conversation, content):
    response = api.post(
        f"/api/v1/conversations/{conversation.pk}/messages", {"content": content, "model": "auto"}, format="json"
    )
    assert response.status_code == 202, response.json()
    return response.json()


@pytest.mark.parametrize(
    ("content", "tier", "slug", "name"),
    [
        (SENTIMENT, "cheap", "gpt-4o-mini", "GPT-4o mini"),
        (STACK_TRACE, "flagship", "gpt-4o", "GPT-4o"),
        (LONG_DOC_SYNTHESIS, "flagship", "gpt-4o", "GPT-4o"),
    ],
    ids=["one-line sentiment", "stack trace, why does this fail", "long document synthesis"],
)
def test_auto_records_the_routed_model_and_why(
    api, conversation, openai_key, queued, django_capture_on_commit_callbacks, content, tier, slug, name
):
    decision = route_decide(content=content)
    assert decision.tier == tier
    with django_capture_on_commit_callbacks(execute=True):
        body = send_auto(api, conversation, content)
    assert body["model"] == slug
    assert body["routed_by"] == f"Auto -> {name}: {decision.reason}"
    reply = Message.objects.get(pk=body["id"])
    assert reply.model.slug == slug and reply.requested_model == "auto"
    assert reply.routed_by == body["routed_by"]
    assert queued == [reply.pk]  # queued for a worker that is not running: no call leaves the machine
    # The message detail carries the line the chat page shows under the reply.
    assert api.get(f"/api/v1/messages/{reply.pk}").json()["routed_by"] == reply.routed_by


def test_the_reasons_read_as_a_person_would_want(api, conversation, openai_key):
    assert send_auto(api, conversation, SENTIMENT)["routed_by"].startswith(
        "Auto -> GPT-4o mini: classification or tagging (flagship likelihood "
    )
    assert send_auto(api, Conversation.objects.create(user=conversation.user), STACK_TRACE)["routed_by"].startswith(
        "Auto -> GPT-4o: stack trace or crash dump (flagship likelihood "
    )


def test_send_and_the_route_api_give_the_same_answer(api, conversation, openai_key):
    preview = api.post("/api/v1/route", {"content": STACK_TRACE}, format="json").json()
    body = send_auto(api, conversation, STACK_TRACE)
    assert (preview["model"], preview["reason"]) == (body["model"], body["routed_by"])


def test_a_follow_up_is_routed_with_its_history(api, conversation, openai_key):
    Message.objects.create(conversation=conversation, role="user", content=f"Here is our report:\n\n{REPORT}")
    Message.objects.create(conversation=conversation, role="assistant", content="Thanks, I have read it.")
    follow_up = "Now tie the sections together: which changes explain the others, and what should we do?"
    body = send_auto(api, conversation, follow_up)
    assert body["model"] == "gpt-4o"
    assert body["routed_by"].startswith("Auto -> GPT-4o: long document (flagship likelihood ")
    # The history's size is what tipped it: the route API, with no history, reads the words alone.
    alone = route_for_message(content=follow_up)
    with_history = route_for_message(content=follow_up, history=[f"Here is our report:\n\n{REPORT}"])
    assert with_history.reason != alone.reason


def test_with_no_keys_auto_falls_back_to_the_demo_model_and_says_so(api, conversation, no_keys):
    body = send_auto(api, conversation, STACK_TRACE)
    assert body["model"] == "demo"
    assert body["routed_by"] == (
        f"Auto -> Demo model: {route_decide(content=STACK_TRACE).reason} "
        "(no provider key is set, so the demo model answers)"
    )
    assert Message.objects.get(pk=body["id"]).model.slug == "demo"


def test_the_tier_models_are_settings(api, conversation, no_keys, monkeypatch, settings):
    monkeypatch.setenv("MISTRAL_API_KEY", "test-not-used")
    settings.AUTO_CHEAP_MODEL = "mistral-small"
    body = send_auto(api, conversation, SENTIMENT)
    assert body["model"] == "mistral-small"
    assert body["routed_by"] == f"Auto -> Mistral Small: {route_decide(content=SENTIMENT).reason}"


def test_an_unavailable_tier_model_is_replaced_and_the_reason_says_so(db, openai_key, settings):
    settings.AUTO_CHEAP_MODEL = "gemini-flash"  # GEMINI_API_KEY is not set
    route = route_for_message(content=SENTIMENT)
    assert route.spec.slug == "gpt-4o-mini"  # the catalog's other cheap-tier model
    assert route.reason == (
        f"Auto -> GPT-4o mini: {route_decide(content=SENTIMENT).reason} (Gemini Flash is temporarily unavailable)"
    )


def test_with_only_another_providers_key_the_demo_reason_does_not_claim_no_key(db, no_keys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-not-used")
    route = route_for_message(content=SENTIMENT)
    assert route.spec.slug == "demo"
    assert route.reason.endswith("(no cheap- or flagship-tier model is available, so the demo model answers)")


def test_a_missing_tier_falls_back_to_the_other(db, openai_key):
    ModelSpec.objects.filter(slug="gpt-4o").update(enabled=False)
    route = route_for_message(content=STACK_TRACE)
    assert route.tier == "flagship" and route.spec.slug == "gpt-4o-mini"
    assert route.reason.endswith("(no flagship-tier model is available)")


# --- the chat page ------------------------------------------------------------------


def test_auto_is_first_and_the_default_for_a_new_conversation(alice_client, no_keys):
    html = alice_client.get("/chat/").content.decode()
    select = html[html.index('<select id="model-select"') :]
    first_option = select[select.index("<option") : select.index("</option>")]
    assert 'value="auto"' in first_option and " selected" in first_option
    assert select.count(" selected") == 1


def test_each_auto_reply_shows_its_routed_by_line(alice_client, alice, openai_key):
    conversation = Conversation.objects.create(user=alice, title="Reviews")
    Message.objects.create(conversation=conversation, role="user", content=SENTIMENT)
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="done",
        content="positive",
        model=ModelSpec.objects.get(slug="gpt-4o-mini"),
        requested_model="auto",
        routed_by="Auto -> GPT-4o mini: classification or tagging",
        input_tokens=30,
        output_tokens=1,
        cost=10,
    )
    html = alice_client.get(f"/chat/c/{conversation.pk}/").content.decode()
    assert '<span class="meta-route">Auto → GPT-4o mini: classification or tagging</span>' in html
    assert "Auto chose" not in html  # the line names the model once
