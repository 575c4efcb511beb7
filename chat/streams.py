"""A reply's live stream: one Redis stream per message, read as server-sent events.

The worker appends `delta` events while the model streams, then one terminal event
(`done` or `error`). Each event's Redis id is also its SSE `id:`, so a reader that
reconnects with Last-Event-ID resumes after the last event it saw, with no text lost
or repeated. A delta's id is `<characters of the reply so far>-0` and a terminal
event's `<characters>-1`, which keeps ids increasing and lets a reader resume from
the stored reply once the stream has expired from Redis.

Any web process can serve any reader: nothing lives in process memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection

from chat.models import Message
from panels.redis_client import get_redis

log = logging.getLogger(__name__)

KEY_PREFIX = "panels:reply:"
# A comment line every this many seconds keeps proxies from closing an idle stream;
# it is also how often a waiting reader looks at the database.
KEEPALIVE_SECONDS = 15.0
# The longest a synchronous XREAD blocks: below the socket timeout of panels/redis_client.py.
SYNC_BLOCK_SECONDS = 4.0
# How long a browser waits before reconnecting after the connection drops.
RECONNECT_MS = 2000
CANCEL_TTL_SECONDS = 3600
TERMINAL = frozenset({"done", "error"})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EVENT_ID = re.compile(r"^\d{1,19}-\d{1,19}$")


def stream_key(message: Message) -> str:
    # The creation time (in whole microseconds) makes a stream left over from a
    # database that was reset, and so reused this id, impossible to pick up.
    micros = (message.created_at - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{KEY_PREFIX}{message.pk}:{micros}"


def cancel_key(message: Message) -> str:
    return f"{stream_key(message)}:cancel"


def valid_event_id(value: str) -> bool:
    return bool(_EVENT_ID.match(value))


def _offset(event_id: str) -> int:
    """Characters of the reply delivered up to this event (ids the worker wrote)."""
    try:
        return int(event_id.split("-", 1)[0])
    except ValueError:
        return 0


# --- writing (the worker) ---------------------------------------------------


class ReplyWriter:
    """Appends one reply's events; tracks the character offset that names each delta.

    Text whose write failed (Redis unreachable for a moment) is kept and sent with the
    next delta, so a reader that resumes never skips over it.

    With `linger` (seconds), the first text is written at once and text arriving within
    `linger` of the last write waits to go out with what follows it, so a model that
    sends a burst of small chunks costs a few writes (and a reader a few events) instead
    of one per chunk. Text never waits longer than `linger`: the process's flusher thread
    writes what is left (`_Lingering`), and the terminal event writes it first.

    Each write also reads the reply's cancel flag, in the same round trip: `cancel_seen`
    is what the last write found and `cancel_read_at` when it was read, so the worker
    asks Redis on its own only when no write has looked for a while.
    """

    def __init__(self, message: Message, *, linger: float = 0.0) -> None:
        self.key = stream_key(message)
        self.cancel_key = cancel_key(message)
        self.cancel_seen = False
        self.cancel_read_at = float("-inf")  # time.monotonic() of the last write's read of the flag
        self.offset = 0  # characters of the reply so far
        self.written = 0  # characters the stream holds
        self.unsent = ""
        self.ttl = settings.REPLY_STREAM_TTL_SECONDS
        self.broken = False
        self.linger = linger
        self.wrote_at = float("-inf")  # time.monotonic() of the last write
        self.waiting = False  # handed to the flusher, which has not written it yet
        # The worker's thread and the flusher both write: one at a time, in offset order.
        self.lock = threading.Lock()

    def _xadd(self, *events: tuple[str, str, dict]) -> bool:
        """Append `events` ((id, kind, data), in id order) in one round trip. Several go in
        one MULTI/EXEC: Redis serves a blocked XREAD after the transaction, so a reader
        wakes once and gets them all, not once per event."""
        try:
            pipe = get_redis().pipeline(transaction=len(events) > 1)
            for event_id, kind, data in events:
                pipe.xadd(self.key, {"event": kind, "data": json.dumps(data, separators=(",", ":"))}, id=event_id)
            pipe.expire(self.key, self.ttl)
            pipe.exists(self.cancel_key)
            read_at = time.monotonic()
            *_, cancelled = pipe.execute()
            if cancelled:
                self.cancel_seen = True
            self.cancel_read_at = read_at
            self.broken = False
            return True
        except Exception:
            # The reply is still stored in the database when it ends; readers fall back to it.
            if not self.broken:
                log.warning("reply stream write failed", extra={"key": self.key}, exc_info=True)
            self.broken = True
            return False

    def _resync(self) -> bool:
        """After a failed write: the write may have landed (only its answer was lost)."""
        try:
            last = get_redis().xrevrange(self.key, count=1)
        except Exception:
            return False
        held = _offset(last[0][0].decode()) if last else 0
        if held > self.written:
            landed = min(held - self.written, len(self.unsent))
            self.written += landed
            self.unsent = self.unsent[landed:]
        return True

    def _flush(self) -> bool:
        if self.unsent and self.broken and not self._resync():
            return False
        if not self.unsent:
            return True
        self.wrote_at = time.monotonic()
        if self._xadd((f"{self.offset}-0", "delta", {"text": self.unsent})):
            self.written, self.unsent = self.offset, ""
            return True
        return False

    def flush(self) -> None:
        with self.lock:
            self.waiting = False
            self._flush()

    def delta(self, text: str) -> None:
        if not text:
            return
        with self.lock:
            self.offset += len(text)
            self.unsent += text
            due = self.wrote_at + self.linger
            if time.monotonic() >= due:
                self._flush()
                return
            if self.waiting:  # the flusher will write this text with what it already waits for
                return
            self.waiting = True
        _lingering.add(self, due)

    def terminal(self, kind: str, data: dict) -> None:
        # Never before text the stream is missing: a reader would stop short of it.
        # Without the terminal event, readers finish from the database. The text still
        # waiting goes in the same transaction, before it: one round trip, one wake-up
        # for a reader. (A delta refused there for its id means the stream already holds
        # text up to this offset: the write landed before, only its answer was lost.)
        with self.lock:
            if self.unsent and self.broken and not self._resync():
                return
            end = (f"{self.offset}-1", kind, data)
            if not self.unsent:
                self._xadd(end)
            elif self._xadd((f"{self.offset}-0", "delta", {"text": self.unsent}), end):
                self.written, self.unsent = self.offset, ""


class _Lingering:
    """One thread per process that writes the text writers left waiting, when it is due."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.due: dict[ReplyWriter, float] = {}
        self.pid = 0

    def add(self, writer: ReplyWriter, due: float) -> None:
        with self.cond:
            if self.pid != os.getpid():  # first use in this process (or since a fork)
                self.pid = os.getpid()
                self.due.clear()
                threading.Thread(target=self._run, name="panels-reply-flusher", daemon=True).start()
            if writer not in self.due:
                self.due[writer] = due
                self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                now = time.monotonic()
                ready = [w for w, at in self.due.items() if at <= now]
                if not ready:
                    self.cond.wait(min(self.due.values()) - now if self.due else None)
                    continue
                for writer in ready:
                    del self.due[writer]
            for writer in ready:
                try:
                    writer.flush()
                except Exception:  # a writer's own failures are logged by it; the flusher goes on
                    log.exception("reply stream flush failed")


