"""Reply streams in Redis: event ids, resume after Last-Event-ID, expiry, the async reader."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from chat import streams
from chat.models import Conversation, Message
from panels.redis_client import get_redis
from tests.e2e_servers import parse_events, read_until_end, text_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def reply(alice) -> Message:
    conversation = Conversation.objects.create(user=alice)
    return Message.objects.create(conversation=conversation, role="assistant", status="streaming")


def write(reply: Message, *parts: str, end: str | None = "done") -> streams.ReplyWriter:
    writer = streams.ReplyWriter(reply)
    for part in parts:
        writer.delta(part)
    if end == "done":
        writer.terminal("done", {"status": "done", "cost": 3})
    elif end == "error":
        writer.terminal("error", {"code": "x", "message": "y"})
    return writer


def events(reply: Message, after: str = "0-0") -> list:
    return read_until_end(parse_events(streams.sse_events(reply, after=after)))


def test_each_delta_is_named_by_the_characters_so_far(reply):
    write(reply, "Hel", "lo, ", "world")
    seen = events(reply)
    assert [(e.id, e.kind) for e in seen] == [("3-0", "delta"), ("7-0", "delta"), ("12-0", "delta"), ("12-1", "done")]
    assert text_of(seen) == "Hello, world"
    assert seen[-1].data == {"status": "done", "cost": 3}


def test_a_reader_resumes_after_the_last_event_it_saw(reply):
    write(reply, "one ", "two ", "three")
    assert text_of(events(reply, after="4-0")) == "two three"
    assert text_of(events(reply, after="8-0")) == "three"


def test_a_reader_past_the_end_gets_only_the_end(reply):
    write(reply, "done")
    assert [(e.kind, e.id) for e in events(reply, after="4-1")] == [("done", "4-1")]


def test_the_stream_expires(reply, settings):
    settings.REPLY_STREAM_TTL_SECONDS = 120
    write(reply, "x")
    ttl = get_redis().ttl(streams.stream_key(reply))
    assert 0 < ttl <= 120


def test_a_stream_key_is_unique_to_the_message_row(reply):
    other = Message(pk=reply.pk, conversation=reply.conversation, role="assistant")
    assert streams.stream_key(other) != streams.stream_key(reply)  # same id, another creation time
    assert streams.stream_key(reply) == streams.stream_key(Message.objects.get(pk=reply.pk))


def test_a_live_reader_gets_events_as_they_are_written(reply):
    import threading

    def later() -> None:
        import time

        time.sleep(0.2)
        write(reply, "late ", "text")

    threading.Thread(target=later).start()
    assert text_of(events(reply)) == "late text"


def test_the_sweeps_terminal_event_follows_the_workers_deltas(reply):
    write(reply, "partial", end=None)
    streams.append_terminal(reply, "error", {"code": "expired", "message": "stopped"})
    seen = events(reply)
    assert [e.kind for e in seen] == ["delta", "error"]


def test_cancel_requests_are_seen_through_redis(reply):
    assert streams.cancel_requested(reply) is False
    streams.request_cancel(reply)
    assert streams.cancel_requested(reply) is True


def test_each_write_reads_the_cancel_flag_in_its_own_round_trip(reply):
    writer = streams.ReplyWriter(reply)
    writer.delta("one ")
    assert writer.cancel_seen is False and writer.cancel_read_at > float("-inf")
    read_at = writer.cancel_read_at
    streams.request_cancel(reply)
    writer.delta("two")
    assert writer.cancel_seen is True and writer.cancel_read_at >= read_at
    assert streams.partial_text(reply) == "one two"  # the text went out with the read


def test_a_failed_write_reads_no_flag(reply, settings):
    streams.request_cancel(reply)
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    writer = streams.ReplyWriter(reply)
    writer.delta("lost")
    assert writer.cancel_seen is False and writer.cancel_read_at == float("-inf")


def test_partial_text_reads_the_deltas(reply):
    write(reply, "so ", "far", end=None)
    assert streams.partial_text(reply) == "so far"


def test_a_writer_survives_redis_being_unreachable(reply, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    writer = streams.ReplyWriter(reply)
    writer.delta("lost")  # logged, not raised: the database keeps the reply
    assert writer.broken and writer.offset == 4


def test_the_async_reader_matches_the_sync_one(reply):
    write(reply, "async ", "reader")

    async def collect() -> list[bytes]:
        return [frame async for frame in streams.sse_events_async(reply, after="6-0")]

    frames = asyncio.run(collect())
    seen = read_until_end(parse_events(frames))
    assert text_of(seen) == "reader" and seen[-1].kind == "done"
    assert json.loads(frames[-1].split(b"data: ")[-1]) == {"status": "done", "cost": 3}


def test_events_read_together_go_out_as_one_write(reply):
    write(reply, "one ", "two ", "three")
    frames = list(streams.sse_events(reply))
    assert frames[0].startswith(b"retry:") and len(frames) == 2  # the retry line, then all four events at once
    assert [e.kind for e in parse_events(frames)] == ["delta", "delta", "delta", "done"]


def test_a_lingering_writer_writes_the_first_text_at_once_and_joins_a_burst(reply):
    writer = streams.ReplyWriter(reply, linger=60.0)  # longer than this test: only the terminal writes the rest
    writer.delta("first")
    assert streams.partial_text(reply) == "first"  # not delayed
    for part in (" a", " burst", " of", " chunks"):
        writer.delta(part)
    assert streams.partial_text(reply) == "first"  # waiting for what follows
    writer.terminal("done", {"status": "done", "cost": 3})
    seen = events(reply)
    assert [(e.id, e.kind) for e in seen] == [("5-0", "delta"), ("23-0", "delta"), ("23-1", "done")]
    assert text_of(seen) == "first a burst of chunks"


def test_a_burst_is_handed_to_the_flusher_once_until_it_writes(reply, monkeypatch):
    added = []
    add = streams._lingering.add
    monkeypatch.setattr(streams._lingering, "add", lambda writer, due: added.append(due) or add(writer, due))
    writer = streams.ReplyWriter(reply, linger=60.0)
    writer.delta("first")
    for part in (" a", " burst", " of", " chunks"):
        writer.delta(part)
    assert len(added) == 1 and writer.waiting
    writer.flush()  # as the flusher does when the text is due
    assert not writer.waiting and streams.partial_text(reply) == "first a burst of chunks"
    writer.delta(" more")
    assert len(added) == 2  # waiting again: handed over again
    writer.terminal("done", {"status": "done", "cost": 3})
    assert text_of(events(reply)) == "first a burst of chunks more"


def test_the_last_text_and_the_end_wake_a_waiting_reader_once(reply):
    import threading

    writer = streams.ReplyWriter(reply, linger=60.0)
    writer.delta("first")
    writer.delta(" and the rest")  # waits for the terminal event
    key = streams.stream_key(reply)
    answers: list = []
    reader = threading.Thread(target=lambda: answers.append(get_redis().xread({key: "5-0"}, block=10_000)))
    reader.start()
    until = time.monotonic() + 10
    while not any(c.get("cmd") == "xread" for c in get_redis().client_list()) and time.monotonic() < until:
        time.sleep(0.005)  # the reader is blocked in its XREAD
    writer.terminal("done", {"status": "done", "cost": 3})
    reader.join(timeout=10)
    [[_key, entries]] = answers[0]
    assert [(i.decode(), f[b"event"].decode()) for i, f in entries] == [("18-0", "delta"), ("18-1", "done")]
    assert text_of(events(reply)) == "first and the rest"


def test_text_left_waiting_is_written_without_a_further_chunk(reply):
    import time

    writer = streams.ReplyWriter(reply, linger=0.05)
    writer.delta("Hel")
    writer.delta("lo")  # within the linger: the process's flusher writes it when due
    until = time.monotonic() + 10
    while streams.partial_text(reply) != "Hello" and time.monotonic() < until:
        time.sleep(0.01)
    assert streams.partial_text(reply) == "Hello"
    writer.terminal("done", {"status": "done", "cost": 3})
    assert [(e.id, e.kind) for e in events(reply)] == [("3-0", "delta"), ("5-0", "delta"), ("5-1", "done")]


def test_a_queued_reply_is_read_from_its_stream_without_a_database_read(reply, django_assert_num_queries):
    import threading
    import time

    Message.objects.filter(pk=reply.pk).update(status="queued")
    reply.status = "queued"

    def later() -> None:
        time.sleep(0.2)
        write(reply, "soon")

    threading.Thread(target=later).start()
    with django_assert_num_queries(0):
        assert text_of(events(reply)) == "soon"


def test_a_reader_looks_its_message_up_in_one_statement_and_names_the_same_stream(
    reply, alice, bob, django_assert_num_queries
):
    with django_assert_num_queries(1):
        found = streams.message_for_reader(user_id=alice.pk, message_id=reply.pk)
    assert (found.pk, found.role, found.status, found.conversation_id) == (
        reply.pk,
        "assistant",
        "streaming",
        reply.conversation_id,
    )
    assert found.created_at == Message.objects.get(pk=reply.pk).created_at
    assert streams.stream_key(found) == streams.stream_key(reply)
    assert streams.message_for_reader(user_id=bob.pk, message_id=reply.pk) is None  # not bob's: a 404
    assert streams.message_for_reader(user_id=alice.pk, message_id=reply.pk + 1000) is None
    assert streams.message_for_reader(user_id=alice.pk, message_id=2**63) is None  # past BIGINT: no row, no error


def _counting_async_redis(monkeypatch) -> list[str]:
    """The async reader's Redis client, with the name of each command it sends recorded."""
    calls: list[str] = []
    real = streams._async_redis

    class Counting:
        def __init__(self, client) -> None:
            self.client = client

        def __getattr__(self, name):
            method = getattr(self.client, name)

            async def call(*args, **kwargs):
                calls.append(name)
                return await method(*args, **kwargs)

            return call

    monkeypatch.setattr(streams, "_async_redis", lambda: Counting(real()))
    return calls


