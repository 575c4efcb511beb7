"""Edit a message and regenerate a reply (POST /api/v1/messages/{id}/edit, /regenerate):
the tail of the conversation is replaced, the new reply is held and queued like a send,
and what the replaced replies cost stays in the ledger."""

from __future__ import annotations

import pytest

from chat import worker
from chat.models import Conversation, Message
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

START = 1_000_000


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


@pytest.fixture
def api(api_client, alice, chat_catalog, queued):  # noqa: F811
    funded_wallet(alice, START)
    api_client.force_login(alice)
    return api_client


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(user=alice, title="Test")


def send_and_run(api, conversation, content: str) -> Message:
    response = api.post(
        f"/api/v1/conversations/{conversation.pk}/messages", {"content": content, "model": "demo"}, format="json"
    )
    assert response.status_code == 202, response.json()
    worker.message_run(message_id=response.json()["id"])
    return Message.objects.get(pk=response.json()["id"])


def shown(api, conversation) -> list[tuple[str, str]]:
    messages = api.get(f"/api/v1/conversations/{conversation.pk}").json()["messages"]
    return [(m["role"], m["content"]) for m in messages]


def usage_entries() -> list[tuple[str, int]]:
    return list(Entry.objects.filter(kind=Entry.Kind.USAGE).order_by("id").values_list("reference", "amount"))


def test_regenerate_replaces_the_reply_and_keeps_what_it_cost(api, alice, conversation, queued):
    first = send_and_run(api, conversation, "[demo:tokens=5] Hello")
    assert first.status == Message.Status.DONE and first.cost > 0
    charged = usage_entries()
    assert charged == [(f"message:{first.pk}", first.cost)]

    response = api.post(f"/api/v1/messages/{first.pk}/regenerate", {}, format="json")
    assert response.status_code == 202, response.json()
    new = Message.objects.get(pk=response.json()["id"])
    assert new.status == Message.Status.QUEUED and new.retry_of_id == first.pk
    assert new.context_ids == first.context_ids  # the same question, answered again
    assert new.requested_model == "demo"
    assert new.hold.status == Hold.Status.PENDING
    assert queued[-1] == new.pk
    first.refresh_from_db()
    assert first.superseded_at is not None
    # The conversation reads: the question, then the new reply; the old one is gone from it.
    assert [m["id"] for m in api.get(f"/api/v1/conversations/{conversation.pk}").json()["messages"]] == [
        first.context_ids[-1],
        new.pk,
    ]
    # The old reply's charge stays: the ledger is untouched, the wallet paid it once.
    assert usage_entries() == charged
    account = Account.objects.get(user=alice)
    assert account.balance == START - first.cost
    assert account.held == new.hold.amount

    worker.message_run(message_id=new.pk)
    new.refresh_from_db()
    assert new.status == Message.Status.DONE
    assert usage_entries() == [*charged, (f"message:{new.pk}", new.cost)]
    assert Account.objects.get(user=alice).balance == START - first.cost - new.cost


def test_edit_replaces_the_message_and_everything_after_it(api, conversation, queued):
    a = send_and_run(api, conversation, "[demo:echo] first question")
    b = send_and_run(api, conversation, "[demo:echo] second question")
    assert shown(api, conversation) == [
        ("user", "[demo:echo] first question"),
        ("assistant", "first question"),
        ("user", "[demo:echo] second question"),
        ("assistant", "second question"),
    ]
    first_prompt = a.context_ids[-1]
    response = api.post(
        f"/api/v1/messages/{first_prompt}/edit",
        {"content": "[demo:echo] a better question", "model": "demo"},
        format="json",
    )
    assert response.status_code == 202, response.json()
    reply = Message.objects.get(pk=response.json()["id"])
    prompt = Message.objects.get(pk=response.json()["user_message"])
    assert prompt.content == "[demo:echo] a better question" and prompt.pk > b.pk
    assert reply.context_ids == [prompt.pk]  # nothing replaced is sent to the model
    worker.message_run(message_id=reply.pk)
    assert shown(api, conversation) == [("user", "[demo:echo] a better question"), ("assistant", "a better question")]
    replaced = Message.objects.filter(superseded_at__isnull=False).values_list("pk", flat=True)
    assert sorted(replaced) == sorted([first_prompt, a.pk, b.context_ids[-1], b.pk])
    # Both replaced replies stay charged.
    assert [ref for ref, _ in usage_entries()] == [f"message:{a.pk}", f"message:{b.pk}", f"message:{reply.pk}"]

    # The next message follows the edited line only.
    c = send_and_run(api, conversation, "[demo:tokens=3] and then?")
    assert c.context_ids[:2] == [prompt.pk, reply.pk] and len(c.context_ids) == 3


