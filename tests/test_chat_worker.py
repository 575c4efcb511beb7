"""The worker's body (chat.worker.message_run), run in-process against the demo model
server over HTTP and the real Redis: billing, retries, failures, cancel, the sweep."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from chat import services, streams, worker
from chat.demo_server import estimate_prompt_tokens
from chat.models import Conversation, Message
from chat.tokens import estimate_output_tokens
from tests.e2e_servers import chat_catalog, demo_server, parse_events, read_until_end, text_of  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold
from wallet.selectors import ledger_audit
from wallet.services import cost_in_credits

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

START = 1_000_000


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Replies handed to the queue; the tests run them in-process instead."""
    ids: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: ids.append(message_id))
    return ids


@pytest.fixture
def conversation(alice, chat_catalog, queued) -> Conversation:  # noqa: F811
    funded_wallet(alice, START)
    return Conversation.objects.create(user=alice)


def send(conversation: Conversation, content: str, model: str = "demo") -> Message:
    return services.message_send(user=conversation.user, conversation=conversation, content=content, model=model)


def events_of(message: Message) -> list:
    return read_until_end(parse_events(streams.sse_events(message)))


def balance(user) -> int:
    return Account.objects.get(user=user).balance


def test_reply_is_billed_at_the_usage_the_provider_reported(conversation, queued):
    content = "[demo:tokens=5] Hello there"
    reply = send(conversation, content)
    assert queued == [reply.pk]
    worker.message_run(message_id=reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE
    assert reply.output_tokens == 5
    assert reply.input_tokens == estimate_prompt_tokens([{"role": "user", "content": content}])
    assert reply.usage_estimated is False
    expected = cost_in_credits(
        input_tokens=reply.input_tokens, output_tokens=5, input_price=reply.model.input_price,
        output_price=reply.model.output_price,
    )  # fmt: skip
    assert reply.cost == expected
    entry = Entry.objects.get(reference=f"message:{reply.pk}")
    assert entry.amount == expected and entry.kind == Entry.Kind.USAGE
    assert Hold.objects.get(pk=reply.hold_id).status == Hold.Status.POSTED
    assert balance(conversation.user) == START - expected
    assert Account.objects.get(user=conversation.user).held == 0

    events = events_of(reply)
    assert text_of(events) == reply.content
    assert reply.content.startswith("Demo reply to: Hello there")
    done = events[-1]
    assert done.kind == "done"
    assert done.data["cost"] == expected and done.data["balance"] == START - expected
    assert done.data["usage"] == {"input_tokens": reply.input_tokens, "output_tokens": 5, "estimated": False}
    assert ledger_audit() == []


def test_a_second_delivery_of_the_task_does_nothing(conversation):
    reply = send(conversation, "[demo:tokens=3] once")
    worker.message_run(message_id=reply.pk)
    worker.message_run(message_id=reply.pk)
    assert Entry.objects.filter(reference=f"message:{reply.pk}").count() == 1
    assert len([e for e in events_of(reply) if e.kind == "done"]) == 1


def test_a_reply_without_usage_is_billed_on_a_marked_estimate(conversation):
    reply = send(conversation, "[demo:tokens=6][demo:fail=nousage] hi")
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE
    assert reply.usage_estimated is True
    assert reply.input_tokens == reply.input_estimate
    assert reply.output_tokens == estimate_output_tokens(reply.content)
    assert reply.cost == cost_in_credits(
        input_tokens=reply.input_estimate, output_tokens=reply.output_tokens, input_price=reply.model.input_price,
        output_price=reply.model.output_price,
    )  # fmt: skip
    assert reply.error_code == "usage_estimated"
    assert balance(conversation.user) == START - reply.cost
    assert events_of(reply)[-1].data["usage"]["estimated"] is True


def test_a_stream_cut_after_text_is_billed_once_on_an_estimate(conversation):
    reply = send(conversation, "[demo:tokens=10][demo:fail=cut][demo:cut_after=3] hi")
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE
    assert reply.content == "Demo reply to: "
    assert reply.usage_estimated is True and reply.error_code == "incomplete"
    assert "cut off" in reply.error_message
    assert Entry.objects.filter(reference=f"message:{reply.pk}").get().amount == reply.cost > 0
    assert text_of(events_of(reply)) == reply.content


def test_a_provider_error_before_text_charges_nothing(conversation, settings):
    settings.MODEL_FIRST_TOKEN_RETRIES = 0
    reply = send(conversation, "[demo:fail=500] hi")
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED
    assert reply.error_code == "provider_error"
    assert "HTTP 500" in reply.error_message and "Nothing was charged" in reply.error_message
    assert reply.cost == 0
    assert Hold.objects.get(pk=reply.hold_id).status == Hold.Status.VOIDED
    assert balance(conversation.user) == START and Account.objects.get(user=conversation.user).held == 0
    assert not Entry.objects.filter(reference=f"message:{reply.pk}").exists()
    error = events_of(reply)[-1]
    assert error.kind == "error" and error.data == {"code": "provider_error", "message": reply.error_message}


def test_a_rejected_request_is_not_retried(conversation, settings):
    settings.MODEL_FIRST_TOKEN_RETRIES = 3
    reply = send(conversation, "[demo:nonsense] hi")  # the demo server answers 400
    started = time.monotonic()
    worker.message_run(message_id=reply.pk)
    assert time.monotonic() - started < 1
    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED and reply.error_code == "provider_rejected"
    assert "HTTP 400" in reply.error_message


def test_429_is_retried_after_retry_after_then_fails_with_nothing_charged(conversation, settings):
    settings.MODEL_FIRST_TOKEN_RETRIES = 1
    reply = send(conversation, "[demo:fail=429] hi")
    started = time.monotonic()
    worker.message_run(message_id=reply.pk)
    assert time.monotonic() - started >= 1.0  # the demo server says Retry-After: 1
    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED and reply.error_code == "rate_limited"
    assert "limiting requests" in reply.error_message
    assert balance(conversation.user) == START


def test_429_once_succeeds_on_the_retry(conversation, settings):
    settings.MODEL_FIRST_TOKEN_RETRIES = 1
    reply = send(conversation, f"[demo:tokens=4][demo:fail=429once:{uuid.uuid4().hex}] hi")
    started = time.monotonic()
    worker.message_run(message_id=reply.pk)
    assert time.monotonic() - started >= 1.0
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE and reply.output_tokens == 4
    assert Entry.objects.filter(reference=f"message:{reply.pk}").count() == 1


def test_a_model_that_never_answers_times_out(conversation, settings):
    settings.MODEL_FIRST_TOKEN_RETRIES = 0
    settings.MODEL_TIMEOUT_SECONDS = 1
    reply = send(conversation, "[demo:fail=timeout] hi")
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED and reply.error_code == "timeout"
    assert "within 1 seconds" in reply.error_message
    assert balance(conversation.user) == START


def test_cancel_before_the_worker_starts_charges_nothing(conversation):
    reply = send(conversation, "[demo:tokens=5] hi")
    services.message_cancel(message=reply)
    reply.refresh_from_db()
    assert reply.status == Message.Status.CANCELLED and reply.cost == 0
    assert Hold.objects.get(pk=reply.hold_id).status == Hold.Status.VOIDED
    worker.message_run(message_id=reply.pk)  # the task still arrives: a no-op
    reply.refresh_from_db()
    assert reply.status == Message.Status.CANCELLED
    done = events_of(reply)[-1]
    assert done.kind == "done" and done.data["status"] == "cancelled" and done.data["cost"] == 0
    assert balance(conversation.user) == START


def test_the_first_model_call_waits_on_no_cancel_check(conversation, monkeypatch):
    """Between the claim and the model call the worker asks Redis nothing: the claim read
    the reply's cancel flag. (A cancel after the claim is seen within a few chunks.)"""
    reply = send(conversation, "[demo:tokens=12] hi")
    seen: list[str] = []
    call, check = worker.providers.chat_stream, streams.cancel_requested

    def chat_stream(**kwargs):
        seen.append("call")
        return call(**kwargs)

    def cancel_requested(message):
        seen.append("cancel check")
        return check(message)

    monkeypatch.setattr(worker.providers, "chat_stream", chat_stream)
    monkeypatch.setattr(streams, "cancel_requested", cancel_requested)
    worker.message_run(message_id=reply.pk)
    assert seen[0] == "call"
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE


def test_a_cancel_flag_the_claim_reads_stops_the_reply_before_the_model_is_called(conversation, monkeypatch):
    """A cancel whose Redis flag could not be written still left the reply's own flag: the
    worker, which reads it with the claim, calls no model and charges nothing."""
    reply = send(conversation, "[demo:tokens=5] hi")
    Message.objects.filter(pk=reply.pk).update(cancel_requested=True)
    calls = []
    monkeypatch.setattr(worker.providers, "chat_stream", lambda **kwargs: calls.append(kwargs))
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert calls == []
    assert reply.status == Message.Status.CANCELLED and reply.cost == 0
    assert balance(conversation.user) == START
    assert events_of(reply)[-1].data["status"] == "cancelled"


def test_cancel_mid_stream_pays_for_what_was_generated(conversation):
    reply = send(conversation, "[demo:tokens=400][demo:tps=40] a long one")

    def run() -> None:
        from django.db import connection

        try:
            worker.message_run(message_id=reply.pk)
        finally:
            connection.close()  # a thread's own connection; PostgreSQL can't drop a database in use

    runner = threading.Thread(target=run)
    runner.start()
    seen = ""
    for event in parse_events(streams.sse_events(reply)):
        seen += event.data.get("text", "")
        if len(seen.split()) >= 5:
            break
    services.message_cancel(message=reply)
    runner.join(timeout=20)
    assert not runner.is_alive()

    reply.refresh_from_db()
    assert reply.status == Message.Status.CANCELLED
    assert reply.content.startswith(seen) and 5 <= len(reply.content.split()) < 100
    assert reply.usage_estimated is True
    expected = cost_in_credits(
        input_tokens=reply.input_estimate, output_tokens=estimate_output_tokens(reply.content),
        input_price=reply.model.input_price, output_price=reply.model.output_price,
    )  # fmt: skip
    assert reply.cost == expected > 0
    assert balance(conversation.user) == START - expected
    events = events_of(reply)
    assert text_of(events) == reply.content
    assert events[-1].data["status"] == "cancelled" and events[-1].data["cost"] == expected
    assert ledger_audit() == []


@pytest.mark.money
def test_a_price_change_while_a_reply_waits_does_not_alter_it(conversation):
    reply = send(conversation, "[demo:tokens=5] hi")
    held_at = dict(reply.prices)
    assert held_at["input"] == str(reply.model.input_price) and held_at["output"] == str(reply.model.output_price)
    # The operator raises the price while the reply waits: it is charged at the prices it was held at.
    reply.model.__class__.objects.filter(pk=reply.model_id).update(input_price=100_000, output_price=100_000)
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    expected = cost_in_credits(
        input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
        input_price=Decimal(held_at["input"]), output_price=Decimal(held_at["output"]),
    )  # fmt: skip
    assert reply.status == Message.Status.DONE and reply.prices == held_at
    assert reply.cost == expected == Hold.objects.get(pk=reply.hold_id).posted_amount
    assert balance(conversation.user) == START - expected
    assert ledger_audit() == []


def test_a_cost_above_the_hold_is_charged_in_full(conversation, caplog):
    reply = send(conversation, "[demo:tokens=5] hi")
    # The provider counts far more than the estimate (simulated by the reply's own rates).
    Message.objects.filter(pk=reply.pk).update(prices={"input": "1000", "output": "1000", "tiers": []})
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    hold = Hold.objects.get(pk=reply.hold_id)
    assert reply.status == Message.Status.DONE
    assert reply.cost > hold.amount == hold.posted_amount
    charged = sum(Entry.objects.filter(reference=f"message:{reply.pk}").values_list("amount", flat=True))
    assert charged == reply.cost and balance(conversation.user) == START - reply.cost
    assert ledger_audit() == []


def test_a_reply_whose_hold_ran_out_in_the_queue_fails_without_a_model_call(conversation):
    reply = send(conversation, "[demo:tokens=5] hi")
    Hold.objects.filter(pk=reply.hold_id).update(expires_at=timezone.now() + dt.timedelta(seconds=5))
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED and reply.error_code == "expired"
    assert reply.content == "" and balance(conversation.user) == START


def test_the_sweep_fails_a_reply_a_dead_worker_left_streaming(conversation):
    reply = send(conversation, "[demo:tokens=5] hi")
    # A worker claimed it, streamed a little, and died.
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STREAMING)
    streams.ReplyWriter(reply).delta("Demo ")
    assert worker.messages_fail_stale() == 0  # its hold still has time

    hold = Hold.objects.get(pk=reply.hold_id)
    assert worker.messages_fail_stale(now=hold.expires_at + dt.timedelta(seconds=1)) == 1
    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED and reply.error_code == "expired"
    assert Hold.objects.get(pk=reply.hold_id).status == Hold.Status.VOIDED
    assert balance(conversation.user) == START and Account.objects.get(user=conversation.user).held == 0
    events = events_of(reply)
    assert [e.kind for e in events] == ["delta", "error"]

    worker.message_run(message_id=reply.pk)  # the task delivered again after the crash
    assert not Entry.objects.filter(reference=f"message:{reply.pk}").exists()
    assert worker.messages_fail_stale(now=hold.expires_at + dt.timedelta(seconds=2)) == 0
    assert ledger_audit() == []


