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


def test_a_send_is_six_statements_on_postgresql_and_the_hold_is_the_last(conversation):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's count; SQLite's is below")
    with CaptureQueriesContext(connection) as queries:
        reply = services.message_send(user=conversation.user, conversation=conversation, content="hi", model="demo")
    sql = _statements(queries)
    # 1 BEGIN
    # 2 lock the user's row, then the conversation's, and touch it (updated_at), returning
    #   its system prompt and the wallet's id: one UPDATE ... RETURNING
    # 3 the model's row
    # 4 the history, with the count of replies in flight (the cap) in the same statement
    # 5 the prompt's and the reply's INSERTs, the hold (the wallet row's lock) and the
    #   reply's hold_id (and, sent with an API key, the hold's link to it): one statement
    # 6 COMMIT
    assert len(sql) == 6, "\n".join(sql)
    assert sql[0] == "BEGIN"
    assert sql[1].startswith("WITH u AS (SELECT id FROM auth_user") and "UPDATE chat_conversation" in sql[1]
    assert "chat_modelspec" in sql[2]
    assert "count(*)" in sql[3] and "FROM chat_message" in sql[3]
    assert sql[4].count("INSERT INTO chat_message") == 2 and "INSERT INTO wallet_hold" in sql[4]
    assert sql[5] == "COMMIT"
    assert not any("wallet_account" in s and "FOR UPDATE" in s for s in sql[:4])  # the wallet is locked last
    stored = Message.objects.get(pk=reply.pk)
    assert stored.hold_id == reply.hold_id == Hold.objects.get(idempotency_key=f"message:{reply.pk}").pk
    assert stored.context_ids[-1] < reply.pk  # the prompt's id comes before its reply's
    assert Account.objects.get(user=conversation.user).held == reply.hold.amount
    assert ledger_audit() == []