def test_edit_refused_changes_nothing(api, conversation, queued):
    a = send_and_run(api, conversation, "[demo:tokens=3] hi")
    prompt_id = a.context_ids[-1]
    response = api.post(f"/api/v1/messages/{prompt_id}/edit", {"content": "hello", "model": "nope"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_model"
    response = api.post(f"/api/v1/messages/{prompt_id}/edit", {"content": "  ", "model": "demo"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "empty_message"
    assert not Message.objects.filter(superseded_at__isnull=False).exists()
    assert Message.objects.count() == 2


def test_revisions_are_refused_for_the_wrong_message_or_while_a_reply_runs(api, conversation, queued, bob, api_client):
    a = send_and_run(api, conversation, "[demo:tokens=3] hi")
    prompt_id = a.context_ids[-1]
    assert api.post(f"/api/v1/messages/{a.pk}/edit", {"content": "x", "model": "demo"}, format="json").json()["error"][
        "code"
    ] == ("not_editable")
    assert api.post(f"/api/v1/messages/{prompt_id}/regenerate", {}, format="json").json()["error"]["code"] == (
        "not_a_reply"
    )
    running = api.post(
        f"/api/v1/conversations/{conversation.pk}/messages", {"content": "more", "model": "demo"}, format="json"
    ).json()["id"]
    response = api.post(f"/api/v1/messages/{a.pk}/regenerate", {}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "reply_in_progress"
    worker.message_run(message_id=running)

    assert api.post(f"/api/v1/messages/{a.pk}/regenerate", {}, format="json").status_code == 202
    # Replaced now: it can't be revised again.
    worker.message_run(message_id=queued[-1])
    response = api.post(f"/api/v1/messages/{a.pk}/regenerate", {}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "superseded"

    other = type(api_client)()
    other.force_login(bob)
    assert other.post(f"/api/v1/messages/{queued[-1]}/regenerate", {}, format="json").status_code == 404


def test_a_repeated_idempotency_key_regenerates_once(api, conversation, queued):
    a = send_and_run(api, conversation, "[demo:tokens=3] hi")
    first = api.post(f"/api/v1/messages/{a.pk}/regenerate", {}, format="json", HTTP_IDEMPOTENCY_KEY="regen-1")
    again = api.post(f"/api/v1/messages/{a.pk}/regenerate", {}, format="json", HTTP_IDEMPOTENCY_KEY="regen-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert Message.objects.filter(retry_of=a).count() == 1
    other = api.post(
        f"/api/v1/messages/{a.pk}/regenerate", {"model": "auto"}, format="json", HTTP_IDEMPOTENCY_KEY="regen-1"
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_auto_decides_outside_the_transaction_for_regenerate_and_edit(api, conversation, monkeypatch):
    """The router's embedding takes milliseconds: no conversation or wallet row lock waits on it."""
    from chat import routing, services

    first = send_and_run(api, conversation, "[demo:tokens=5] Hello")
    seen: list[bool] = []
    real = routing.auto_decide

    def watched(**kwargs):
        from django.db import connection

        seen.append(connection.in_atomic_block)
        return real(**kwargs)

    monkeypatch.setattr(services, "auto_decide", watched)
    monkeypatch.setattr(routing, "auto_decide", watched)

    response = api.post(f"/api/v1/messages/{first.pk}/regenerate", {"model": "auto"}, format="json")
    assert response.status_code == 202, response.json()
    worker.message_fail(Message.objects.get(pk=response.json()["id"]), code="test", text="stopped for the test")
    prompt = Message.objects.get(pk=first.context_ids[-1])
    response = api.post(
        f"/api/v1/messages/{prompt.pk}/edit", {"content": "Tag this: great", "model": "auto"}, format="json"
    )
    assert response.status_code == 202, response.json()

    assert seen and not any(seen), seen  # decided, and never inside a transaction