_lingering = _Lingering()


def append_terminal(message: Message, kind: str, data: dict) -> None:
    """A terminal event from outside the worker (a cancel before the worker ran, the sweep)."""
    key = stream_key(message)
    try:
        pipe = get_redis().pipeline(transaction=False)
        # "*" is a millisecond timestamp: above any offset-based id the worker wrote.
        pipe.xadd(key, {"event": kind, "data": json.dumps(data, separators=(",", ":"))}, id="*")
        pipe.expire(key, settings.REPLY_STREAM_TTL_SECONDS)
        pipe.execute()
    except Exception:
        log.warning("reply stream write failed", extra={"key": key}, exc_info=True)


def request_cancel(message: Message) -> None:
    get_redis().set(cancel_key(message), b"1", ex=CANCEL_TTL_SECONDS)


def cancel_requested(message: Message) -> bool:
    """The cancel request from Redis; while Redis is unreachable, from the database's column."""
    try:
        return bool(get_redis().exists(cancel_key(message)))
    except Exception:
        log.warning("cancel check: Redis unreachable; reading the database", extra={"message_id": message.pk})
    try:
        return Message.objects.filter(pk=message.pk, cancel_requested=True).exists()
    except DatabaseError:
        log.warning("cancel check failed: neither Redis nor the database answered", extra={"message_id": message.pk})
        return False


def partial_text(message: Message) -> str:
    """The text streamed so far (for a reply still streaming); empty if Redis has none."""
    try:
        entries = get_redis().xrange(stream_key(message))
    except Exception:
        return ""
    parts = []
    for _id, fields in entries:
        if fields.get(b"event") == b"delta":
            parts.append(json.loads(fields[b"data"])["text"])
    return "".join(parts)


# --- reading (server-sent events) -------------------------------------------