def test_a_reader_starts_with_one_redis_command_before_it_reads(reply, monkeypatch):
    """A reader resuming after an event asks for the stream's last entry (XREVRANGE), which says
    both whether there is a stream and whether the reader already had its end: no EXISTS first.
    A first reader of a reply not finished has nothing to ask first: it reads."""
    calls = _counting_async_redis(monkeypatch)
    write(reply, "Hello", " world")

    async def read(after: str) -> list[bytes]:
        return [frame async for frame in streams.sse_events_async(reply, after=after)]

    frames = asyncio.run(read("0-0"))
    assert text_of(read_until_end(parse_events(iter(frames)))) == "Hello world"
    assert calls == ["xread"]
    calls.clear()
    assert text_of(read_until_end(parse_events(iter(asyncio.run(read("5-0")))))) == " world"
    assert calls == ["xrevrange", "xread"]
    calls.clear()
    assert asyncio.run(read("11-1"))[-1].startswith(b"id: 11-1\nevent: done")  # had it all: the end again
    assert calls == ["xrevrange"]


def test_a_reader_of_a_queued_reply_waits_on_its_stream_and_of_an_expired_one_reads_the_database(reply, monkeypatch):
    calls = _counting_async_redis(monkeypatch)
    Message.objects.filter(pk=reply.pk).update(status="queued")
    reply.status = "queued"

    async def read() -> list[bytes]:
        async def later() -> None:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(write, reply, "soon")

        task = asyncio.create_task(later())
        frames = [frame async for frame in streams.sse_events_async(reply)]
        await task
        return frames

    assert text_of(read_until_end(parse_events(iter(asyncio.run(read()))))) == "soon"
    assert calls[:1] == ["xread"] and "exists" not in calls
    # A finished reply whose stream is gone: the database has it (read here through the
    # synchronous reader, which starts the same way: this test's rows are not committed).
    get_redis().delete(streams.stream_key(reply))
    Message.objects.filter(pk=reply.pk).update(status="done", content="stored text", cost=3)
    reply.status = "done"
    got = events(reply)
    assert text_of(got) == "stored text" and got[-1].kind == "done"


def test_a_reply_is_kept_for_its_first_reader_only_while_keys_are(reply, alice, settings, monkeypatch):
    reply.status = "queued"
    settings.API_CACHE_SECONDS = 0  # no key kept in memory: no reply either
    streams.remember_accepted(reply, user_id=alice.pk)
    assert streams.accepted_for_reader(user_id=alice.pk, message_id=reply.pk) is None
    settings.API_CACHE_SECONDS = 10
    streams.remember_accepted(reply, user_id=alice.pk)
    now = time.monotonic()
    monkeypatch.setattr(streams.time, "monotonic", lambda: now + 10)
    assert streams.accepted_for_reader(user_id=alice.pk, message_id=reply.pk) is None  # too old
    reply.status = "done"  # only a queued reply is kept (a repeated send may answer a finished one)
    streams.remember_accepted(reply, user_id=alice.pk)
    assert streams.accepted_for_reader(user_id=alice.pk, message_id=reply.pk) is None
