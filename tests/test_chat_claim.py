"""The worker's one-statement claim on PostgreSQL (chat/claim.py) loads what the ORM would:
the reply as claimed, its model, hold and conversation, and the context in the reply's order."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from chat import claim, services, worker
from chat.models import Conversation, Message
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


def _fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_the_claim_loads_what_the_orm_would_and_claims_once(alice, chat_catalog, queued):  # noqa: F811
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement claim is PostgreSQL's")
    funded_wallet(alice, 1_000_000)
    conversation = Conversation.objects.create(user=alice, system_prompt="Be brief.", temperature="0.70")
    services.message_send(user=alice, conversation=conversation, content="[demo:tokens=3] first", model="demo")
    worker.message_run(message_id=queued[-1])
    Message.objects.filter(conversation=conversation, role=Message.Role.USER).update(
        attachments=[{"type": "image", "url": PNG}]
    )
    reply = services.message_send(user=alice, conversation=conversation, content="second", model="demo")
    started = timezone.now()

    claimed = claim.claim(reply.pk, started_at=started)

    assert claimed is not None
    loaded = Message.objects.select_related("model", "hold", "conversation").get(pk=reply.pk)
    assert loaded.status == Message.Status.STREAMING and loaded.started_at == started
    message = claimed.message
    assert _fields(message) == _fields(loaded)
    for name in ("model", "hold", "conversation"):
        assert _fields(getattr(message, name)) == _fields(getattr(loaded, name)), name
    assert abs((claimed.db_now - timezone.now()).total_seconds()) < 60
    assert len(message.context_ids) == 3  # the first exchange and the new prompt
    expected = {m.pk: (m.role, m.content, m.attachments) for m in Message.objects.filter(pk__in=message.context_ids)}
    assert claimed.context == expected
    assert worker._provider_messages(message, message.model, claimed.context)[0] == {
        "role": "system",
        "content": "Be brief.",
    }
    assert [m["role"] for m in worker._provider_messages(message, message.model, claimed.context)] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    # A second delivery of the task claims nothing.
    assert claim.claim(reply.pk, started_at=timezone.now()) is None


def test_a_reply_without_a_hold_is_claimed_with_none(alice, chat_catalog, queued):  # noqa: F811
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement claim is PostgreSQL's")
    funded_wallet(alice, 1_000_000)
    conversation = Conversation.objects.create(user=alice)
    reply = services.message_send(user=alice, conversation=conversation, content="hi", model="demo")
    Message.objects.filter(pk=reply.pk).update(hold=None)
    claimed = claim.claim(reply.pk, started_at=timezone.now())
    assert claimed is not None and claimed.message.hold is None and claimed.message.hold_id is None
    assert claimed.message.model.slug == "demo" and claimed.message.conversation.pk == conversation.pk
