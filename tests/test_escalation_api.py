"""POST /api/v1/messages/{id}/escalate ("Ask the flagship"): an Auto reply's message again on the
flagship tier, as a second answer with its own hold; the usage page counts these by category.

Both tiers are "available" with a fake OPENAI_API_KEY and no reply is ever run: the enqueue is
captured and the provider seam fails the test if it is reached.
"""

from __future__ import annotations

import pytest

from chat.models import Conversation, Message, ModelSpec
from chat.router import route_decide
from tests.wallet_helpers import funded_wallet
from wallet.models import Hold
from wallet.services import wallet_for_user, wallet_hold

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")
CHEAP_PROMPT = "Translate 'the museum opens at ten' into Spanish."
TRACE = (
    "Why does this fail?\n\nTraceback (most recent call last):\n"
    '  File "app/jobs.py", line 41, in run\n    total = sum(row["amount"] for row in rows)\n'
    "KeyError: 'amount'\n"
)


@pytest.fixture
def openai_key(monkeypatch):
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
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
def api(api_client, alice, openai_key, queued):
    funded_wallet(alice, 20_000_000)
    api_client.force_login(alice)
    return api_client


def auto_reply(api, user, content: str, *, settle: bool = True) -> Message:
    """An Auto reply as a person gets it: sent through the API, then finished (as the worker would)."""
    conversation = Conversation.objects.create(user=user)
    response = api.post(
        f"/api/v1/conversations/{conversation.pk}/messages", {"content": content, "model": "auto"}, format="json"
    )
    assert response.status_code == 202, response.json()
    reply = Message.objects.get(pk=response.json()["id"])
    if settle:
        Message.objects.filter(pk=reply.pk).update(status="done", content="El museo abre a las diez.", cost=40)
        reply.refresh_from_db()
    return reply


def escalate(api, message_id: int, **extra):
    return api.post(f"/api/v1/messages/{message_id}/escalate", format="json", **extra)


def test_ask_the_flagship_re_runs_the_message_on_the_flagship_with_a_new_hold(
    api, alice, queued, django_capture_on_commit_callbacks
):
    first = auto_reply(api, alice, CHEAP_PROMPT)
    assert first.model.slug == "gpt-4o-mini"
    holds = Hold.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        response = escalate(api, first.pk)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["model"] == "gpt-4o"
    assert body["routed_by"] == "Ask the flagship -> GPT-4o (Auto had answered with GPT-4o mini)"
    second = Message.objects.get(pk=body["id"])
    assert second.escalation_of_id == first.pk and second.status == "queued"
    assert second.route_category == route_decide(content=CHEAP_PROMPT).category == "translation"
    # The same message, answered afresh: the first answer is not in its context.
    prompt_id = first.context_ids[-1]
    assert second.context_ids[-1] == prompt_id and first.pk not in second.context_ids
    assert body["user_message"] == prompt_id
    # Its own hold, for the flagship's worst case, and queued for a worker.
    assert Hold.objects.count() == holds + 1
    assert second.hold.status == "pending" and second.hold.amount > first.hold.amount
    assert queued[-1] == second.pk
    detail = api.get(f"/api/v1/messages/{second.pk}").json()
    assert detail["escalation_of"] == first.pk and detail["escalatable"] is False


def test_asking_again_returns_the_first_escalation_and_holds_nothing_more(api, alice):
    first = auto_reply(api, alice, CHEAP_PROMPT)
    one = escalate(api, first.pk)
    holds = Hold.objects.count()
    again = escalate(api, first.pk)
    assert one.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == one.json()["id"]
    assert Hold.objects.count() == holds
    assert Message.objects.filter(escalation_of=first).count() == 1


def test_an_idempotency_key_repeat_answers_the_first_outcome(api, alice):
    first = auto_reply(api, alice, CHEAP_PROMPT)
    one = escalate(api, first.pk, HTTP_IDEMPOTENCY_KEY="press-1")
    two = escalate(api, first.pk, HTTP_IDEMPOTENCY_KEY="press-1")
    assert one.json()["id"] == two.json()["id"]
    assert Message.objects.filter(escalation_of=first).count() == 1


