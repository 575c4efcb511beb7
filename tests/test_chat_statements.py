"""The chat send and settle paths, counted statement by statement, so they do not creep
back: on PostgreSQL the send's hold is its last statement before the commit."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import services, worker
from chat.errors import TooManyReplies
from chat.models import Conversation, Message
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Hold
from wallet.selectors import ledger_audit

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


@pytest.fixture
def conversation(alice, chat_catalog, queued) -> Conversation:  # noqa: F811
    """A conversation with one settled exchange, so the next send has history to read."""
    funded_wallet(alice, 1_000_000)
    conversation = Conversation.objects.create(user=alice)
    services.message_send(user=alice, conversation=conversation, content="[demo:tokens=3] warm", model="demo")
    worker.message_run(message_id=queued[-1])
    return conversation


def _statements(queries: CaptureQueriesContext) -> list[str]:
    return [" ".join(q["sql"].split()) for q in queries.captured_queries]


def test_a_send_is_nine_statements_on_postgresql_and_the_hold_is_the_last_before_commit(conversation):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's count; SQLite's is below")
    with CaptureQueriesContext(connection) as queries:
        reply = services.message_send(user=conversation.user, conversation=conversation, content="hi", model="demo")
    sql = _statements(queries)
    # 1 the model's row (before the transaction: it needs no lock)
    # 2 BEGIN
    # 3 lock the user's row, then the conversation's, and touch it (updated_at), returning
    #   its system prompt and the wallet's id: one UPDATE ... RETURNING
    # 4 the history
    # 5 the count of replies in flight (the cap)
    # 6 the prompt's INSERT
    # 7 the reply's INSERT
    # 8 the hold, which also sets the reply's hold_id: one statement, the wallet row's lock
    # 9 COMMIT
    assert len(sql) == 9, "\n".join(sql)
    assert "chat_modelspec" in sql[0]
    assert sql[1] == "BEGIN"
    assert sql[2].startswith("WITH u AS (SELECT id FROM auth_user") and "UPDATE chat_conversation" in sql[2]
    assert "INSERT INTO wallet_hold" in sql[7] and "UPDATE chat_message SET hold_id" in sql[7]
    assert sql[8] == "COMMIT"
    assert not any("wallet_account" in s and "FOR UPDATE" in s for s in sql[:7])  # the wallet is locked last
    reply.refresh_from_db()
    assert reply.hold_id == Hold.objects.get(idempotency_key=f"message:{reply.pk}").pk
    assert Account.objects.get(user=conversation.user).held == reply.hold.amount
    assert ledger_audit() == []


def test_a_send_on_sqlite_is_one_short_transaction_with_the_hold_last(conversation):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's count; PostgreSQL's is above")
    with CaptureQueriesContext(connection) as queries:
        reply = services.message_send(user=conversation.user, conversation=conversation, content="hi", model="demo")
    sql = _statements(queries)
    # the model's row; BEGIN IMMEDIATE; the conversation's UPDATE ... RETURNING; the
    # history; the count in flight; the prompt's and the reply's INSERTs; then the hold
    # (SAVEPOINT, the wallet read, the key's look-up, the hold's INSERT, the wallet's
    # `held`, the reply's hold_id, RELEASE); COMMIT.
    assert len(sql) == 15, "\n".join(sql)
    assert sql[1] == "BEGIN IMMEDIATE" and sql[-1] == "COMMIT"
    assert "UPDATE chat_message SET hold_id" in sql[-3]
    reply.refresh_from_db()
    assert reply.hold_id is not None and reply.hold.status == Hold.Status.PENDING


def test_parallel_sends_in_many_conversations_stop_exactly_at_the_cap(alice, chat_catalog, queued, settings):  # noqa: F811
    """The cap is counted under the user's row lock, before the wallet is touched: sends of
    one user in different conversations still count in turn (on PostgreSQL, truly in parallel)."""
    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 3
    funded_wallet(alice, 10_000_000)
    conversations = [Conversation.objects.create(user=alice) for _ in range(8)]
    barrier = threading.Barrier(len(conversations))
    outcomes: list[str] = []
    lock = threading.Lock()

    def send(conversation: Conversation) -> None:
        try:
            barrier.wait()
            try:
                services.message_send(user=alice, conversation=conversation, content="[demo:tokens=2] hi", model="demo")
                outcome = "sent"
            except TooManyReplies:
                outcome = "refused"
            with lock:
                outcomes.append(outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(c,)) for c in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["refused"] * 5 + ["sent"] * 3
    assert Message.objects.filter(role="assistant").count() == Hold.objects.count() == 3
    assert Account.objects.get(user=alice).held == sum(Hold.objects.values_list("amount", flat=True))