def _streamed(reply: Message) -> Message:
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STREAMING)
    return Message.objects.select_related("model", "hold", "conversation__user").get(pk=reply.pk)


def _assert_paid_late(reply: Message, user) -> None:
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE and reply.content == "late text"
    assert reply.error_code == "late" and "Nothing was charged" not in reply.error_message
    assert reply.cost > 0
    assert Hold.objects.get(pk=reply.hold_id).status in (Hold.Status.VOIDED, Hold.Status.EXPIRED)
    assert list(Entry.objects.filter(reference=f"message:{reply.pk}").values_list("amount", flat=True)) == [reply.cost]
    account = Account.objects.get(user=user)
    assert account.balance == START - reply.cost and account.held == 0
    assert ledger_audit() == []


def test_a_reply_settled_after_the_sweep_failed_it_still_pays_for_its_text(conversation):
    reply = send(conversation, "[demo:tokens=5] hi")
    hold = Hold.objects.get(pk=reply.hold_id)
    message = _streamed(reply)
    worker.messages_fail_stale(now=hold.expires_at + dt.timedelta(seconds=1))
    # The worker was only slow, not dead: the user received the text, so it is paid for.
    worker._settle(message, worker._Outcome(parts=["late text"]), streams.ReplyWriter(message))
    _assert_paid_late(reply, conversation.user)
    # Settling again (a retried settlement) charges nothing more.
    worker._settle(message, worker._Outcome(parts=["late text"]), streams.ReplyWriter(message))
    _assert_paid_late(reply, conversation.user)