def test_a_send_with_a_key_and_an_idempotency_key_adds_no_statement(conversation):
    """The hold's link to the API key and the Idempotency-Key's record are written in the
    hold's statement (a key with a spend limit adds its lock and its spend's read before)."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's count")
    from chat.models import SendKey
    from openai_api.key_spend import acting_as
    from openai_api.models import KeyHold
    from panels.models import ApiKey

    api_key, _ = ApiKey.issue(user=conversation.user, name="k")
    with acting_as(lambda: api_key), CaptureQueriesContext(connection) as queries:
        reply = services.message_send(
            user=conversation.user, conversation=conversation, content="hi", model="demo", idempotency_key="k1"
        )
    sql = _statements(queries)
    # The key's record is looked up first (a repeat answers from it), then the send's six.
    assert len(sql) == 7, "\n".join(sql)
    assert "chat_sendkey" in sql[0] and sql[1] == "BEGIN" and sql[6] == "COMMIT"
    assert "openai_api_keyhold" in sql[5] and "chat_sendkey" in sql[5] and "wallet_hold" in sql[5]
    assert KeyHold.objects.get(hold_id=reply.hold_id).api_key_id == api_key.pk
    record = SendKey.objects.get(user=conversation.user, key="k1")
    assert (record.reply_id, record.status_code) == (reply.pk, 202)
    again = services.message_send(
        user=conversation.user, conversation=conversation, content="hi", model="demo", idempotency_key="k1"
    )
    assert again.pk == reply.pk and Message.objects.filter(conversation=conversation).count() == 4


def test_the_send_statements_store_what_the_orm_path_stores(conversation, settings):
    """The lock's, the model's and the history's reads (with the count in flight) and the
    store-and-hold statement of chat/send_sql.py: the same rows, and the same context, as
    the ORM's path, on PostgreSQL."""
    if connection.vendor != "postgresql":
        pytest.skip("the statements are PostgreSQL's")
    from django.db import transaction
    from django.utils import timezone

    from chat import send_sql

    settings.MAX_REPLIES_IN_FLIGHT_PER_USER = 5
    user = conversation.user

    def opened(conversation_id: int, *, count: bool = True, slug: str | None = "demo") -> send_sql.Opened:
        with transaction.atomic():
            return send_sql.open_send(
                conversation_id=conversation_id, user_id=user.pk, title="t", now=timezone.now(), slug=slug, count=count
            )

    image = {"type": "image", "url": "https://example.com/cat.png"}
    first = opened(conversation.pk)
    orm_history = services._history(conversation)
    assert [(m.pk, m.role, m.content, m.attachments) for m in first.history] == [
        (m.pk, m.role, m.content, m.attachments) for m in orm_history
    ]
    assert first.found and first.in_flight == 0 and first.spec.slug == "demo"
    assert first.wallet_id == Account.objects.get(user=user).pk
    reply = services.message_send(user=user, conversation=conversation, content="again", model="demo")
    assert opened(conversation.pk, slug=None).in_flight == 1  # the reply just queued
    stored = Message.objects.get(pk=reply.pk)
    prompt = Message.objects.get(pk=stored.context_ids[-1])
    assert (prompt.role, prompt.content, prompt.status, prompt.conversation_id) == (
        "user",
        "again",
        "done",
        conversation.pk,
    )
    assert stored.context_ids == [m.pk for m in orm_history] + [prompt.pk] == reply.context_ids
    for name in ("status", "model_id", "requested_model", "routed_by", "input_estimate", "prices", "created_at"):
        assert getattr(stored, name) == getattr(reply, name), name
    assert stored.input_estimate > 0 and stored.hold_id == reply.hold.pk
    hold = Hold.objects.get(pk=reply.hold.pk)
    for name in ("account_id", "amount", "status", "idempotency_key", "reference", "expires_at", "created_at"):
        assert getattr(hold, name) == getattr(reply.hold, name), name
    # An empty conversation still counts what is in flight; attachments come back as stored.
    empty = Conversation.objects.create(user=user)
    assert (opened(empty.pk).history, opened(empty.pk).in_flight) == ([], 1)
    Message.objects.create(conversation=empty, role="user", content="look", attachments=[image])
    assert [(m.content, m.attachments) for m in opened(empty.pk, count=False).history] == [("look", [image])]
    # Another user's conversation is not found (and nothing of it is touched).
    other = Conversation.objects.create(user=type(user).objects.create_user(username="bob2", password="x"))
    assert not opened(other.pk).found
    assert Conversation.objects.get(pk=other.pk).title == ""


def test_the_models_row_is_read_as_the_orm_reads_it(chat_catalog):  # noqa: F811
    if connection.vendor != "postgresql":
        pytest.skip("the prepared read is PostgreSQL's")
    from chat import send_sql
    from chat.models import ModelSpec

    specs = list(ModelSpec.objects.all())
    assert specs
    for expected in specs:
        read = send_sql.model_by_slug(expected.slug)
        for f in ModelSpec._meta.concrete_fields:
            assert getattr(read, f.attname) == getattr(expected, f.attname), (expected.slug, f.name)
            assert type(getattr(read, f.attname)) is type(getattr(expected, f.attname)), (expected.slug, f.name)
        assert read.prices_snapshot() == expected.prices_snapshot() and read.available == expected.available
        assert not read._state.adding
    assert send_sql.model_by_slug("no-such-model") is None


def test_the_insert_names_every_column_of_the_message_table():
    """chat_message has no database defaults: a column the INSERT leaves out would break sends."""
    from chat import send_sql

    assert sorted(send_sql.INSERT_COLUMNS) == sorted(
        f.column for f in Message._meta.concrete_fields if not f.primary_key
    )


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


def _run_counted(reply_id: int) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        worker.message_run(message_id=reply_id)
    return _statements(queries)