def sse_frame(event_id: str, kind: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n".encode()


def _frame_entry(entry_id: bytes, fields: dict) -> tuple[str, str, bytes]:
    event_id = entry_id.decode()
    kind = fields[b"event"].decode()
    return event_id, kind, sse_frame(event_id, kind, fields[b"data"].decode())


def terminal_payload(message: Message) -> tuple[str, dict]:
    """The terminal event of a finished reply, rebuilt from the database."""
    if message.status == Message.Status.FAILED:
        return "error", {"code": message.error_code or "failed", "message": message.error_message}
    from wallet.selectors import wallet_summary

    summary = wallet_summary(user=message.conversation.user)
    return "done", done_payload(message, balance=summary.balance, available=summary.available)


def done_payload(message: Message, *, balance: int, available: int) -> dict:
    return {
        "status": message.status,
        "usage": {
            "input_tokens": message.input_tokens or 0,
            "output_tokens": message.output_tokens or 0,
            "estimated": message.usage_estimated,
        },
        "cost": message.cost or 0,
        "balance": balance,
        "available": available,
        "model": message.model.slug if message.model_id else None,
        "warning": message.error_message,
    }


def _frames_from_database(message: Message, after: str) -> list[bytes]:
    """The rest of a finished reply when its Redis stream is gone (expired or lost)."""
    frames = []
    offset = _offset(after)
    rest = message.content[offset:]
    total = len(message.content)
    if rest:
        frames.append(sse_frame(f"{total}-0", "delta", json.dumps({"text": rest})))
    kind, payload = terminal_payload(message)
    frames.append(sse_frame(f"{total}-1", kind, json.dumps(payload)))
    return frames


_READER_SQL = (
    "SELECT m.id, m.role, m.status, m.created_at, m.conversation_id FROM chat_message m"
    " JOIN chat_conversation c ON c.id = m.conversation_id WHERE m.id = %s AND c.user_id = %s"
)


def message_for_reader(*, user_id: int, message_id: int) -> Message | None:
    """What a stream request needs of a user's message (None: not theirs, or none): its id,
    role, status and creation time, in one short statement. The ORM's look-up with its
    joined rows cost the stream's set-up more than the rest of it; a reader that needs
    more (a finished reply read from the database) reloads the message."""
    if not 0 < message_id < 2**63:  # no row has such an id (the ORM's look-up says the same)
        return None
    with connection.cursor() as cursor:
        cursor.execute(_READER_SQL, [message_id, user_id])
        row = cursor.fetchone()
    if row is None:
        return None
    pk, role, status, created_at, conversation_id = row
    if isinstance(created_at, str):  # SQLite hands timestamps back as text to a raw cursor
        created_at = dt.datetime.fromisoformat(created_at)
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=dt.UTC)
    return _reader_message(pk, role, status, created_at, conversation_id)


def _reader_message(pk: int, role: str, status: str, created_at: dt.datetime, conversation_id: int) -> Message:
    message = Message(pk=pk, role=role, status=status, created_at=created_at, conversation_id=conversation_id)
    message._state.adding = False
    message._state.db = DEFAULT_DB_ALIAS
    return message


# A reader asks for a reply's stream right after its send's 202, as a rule on the same
# connection and so from the same web process. What it needs of the reply (its owner, and
# the id and creation time that name its stream) is kept here from the send, for one reader
# and for API_CACHE_SECONDS, so that reader's set-up reads no database: the send has just
# written that row, and none of it changes. Another process, a second reader and a reader
# resuming after an event look the reply up in the database (`message_for_reader`).
MAX_ACCEPTED = 10_000
_accepted: dict[int, tuple[float, int, Message]] = {}


def remember_accepted(reply: Message, *, user_id: int) -> None:
    """Keep what a first reader of this queued reply (the user's own) needs, for a while."""
    if settings.API_CACHE_SECONDS <= 0 or reply.status != Message.Status.QUEUED:
        return
    if len(_accepted) >= MAX_ACCEPTED:  # bounded: replies nobody reads don't grow the process
        _accepted.clear()
    copy = _reader_message(reply.pk, reply.role, reply.status, reply.created_at, reply.conversation_id)
    _accepted[reply.pk] = (time.monotonic(), user_id, copy)


def accepted_for_reader(*, user_id: int, message_id: int) -> Message | None:
    """The reply remembered from its send in this process, for its owner's first reader (then
    forgotten); None: look it up (`message_for_reader`)."""
    hit = _accepted.get(message_id)
    if hit is None or hit[1] != user_id:
        return None
    del _accepted[message_id]
    if time.monotonic() - hit[0] >= settings.API_CACHE_SECONDS:
        return None
    return hit[2]


def _reload(message_id: int) -> Message:
    return Message.objects.select_related("model", "conversation__user").get(pk=message_id)