def test_the_message_detail_says_which_replies_can_be_escalated(api, alice):
    cheap = auto_reply(api, alice, CHEAP_PROMPT)
    assert api.get(f"/api/v1/messages/{cheap.pk}").json()["escalatable"] is True
    flagship = auto_reply(api, alice, TRACE)
    assert flagship.model.slug == "gpt-4o"
    assert api.get(f"/api/v1/messages/{flagship.pk}").json()["escalatable"] is False


@pytest.mark.parametrize("case", ["answered by the flagship", "not auto", "still running", "failed"])
def test_only_a_finished_auto_reply_from_a_cheaper_model_can_be_escalated(api, alice, case):
    if case == "answered by the flagship":
        reply = auto_reply(api, alice, TRACE)
    else:
        reply = auto_reply(api, alice, CHEAP_PROMPT, settle=case not in ("still running", "failed"))
        if case == "not auto":
            Message.objects.filter(pk=reply.pk).update(requested_model="gpt-4o-mini")
        if case == "failed":
            Message.objects.filter(pk=reply.pk).update(status="failed")
    holds = Hold.objects.count()
    response = escalate(api, reply.pk)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_escalatable"
    assert Hold.objects.count() == holds and not Message.objects.filter(escalation_of=reply).exists()


def test_another_users_reply_is_a_404(api, alice, bob, api_client):
    reply = auto_reply(api, alice, CHEAP_PROMPT)
    funded_wallet(bob, 20_000_000)
    api_client.force_login(bob)
    assert escalate(api_client, reply.pk).status_code == 404


def test_too_few_credits_for_the_flagship_is_a_402_with_nothing_stored(api, alice):
    reply = auto_reply(api, alice, CHEAP_PROMPT)
    # Hold all but a little of the wallet: less than the flagship's worst case is left.
    account = wallet_for_user(user=alice)
    wallet_hold(account=account, amount=account.available - 1_000, idempotency_key="eat", reference="test")
    messages = Message.objects.count()
    response = escalate(api, reply.pk)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert Message.objects.count() == messages


def test_with_no_flagship_available_the_escalation_is_refused(api, alice):
    reply = auto_reply(api, alice, CHEAP_PROMPT)
    ModelSpec.objects.filter(tier="flagship").update(enabled=False)
    response = escalate(api, reply.pk)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "model_unavailable",
        "message": "The flagship model is temporarily unavailable.",
    }


def test_the_chat_page_offers_the_button_until_it_is_used(api, alice, alice_client):
    reply = auto_reply(api, alice, CHEAP_PROMPT)
    page = alice_client.get(f"/chat/c/{reply.conversation_id}/").content.decode()
    assert page.count("ask-flagship-button") == 1
    second = escalate(api, reply.pk).json()["id"]
    Message.objects.filter(pk=second).update(status="done", content="El museo abre a las diez.", cost=900)
    page = alice_client.get(f"/chat/c/{reply.conversation_id}/").content.decode()
    assert "ask-flagship-button" not in page
    assert f'data-escalation-of="{reply.pk}"' in page
    assert "Ask the flagship → GPT-4o (Auto had answered with GPT-4o mini)" in page


def test_the_usage_page_counts_escalations_by_category_and_shows_the_threshold(api, alice, alice_client, settings):
    for prompt in (CHEAP_PROMPT, "Translate 'closed on Sundays' into German.", "What is the capital of Peru?"):
        reply = auto_reply(api, alice, prompt)
        second = escalate(api, reply.pk).json()["id"]
        Message.objects.filter(pk=second).update(status="done", content="...", cost=900)
    settings.AUTO_ROUTER_THRESHOLD = 0.42
    page = alice_client.get("/usage/").content.decode()
    assert "You pressed <strong>Ask the flagship</strong> on 3 Auto replies" in page
    assert '<li data-category="translation">translation: 2</li>' in page
    assert '<li data-category="factual_question">short factual question: 1</li>' in page
    assert "at least 0.42 likely" in page
    assert "that sent 0.0% of your Auto messages to the flagship" in page


def test_asking_the_flagship_counts_against_the_cap_on_replies_in_flight(api, alice, settings):
    first = auto_reply(api, alice, CHEAP_PROMPT)
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 1
    # Another reply is still running.
    auto_reply(api, alice, CHEAP_PROMPT, settle=False)
    holds = Hold.objects.count()

    response = escalate(api, first.pk)

    assert response.status_code == 429 and response.json()["error"]["code"] == "too_many_replies"
    assert Hold.objects.count() == holds and not Message.objects.filter(escalation_of=first).exists()