def test_a_settle_is_one_statement_on_postgresql(conversation, queued, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's count; SQLite's is below")
    monkeypatch.setattr(worker, "BATCH_MARGIN_SECONDS", 10**9)  # on this thread's connection, to count it
    reply = services.message_send(user=conversation.user, conversation=conversation, content="hi", model="demo")
    sql = _run_counted(reply.pk)
    # 1 the claim (UPDATE ... WHERE status = 'queued') returning the reply, with its
    #   model, hold and conversation, the database's clock and the context's messages:
    #   one statement
    # (the model is called with no connection held)
    # 2 the settlement: lock the reply if still streaming, post the hold (entry, digest
    #   chain, balance), end the reply with its text, tokens and cost: one statement
    # and nothing else: the `done` event takes the wallet's balance from the settlement,
    # and the automatic top-up's check is skipped (the settlement saw this wallet has none).
    assert len(sql) == 2, "\n".join(sql)
    assert sql[0].startswith('WITH c AS ( UPDATE "chat_message" SET status = ')
    assert "jsonb_array_elements_text(c.context_ids)" in sql[0] and "now()" in sql[0]
    settle = sql[1]
    assert settle.startswith("WITH g AS (SELECT id FROM chat_message") and "INSERT INTO wallet_entry" in settle
    assert "UPDATE chat_message SET status" in settle
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE and reply.cost > 0 and reply.content
    assert reply.hold.status == Hold.Status.POSTED and reply.hold.posted_amount == reply.cost
    account = Account.objects.get(user=conversation.user)
    done = read_done(reply)
    assert (done["balance"], done["available"], done["cost"]) == (account.balance, account.available, reply.cost)
    assert account.held == 0
    assert ledger_audit() == []


def test_a_settle_goes_through_the_group_commit_on_postgresql(conversation, queued):
    if connection.vendor != "postgresql":
        pytest.skip("the group commit is PostgreSQL's")
    from wallet import batching

    reply = services.message_send(user=conversation.user, conversation=conversation, content="hi", model="demo")
    before = batching._batcher.batches
    sql = _run_counted(reply.pk)
    # the claim with its load and context: the settlement ran in the batcher's transaction
    # (and the automatic top-up's check is skipped: the batch saw that this wallet has none)
    assert len(sql) == 1, "\n".join(sql)
    assert batching._batcher.batches == before + 1
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE and reply.hold.status == Hold.Status.POSTED
    assert read_done(reply)["balance"] == Account.objects.get(user=conversation.user).balance
    assert ledger_audit() == []


def test_a_settle_on_sqlite_is_one_short_transaction(conversation, queued):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's count; PostgreSQL's is above")
    reply = services.message_send(user=conversation.user, conversation=conversation, content="hi", model="demo")
    sql = _run_counted(reply.pk)
    # claim; load; context; then BEGIN IMMEDIATE, the reply's compare-and-swap, the post
    # (SAVEPOINT, the hold, the wallet locked, the wallet read, `held`, the entry, the
    # balance and chain head, the hold posted, the take-backs waiting, RELEASE), COMMIT;
    # the automatic top-up's check; the wallet's balance for the `done` event.
    assert len(sql) == 18, "\n".join(sql)
    assert sql[3] == "BEGIN IMMEDIATE" and sql[-3] == "COMMIT" and "wallet_autotopup" in sql[-2]
    assert "wallet_account" in sql[-1] and "chat_conversation" in sql[-1]
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE and reply.hold.status == Hold.Status.POSTED
    assert read_done(reply)["balance"] == Account.objects.get(user=conversation.user).balance


def read_done(reply: Message) -> dict:
    from chat import streams
    from tests.e2e_servers import parse_events, read_until_end

    events = read_until_end(parse_events(streams.sse_events(reply)))
    assert events[-1].kind == "done"
    return events[-1].data


def _streaming(conversation: Conversation) -> Message:
    reply = services.message_send(user=conversation.user, conversation=conversation, content="hi", model="demo")
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STREAMING)
    return Message.objects.select_related("model", "hold", "conversation__user").get(pk=reply.pk)


def _ended(status: str = Message.Status.DONE) -> dict:
    from django.utils import timezone

    return {
        "status": status,
        "content": "text",
        "input_tokens": 3,
        "output_tokens": 4,
        "usage_estimated": False,
        "cost": 5,
        "error_code": "",
        "error_message": "",
        "finished_at": timezone.now(),
    }