def _last_terminal(entries: list) -> tuple[str, str, bytes] | None:
    if not entries:
        return None
    event_id, kind, frame = _frame_entry(*entries[0])
    return (event_id, kind, frame) if kind in TERMINAL else None


_FROM_DATABASE = object()


def _first_read(message: Message, after: str) -> bool:
    """A reader from the start of a reply not finished when it looked: whatever the stream's
    last entry, `_start` would say "read the stream" (an event's id is above 0-0, and only a
    finished reply is read from the database), so its first Redis command is the XREAD."""
    return after == "0-0" and not message.finished


def _start(last_entry: list, message: Message, after: str) -> bytes | object | None:
    """Where a reader starts, from the stream's last entry (one XREVRANGE: an empty answer is
    a stream not there, so no EXISTS first): the terminal event to repeat, `_FROM_DATABASE`,
    or None to read the stream after `after`."""
    if not last_entry:
        # No stream yet (the reply is queued) or no more (it expired): only a reply the
        # caller found finished is read from the database now.
        return _FROM_DATABASE if message.finished else None
    last = _last_terminal(last_entry)
    if last is not None and _id_le(last[0], after):
        # The reader already had everything: repeat the end so it stops reconnecting.
        return last[2]
    return None


def _frames_of(response: list, cursor: str) -> tuple[bytes, str, bool]:
    """The events of one XREAD answer as one write (fewer, larger writes to the reader),
    the id to read after, and whether the stream ended."""
    frames = []
    for entry_id, fields in response[0][1]:
        event_id, kind, frame = _frame_entry(entry_id, fields)
        cursor = event_id
        frames.append(frame)
        if kind in TERMINAL:
            return b"".join(frames), cursor, True
    return b"".join(frames), cursor, False


def _id_le(a: str, b: str) -> bool:
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) <= (int(bms), int(bseq or 0))


def sse_events(message: Message, *, after: str = "0-0") -> Iterator[bytes]:
    """The reply as server-sent events, from just after `after`; ends after done/error."""
    redis = get_redis()
    key = stream_key(message)
    # A blocking XREAD must return within the pool's socket timeout (5 s), or the read
    # itself times out and breaks the stream: wait in slices, keep-alive once a period.
    block_ms = int(min(KEEPALIVE_SECONDS, SYNC_BLOCK_SECONDS) * 1000)
    idle_since = time.monotonic()
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    start = None if _first_read(message, after) else _start(redis.xrevrange(key, count=1), message, after)
    if start is _FROM_DATABASE:
        yield from _frames_from_database(_reload(message.pk), after)
        return
    if start is not None:
        yield start
        return
    cursor = after
    while True:
        response = redis.xread({key: cursor}, block=block_ms, count=500)
        if not response:
            if time.monotonic() - idle_since < KEEPALIVE_SECONDS:
                continue
            idle_since = time.monotonic()
            yield b": keep-alive\n\n"
            message = _reload(message.pk)
            if message.finished:
                # Finished a whole keep-alive period ago with no terminal event: the
                # stream lost it (Redis restarted or was unreachable); the database has it.
                yield from _frames_from_database(message, cursor)
                return
            continue
        idle_since = time.monotonic()
        frames, cursor, ended = _frames_of(response, cursor)
        yield frames
        if ended:
            return


_async_clients: dict[Any, Any] = {}


def _async_redis() -> Any:
    """One asyncio Redis client per event loop (an ASGI server runs one loop per process)."""
    import redis.asyncio

    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=1.0,
            # Longer than the XREAD BLOCK below, or an idle stream's read times out.
            socket_timeout=KEEPALIVE_SECONDS + 10,
            health_check_interval=15,
            max_connections=2000,
        )
        _async_clients[loop] = client
    return client


async def sse_events_async(message: Message, *, after: str = "0-0") -> AsyncIterator[bytes]:
    """`sse_events` for an ASGI server: a waiting reader holds no thread."""
    redis = _async_redis()
    key = stream_key(message)
    block_ms = int(KEEPALIVE_SECONDS * 1000)
    reload = sync_to_async(_reload)
    from_database = sync_to_async(_frames_from_database)
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    start = None if _first_read(message, after) else _start(await redis.xrevrange(key, count=1), message, after)
    if start is _FROM_DATABASE:
        for frame in await from_database(await reload(message.pk), after):
            yield frame
        return
    if start is not None:
        yield start
        return
    cursor = after
    while True:
        response = await redis.xread({key: cursor}, block=block_ms, count=500)
        if not response:
            yield b": keep-alive\n\n"
            message = await reload(message.pk)
            if message.finished:
                for frame in await from_database(message, cursor):
                    yield frame
                return
            continue
        frames, cursor, ended = _frames_of(response, cursor)
        yield frames
        if ended:
            return
