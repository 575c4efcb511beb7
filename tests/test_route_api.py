"""POST /api/v1/route: Auto's choice for one prompt, with no message, hold or entry written."""

from __future__ import annotations

import pytest

from chat.models import Message
from chat.router import route_decide
from chat.routing import ROUTE_MAX_CHARS
from panels.models import ApiKey
from wallet.models import Entry, Hold

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")
LONG_DOC = (
    "Here are the minutes of our last three board meetings.\n\n"
    + "\n\n".join(
        f"Meeting {n}: the board discussed the budget for the warehouse, hiring in the support team, "
        "the delay of the new billing system and the supplier contract. No decision was taken on the "
        "supplier; the budget was approved with a 5% reserve; hiring was postponed to the next quarter."
        for n in range(1, 13)
    )
    + "\n\nSynthesise these: what changed between meetings, which decisions contradict each other, "
    "and what is still open?"
)


@pytest.fixture
def openai_key(monkeypatch):
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    # Both tiers "available"; nothing here calls a model, so the key is never sent anywhere.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")


def route(client, content, **extra):
    return client.post("/api/v1/route", {"content": content}, format="json", **extra)


def test_a_short_classification_goes_to_the_cheap_tier(api_client, alice, openai_key):
    api_client.force_login(alice)
    response = route(api_client, 'Sentiment of this tweet, one word: "worst update ever, app keeps crashing"')
    assert response.status_code == 200
    decision = route_decide(content='Sentiment of this tweet, one word: "worst update ever, app keeps crashing"')
    assert response.json() == {
        "tier": "cheap",
        "model": "gpt-4o-mini",
        "reason": f"Auto -> GPT-4o mini: {decision.reason}",
    }
    assert decision.reason.startswith("classification or tagging (flagship likelihood ")


def test_a_long_document_synthesis_goes_to_the_flagship(api_client, alice, openai_key):
    api_client.force_login(alice)
    body = route(api_client, LONG_DOC).json()
    assert body["tier"] == "flagship" and body["model"] == "gpt-4o"
    assert body["reason"] == f"Auto -> GPT-4o: {route_decide(content=LONG_DOC).reason}"
    assert body["reason"].startswith("Auto -> GPT-4o: long document")


def test_a_bearer_key_works(api_client, alice, openai_key):
    _, key = ApiKey.issue(user=alice, name="routing")
    response = route(api_client, "Write a subject line for our spring sale", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o-mini"


def test_routing_writes_nothing_and_charges_nothing(api_client, alice, openai_key):
    api_client.force_login(alice)
    assert route(api_client, LONG_DOC).status_code == 200
    assert Message.objects.count() == 0
    assert Entry.objects.count() == 0 and Hold.objects.count() == 0


def test_no_login_is_401(api_client, db):
    response = route(api_client, "hello")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    bad_key = route(api_client, "hello", HTTP_AUTHORIZATION="Bearer pnl_not-a-key")
    assert bad_key.status_code == 401


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"content": ""}, "content"),
        ({"content": "  \n "}, "Write the prompt to route."),
        ({}, "content"),
        ({"content": "x" * (ROUTE_MAX_CHARS + 1)}, "512000"),
    ],
)
def test_empty_or_oversized_content_is_a_400(api_client, alice, openai_key, payload, fragment):
    api_client.force_login(alice)
    response = api_client.post("/api/v1/route", payload, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert fragment in error["message"]


def test_with_no_keys_the_demo_model_answers(api_client, alice, monkeypatch):
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    api_client.force_login(alice)
    body = route(api_client, "Write a subject line for our spring sale").json()
    assert body["tier"] == "cheap" and body["model"] == "demo"
    assert body["reason"].endswith("(no provider key is set, so the demo model answers)")


def test_the_route_is_in_the_openapi_schema(client, db):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/route"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401"}
    assert "content" in str(operation["requestBody"])