def test_a_reply_settled_after_its_hold_expired_still_pays_for_its_text(conversation):
    reply = send(conversation, "[demo:tokens=5] hi")
    message = _streamed(reply)
    Hold.objects.filter(pk=reply.hold_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    message.hold.refresh_from_db()
    worker._settle(message, worker._Outcome(parts=["late text"]), streams.ReplyWriter(message))
    _assert_paid_late(reply, conversation.user)
    assert [e.kind for e in events_of(reply)][-1] == "done"


def test_the_time_left_is_read_on_the_database_clock(conversation, monkeypatch):
    reply = send(conversation, "[demo:tokens=5] hi")

    class AnHourAhead:
        @staticmethod
        def now():
            return timezone.now() + dt.timedelta(hours=1)

    monkeypatch.setattr(worker, "timezone", AnHourAhead)
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE, reply.error_message


def test_a_cancel_is_seen_by_the_text_writes_without_a_check_of_its_own(conversation, monkeypatch):
    """Each write of the reply's text reads the cancel flag in its round trip: with text
    flowing (a chunk every 25 ms, each written at once), the worker stops on what a write
    saw and sends Redis no check of its own."""
    reply = send(conversation, "[demo:tokens=400][demo:tps=40] a long one")
    checks: list[int] = []
    monkeypatch.setattr(streams, "cancel_requested", lambda message: checks.append(message.pk) or False)
    delta, cancelled = streams.ReplyWriter.delta, []

    def delta_then_cancel(self, text):
        delta(self, text)
        if self.offset >= 20 and not cancelled:
            cancelled.append(True)
            streams.request_cancel(reply)  # as services.message_cancel asks

    monkeypatch.setattr(streams.ReplyWriter, "delta", delta_then_cancel)
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == Message.Status.CANCELLED
    assert checks == []
    assert 20 <= len(reply.content) < 400
    events = events_of(reply)
    assert text_of(events) == reply.content
    assert events[-1].data["status"] == "cancelled" and events[-1].data["cost"] == reply.cost > 0


def test_the_cancel_flag_is_read_from_the_database_when_redis_fails(conversation, monkeypatch):
    reply = send(conversation, "[demo:tokens=5] hi")
    assert not streams.cancel_requested(reply)
    Message.objects.filter(pk=reply.pk).update(cancel_requested=True)

    def redis_down():
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(streams, "get_redis", redis_down)
    assert streams.cancel_requested(reply)


def test_a_failed_publish_leaves_a_reply_a_worker_already_started(conversation, monkeypatch):
    def published_then_failed(*, message_id):
        # The broker took the task and a worker claimed it, then the publish reported an error.
        Message.objects.filter(pk=message_id).update(status=Message.Status.STREAMING)
        raise ConnectionError("lost the broker's answer")

    monkeypatch.setattr("chat.tasks.message_enqueue", published_then_failed)
    reply = send(conversation, "[demo:tokens=5] hi")
    reply.refresh_from_db()
    assert reply.status == Message.Status.STREAMING
    assert Hold.objects.get(pk=reply.hold_id).status == Hold.Status.PENDING


def test_no_transaction_is_open_while_the_model_is_called(conversation, monkeypatch):
    from django.db import connection

    from chat import providers

    real = providers.chat_stream
    seen: list[bool] = []

    def watched(**kwargs):
        seen.append(connection.in_atomic_block)
        return real(**kwargs)

    monkeypatch.setattr(providers, "chat_stream", watched)
    reply = send(conversation, "[demo:tokens=3] hi")
    worker.message_run(message_id=reply.pk)
    assert seen == [False]
    assert Message.objects.get(pk=reply.pk).status == Message.Status.DONE


def test_the_workers_background_loop_runs_the_stale_reply_sweep(monkeypatch, settings):
    from panels import heartbeat

    settings.CELERY_BEAT_SCHEDULE_SECONDS = 0
    swept = threading.Event()
    monkeypatch.setattr(worker, "messages_fail_stale", lambda: swept.set() or 0)
    stop = threading.Event()
    loop = threading.Thread(target=heartbeat._loop, args=(f"test-{uuid.uuid4().hex}", stop))
    loop.start()
    try:
        assert swept.wait(10)
    finally:
        stop.set()
        loop.join(timeout=10)


def test_a_stalled_model_call_is_cut_at_the_time_the_hold_has_left(conversation, settings, monkeypatch):
    settings.MODEL_TIMEOUT_SECONDS = 120
    settings.MODEL_FIRST_TOKEN_RETRIES = 0
    reply = send(conversation, "[demo:fail=timeout] are you there?")
    # About 3 s left before the reply must stop (the hold's last DEADLINE_MARGIN_SECONDS are for settling).
    Hold.objects.filter(pk=reply.hold_id).update(
        expires_at=timezone.now() + dt.timedelta(seconds=worker.DEADLINE_MARGIN_SECONDS + 3)
    )
    timeouts: list[float] = []
    real = worker.providers.chat_stream

    def spy(**kwargs):
        timeouts.append(kwargs["timeout"])
        return real(**kwargs)

    monkeypatch.setattr(worker.providers, "chat_stream", spy)
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert len(timeouts) == 1 and 1 <= timeouts[0] <= 3
    assert reply.status == Message.Status.FAILED and reply.error_code == "timeout"
    assert balance(conversation.user) == START