@pytest.mark.parametrize("batch", [False, True])
def test_the_one_statement_posts_nothing_for_a_reply_that_already_ended(conversation, batch):
    if connection.vendor != "postgresql":
        pytest.skip("the one statement is PostgreSQL's")
    message = _streaming(conversation)
    Message.objects.filter(pk=message.pk).update(status=Message.Status.FAILED, error_code="expired")
    before = Account.objects.get(user=conversation.user)
    assert worker._end_and_post(message, _ended(), cost=5, memo="m", batch=batch) is None
    assert Hold.objects.get(pk=message.hold_id).status == Hold.Status.PENDING  # left to the caller's own path
    after = Account.objects.get(user=conversation.user)
    assert (after.balance, after.held) == (before.balance, before.held)
    assert Message.objects.get(pk=message.pk).status == Message.Status.FAILED


@pytest.mark.parametrize("batch", [False, True])
def test_the_one_statement_ends_no_reply_whose_hold_it_cannot_post(conversation, batch):
    if connection.vendor != "postgresql":
        pytest.skip("the one statement is PostgreSQL's")
    import datetime as dt

    from django.utils import timezone

    message = _streaming(conversation)
    Hold.objects.filter(pk=message.hold_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert worker._end_and_post(message, _ended(), cost=5, memo="m", batch=batch) is None
    assert Message.objects.get(pk=message.pk).status == Message.Status.STREAMING
    assert Hold.objects.get(pk=message.hold_id).status == Hold.Status.PENDING


def test_a_late_settlement_refused_in_a_batch_is_still_paid_by_the_late_rules(conversation):
    """The batch's statement finds the hold expired; the worker's own path then pays late."""
    import datetime as dt
    import time

    from django.utils import timezone

    from chat import streams

    message = _streaming(conversation)
    Hold.objects.filter(pk=message.hold_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    message.hold.refresh_from_db()
    outcome = worker._Outcome(parts=["late text"], hold_ends=time.monotonic() + 3600)  # as if time were left
    worker._settle(message, outcome, streams.ReplyWriter(message))
    message.refresh_from_db()
    assert message.status == Message.Status.DONE and message.error_code == "late" and message.cost > 0
    account = Account.objects.get(user=conversation.user)
    assert account.held == 0
    assert read_done(message)["balance"] == account.balance
    assert ledger_audit() == []


def test_the_context_is_read_before_the_connection_goes_back_for_the_model_call(conversation, queued, monkeypatch):
    """The first token waits on no reconnection: claim, load and context on one connection
    (one statement on PostgreSQL), then the model is called with none held."""
    reply = services.message_send(user=conversation.user, conversation=conversation, content="hi", model="demo")
    seen = []
    call = worker.providers.chat_stream

    def chat_stream(**kwargs):
        seen.append((connection.connection is None, len(connection.queries_log)))
        return call(**kwargs)

    monkeypatch.setattr(worker.providers, "chat_stream", chat_stream)
    with CaptureQueriesContext(connection) as queries:
        before = len(connection.queries_log)
        worker.message_run(message_id=reply.pk)
    ((closed, ran),) = seen
    assert closed, "the model was called with a database connection held"
    expected = 1 if connection.vendor == "postgresql" else 3  # claim, load, context: all before the call
    assert ran - before == expected, "\n".join(_statements(queries))
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE


def test_the_models_statement_is_put_together_once(chat_catalog, monkeypatch):  # noqa: F811
    if connection.vendor != "postgresql":
        pytest.skip("the prepared read is PostgreSQL's")
    from chat import raw_rows, send_sql

    assert send_sql.model_by_slug("demo").slug == "demo"

    def again(*args, **kwargs):
        raise AssertionError("the column list was put together again")

    monkeypatch.setattr(raw_rows, "columns", again)
    monkeypatch.setattr(raw_rows, "converters", again)
    assert send_sql.model_by_slug("demo").slug == "demo"
    assert send_sql.model_by_slug("no-such-model") is None
