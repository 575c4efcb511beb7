"""Conversation tools of the API: search, export, the system prompt and temperature (and
that they reach the model and count in the hold), the running cost total and the
"still generating" flag."""

from __future__ import annotations

import json

import pytest

from chat import providers, worker
from chat.models import Conversation, Message
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


@pytest.fixture
def api(api_client, alice, chat_catalog, queued):  # noqa: F811
    funded_wallet(alice, 1_000_000)
    api_client.force_login(alice)
    return api_client


def new_conversation(api, **fields) -> dict:
    response = api.post("/api/v1/conversations", fields, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def send(api, conversation_id: int, content: str) -> int:
    response = api.post(
        f"/api/v1/conversations/{conversation_id}/messages", {"content": content, "model": "demo"}, format="json"
    )
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def test_system_prompt_and_temperature_reach_the_model_and_count_in_the_hold(api, monkeypatch):
    calls: list[dict] = []
    real = providers.chat_stream

    def recording(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(providers, "chat_stream", recording)
    plain = new_conversation(api, title="Plain")
    plain_reply = Message.objects.get(pk=send(api, plain["id"], "[demo:tokens=3] hi"))

    tuned = new_conversation(api, title="Tuned", system_prompt="You are a pirate. " * 20, temperature="0.3")
    assert tuned["system_prompt"].startswith("You are a pirate.") and tuned["temperature"] == "0.30"
    response = api.patch(f"/api/v1/conversations/{tuned['id']}", {"temperature": 1.25}, format="json")
    assert response.status_code == 200 and response.json()["temperature"] == "1.25"
    assert response.json()["system_prompt"].startswith("You are a pirate.")  # untouched by the PATCH
    reply_id = send(api, tuned["id"], "[demo:tokens=3] hi")
    reply = Message.objects.select_related("hold").get(pk=reply_id)
    # The system prompt is part of what the model reads, so of the estimate and the hold.
    assert reply.input_estimate > plain_reply.input_estimate + 50
    assert reply.hold.amount > plain_reply.hold.amount

    worker.message_run(message_id=reply_id)
    call = calls[-1]
    assert call["messages"][0] == {"role": "system", "content": ("You are a pirate. " * 20).strip()}
    assert call["messages"][-1]["role"] == "user"
    assert call["temperature"] == 1.25
    worker.message_run(message_id=plain_reply.pk)
    assert calls[-1]["temperature"] is None and calls[-1]["messages"][0]["role"] == "user"

    # Out of range is refused; null goes back to the model's default.
    response = api.patch(f"/api/v1/conversations/{tuned['id']}", {"temperature": 2.5}, format="json")
    assert response.status_code == 400
    response = api.patch(f"/api/v1/conversations/{tuned['id']}", {"temperature": None}, format="json")
    assert response.json()["temperature"] is None
    assert Conversation.objects.get(pk=tuned["id"]).temperature is None


def test_cost_total_and_still_generating(api):
    conversation = new_conversation(api, title="Costs")
    first = send(api, conversation["id"], "[demo:tokens=3] one")
    listed = api.get("/api/v1/conversations").json()[0]
    assert listed["running"] is True and listed["cost"] == 0
    worker.message_run(message_id=first)
    second = send(api, conversation["id"], "[demo:tokens=4] two")
    worker.message_run(message_id=second)
    costs = [Message.objects.get(pk=first).cost, Message.objects.get(pk=second).cost]
    listed = api.get("/api/v1/conversations").json()[0]
    assert listed["running"] is False and listed["cost"] == sum(costs) > 0
    # A regenerated reply's cost stays in the total: it was charged.
    regenerated = api.post(f"/api/v1/messages/{second}/regenerate", {}, format="json").json()["id"]
    worker.message_run(message_id=regenerated)
    total = sum(costs) + Message.objects.get(pk=regenerated).cost
    assert api.get(f"/api/v1/conversations/{conversation['id']}").json()["cost"] == total


def test_search_matches_titles_and_text_and_leaves_out_other_users(api, bob):
    trip = new_conversation(api, title="Trip to Lisbon")
    recipes = new_conversation(api, title="Recipes")
    worker.message_run(message_id=send(api, recipes["id"], "[demo:echo] How long to bake SOURDOUGH bread?"))
    Conversation.objects.create(user=bob, title="Sourdough for bob")

    def found(q: str) -> list[int]:
        return [c["id"] for c in api.get("/api/v1/conversations", {"q": q}).json()]

    assert found("lisbon") == [trip["id"]]
    assert found("sourdough") == [recipes["id"]]
    hit = api.get("/api/v1/conversations", {"q": "sourdough"}).json()[0]
    assert "SOURDOUGH bread" in hit["snippet"]
    assert found("nothing like this") == []
    assert sorted(found("")) == sorted([trip["id"], recipes["id"]])


def test_export_as_markdown_and_json(api, bob, api_client):
    conversation = new_conversation(api, title="Export me", system_prompt="Be brief.")
    reply_id = send(api, conversation["id"], "[demo:echo] What is **2+2**?")
    worker.message_run(message_id=reply_id)
    reply = Message.objects.get(pk=reply_id)

    response = api.get(f"/api/v1/conversations/{conversation['id']}/export", {"as": "markdown"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == f'attachment; filename="panels-{conversation["id"]}-export-me.md"'
    text = response.content.decode()
    assert text.startswith("# Export me\n")
    assert "> Be brief." in text
    assert "## You\n\n[demo:echo] What is **2+2**?" in text
    assert "## Demo model\n\nWhat is **2+2**?" in text
    assert f"{reply.cost:,} credits" in text

    response = api.get(f"/api/v1/conversations/{conversation['id']}/export", {"as": "json"})
    assert response["Content-Disposition"].endswith('.json"')
    data = json.loads(response.content)
    assert data["title"] == "Export me" and data["system_prompt"] == "Be brief."
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["cost"] == reply.cost == data["cost"]["credits"]

    assert api.get(f"/api/v1/conversations/{conversation['id']}/export", {"as": "pdf"}).status_code == 400
    other = type(api_client)()
    other.force_login(bob)
    assert other.get(f"/api/v1/conversations/{conversation['id']}/export").status_code == 404
