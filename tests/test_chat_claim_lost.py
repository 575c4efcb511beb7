"""A database that fails while the worker claims a reply (a restart, a failover): the
task tries again for as long as the reply could still start, and a claim that committed
without its answer arriving is taken again by the retry, not left streaming with no
worker until its hold expires."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections
from django.test import override_settings
from django.utils import timezone

from chat import claim, services, tasks, worker
from chat.models import Conversation, Message
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet import ledger_sql
from wallet.models import Entry, Hold
from wallet.selectors import ledger_audit


@pytest.fixture
def reply(alice, chat_catalog, monkeypatch) -> Message:  # noqa: F811
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: None)
    funded_wallet(alice, 1_000_000)
    conversation = Conversation.objects.create(user=alice)
    return services.message_send(user=alice, conversation=conversation, content="[demo:tokens=4] hi", model="demo")


def claimed_without_answer(reply: Message) -> dt.datetime:
    """What a claim that committed, and whose answer was lost, leaves behind."""
    started_at = timezone.now()
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STREAMING, started_at=started_at)
    return started_at


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_the_retry_takes_again_the_claim_its_first_attempt_made(reply):
    lost = claimed_without_answer(reply)
    worker.message_run(message_id=reply.pk, lost_claims=(lost,))
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE and reply.started_at > lost  # the retry's own mark
    assert Entry.objects.filter(reference=f"message:{reply.pk}").count() == 1
    assert Hold.objects.get(pk=reply.hold_id).status == Hold.Status.POSTED
    assert ledger_audit() == []


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_another_attempts_claim_is_left_alone(reply):
    started_at = claimed_without_answer(reply)
    worker.message_run(message_id=reply.pk, lost_claims=(started_at + dt.timedelta(microseconds=1),))
    worker.message_run(message_id=reply.pk)  # a second delivery of the task
    reply.refresh_from_db()
    assert reply.status == Message.Status.STREAMING and reply.started_at == started_at
    assert not Entry.objects.filter(reference=f"message:{reply.pk}").exists()


class WorkerKilled(BaseException):
    """The worker process ending mid-reply (SIGKILL, out of memory): nothing of the
    task's own runs after it."""


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_the_retry_delivered_again_after_its_worker_died_mid_reply_leaves_the_reply_alone(reply, monkeypatch):
    lost = claimed_without_answer(reply)

    def killed(*args, **kwargs):
        raise WorkerKilled

    with monkeypatch.context() as patched:
        patched.setattr("chat.streams.ReplyWriter", killed)  # the first thing after the claim
        with pytest.raises(WorkerKilled):
            worker.message_run(message_id=reply.pk, lost_claims=(lost,))
    reply.refresh_from_db()
    taken_at = reply.started_at
    assert reply.status == Message.Status.STREAMING and taken_at > lost
    # acks_late delivers the same retry, with the same kwargs, again: it must not call the
    # model a second time for a reply that may already have text on its stream.
    worker.message_run(message_id=reply.pk, lost_claims=(lost,))
    reply.refresh_from_db()
    assert reply.status == Message.Status.STREAMING and reply.started_at == taken_at
    assert not Entry.objects.filter(reference=f"message:{reply.pk}").exists()


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_a_claim_the_database_did_not_answer_names_every_lost_claim(reply, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(claim, "claim", unreachable)
    monkeypatch.setattr(Message.objects, "filter", unreachable)  # SQLite's claim
    earlier = timezone.now() - dt.timedelta(seconds=2)
    before = timezone.now()
    with pytest.raises(worker.ClaimUnanswered) as raised:
        worker.message_run(message_id=reply.pk, lost_claims=(earlier,))
    assert raised.value.lost_claims[0] == earlier and len(raised.value.lost_claims) == 2
    assert raised.value.lost_claims[1] >= before  # this attempt's own mark
    assert isinstance(raised.value, OperationalError)


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_a_claim_lost_twice_is_taken_by_the_third_attempt(reply):
    first = claimed_without_answer(reply)
    second = first + dt.timedelta(seconds=1)  # committed; the first never did
    Message.objects.filter(pk=reply.pk).update(started_at=second)
    worker.message_run(message_id=reply.pk, lost_claims=(first, second))
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE
    assert Entry.objects.filter(reference=f"message:{reply.pk}").count() == 1


def test_a_lost_claim_is_retried_with_its_marks():
    marks = (
        dt.datetime(2026, 11, 29, 14, 0, 0, 123456, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 29, 14, 0, 1, 654321, tzinfo=dt.UTC),
    )
    countdown, kwargs = tasks.retry_after_database_error(
        worker.ClaimUnanswered(marks), message_id=7, retries=0, unreachable_since=None, now=1000.0
    )
    assert kwargs == {"message_id": 7, "unreachable_since": 1000.0, "lost_claims": [m.isoformat() for m in marks]}
    assert tuple(dt.datetime.fromisoformat(m) for m in kwargs["lost_claims"]) == marks  # to the microsecond
    assert 0.5 <= countdown <= 1.0


def test_the_task_passes_its_lost_claims_to_the_worker(monkeypatch):
    seen = []
    monkeypatch.setattr(worker, "message_run", lambda **kwargs: seen.append(kwargs))
    mark = dt.datetime(2026, 11, 29, 14, 0, 0, 123456, tzinfo=dt.UTC)
    tasks.message_run.run(7, lost_claims=[mark.isoformat()])
    tasks.message_run.run(8, started_at=mark.isoformat())  # a retry queued by an earlier version
    tasks.message_run.run(9)
    assert seen == [
        {"message_id": 7, "lost_claims": (mark,)},
        {"message_id": 8, "lost_claims": (mark,)},
        {"message_id": 9, "lost_claims": ()},
    ]


def test_other_database_errors_are_retried_without_a_mark():
    _, kwargs = tasks.retry_after_database_error(
        OperationalError("gone"), message_id=7, retries=3, unreachable_since=990.0, now=1000.0
    )
    assert kwargs == {"message_id": 7, "unreachable_since": 990.0}


@override_settings(HOLD_TTL_SECONDS=60)
def test_retries_back_off_and_last_as_long_as_the_reply_could_start():
    window = 60 - worker.DEADLINE_MARGIN_SECONDS
    since, now, retries, waits = 1000.0, 1000.0, 0, []
    while (plan := tasks.retry_after_database_error(
        OperationalError("gone"), message_id=7, retries=retries, unreachable_since=since, now=now
    )) is not None:  # fmt: skip
        countdown, kwargs = plan
        waits.append(countdown)
        assert kwargs["unreachable_since"] == since
        now += countdown
        retries += 1
    # Never a retry that comes at once (a handful of those can all fall within one restart).
    for n, wait in enumerate(waits):
        assert min(8, 2**n) / 2 <= wait <= min(8, 2**n)
    assert now - since >= window
    assert now - since < window + 8


@pytest.fixture
def _backend_terminated_later():
    yield
    connection.close()  # the test's own clean-up then opens a new one


def _backend_terminated() -> None:
    """This connection's PostgreSQL backend ended from outside, as a restart ends it."""
    connection.close()
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_backend_terminated_later")
def test_a_restart_during_the_ledgers_connection_set_up_is_djangos_operational_error():
    if connection.vendor != "postgresql":
        pytest.skip("the ledger's prepared statements are PostgreSQL's")
    _backend_terminated()
    # psycopg's own error escaped before: not retried by the worker, a 500 from the API.
    with pytest.raises(OperationalError):
        ledger_sql.prepare_connection()
    assert connection.errors_occurred  # closed at the end of the task or request


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_backend_terminated_later")
def test_a_claim_cut_off_by_a_restart_is_retried_and_the_reply_ends(reply):
    if connection.vendor != "postgresql":
        pytest.skip("the claim's one statement is PostgreSQL's")
    _backend_terminated()
    with pytest.raises(worker.ClaimUnanswered) as raised:
        worker.message_run(message_id=reply.pk)
    connection.close_if_unusable_or_obsolete()  # as Celery's Django fix-up does between tries
    worker.message_run(message_id=reply.pk, lost_claims=raised.value.lost_claims)
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE
    assert Entry.objects.filter(reference=f"message:{reply.pk}").count() == 1
    assert ledger_audit() == []
