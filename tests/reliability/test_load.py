"""Load: 50 people send, cancel and top up for a bounded time against two web and two
worker processes on PostgreSQL and Redis; afterwards the ledger equals what they were shown."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.reliability.conftest import BROKEN, User, chunks_of, median, parse_events, percentile, report

pytestmark = pytest.mark.slow

USERS = 50
SECONDS = 45.0
START_CREDITS = 1_000_000


@dataclass
class Tally:
    """What one person was shown, and what went wrong for them."""

    shown_cost: int = 0
    shown_topup: int = 0
    replies: int = 0
    cancels: int = 0
    topups: int = 0
    unseen: list[int] = field(default_factory=list)  # replies whose end the stream did not show
    errors: Counter = field(default_factory=Counter)
    reconnects: int = 0  # broken streams resumed from their last event, as the page does
    send_latency: list[float] = field(default_factory=list)
    reply_latency: list[float] = field(default_factory=list)


RECONNECTS = 3  # as the chat page does: resume a broken stream after its last event


def _read(user: User, reply_id: int, tally: Tally, *, cancel_after: int | None = None) -> None:
    """Read the reply's stream to its end, resuming a broken one; cancel after a few deltas when asked."""
    deltas = 0
    last_id: str | None = None
    for attempt in range(RECONNECTS + 1):
        try:
            with user.stream(reply_id, last_event_id=last_id, timeout=30) as response:
                if response.status_code != 200:
                    tally.errors[f"stream {response.status_code}"] += 1
                    tally.unseen.append(reply_id)
                    return
                for event in parse_events(chunks_of(response)):
                    last_id = event.id or last_id
                    if event.kind == "delta":
                        deltas += 1
                        if cancel_after is not None and deltas == cancel_after:
                            answer = user.post(f"/api/v1/messages/{reply_id}/cancel")
                            if answer.status_code != 200:
                                tally.errors[f"cancel {answer.status_code}"] += 1
                    elif event.kind == "done":
                        tally.shown_cost += event.data["cost"]
                        return
                    elif event.kind == "error":
                        tally.errors[f"reply failed: {event.data.get('code')}"] += 1
                        return
        except BROKEN as exc:
            if attempt == RECONNECTS:
                tally.errors[f"stream broke ({exc.__class__.__name__})"] += 1
                break
            tally.reconnects += 1
            time.sleep(0.2)
    tally.unseen.append(reply_id)


def _topup(user: User, tally: Tally) -> None:
    created = user.post("/api/v1/topups", {"amount_usd": "1"})
    if created.status_code != 201:
        tally.errors[f"topup {created.status_code}"] += 1
        return
    body = created.json()
    # The demo checkout: the "Pay" button posts the form (session cookie and CSRF token).
    paid = user.http.post(body["checkout_url"], allow_redirects=False, timeout=30)
    if paid.status_code != 302:
        tally.errors[f"demo checkout {paid.status_code}"] += 1
        return
    tally.topups += 1
    tally.shown_topup += body["credits"]


def _person(user: User, conversation: int, tally: Tally, until: float, seed: int) -> None:
    rng = random.Random(seed)
    n = 0
    while time.monotonic() < until:
        n += 1
        roll = rng.random()
        try:
            if roll < 0.08:
                _topup(user, tally)
                continue
            cancel = roll < 0.2
            content = "[demo:tokens=60] [demo:tps=40] a longer one" if cancel else "[demo:tokens=20] [demo:tps=200] hi"
            sent_at = time.monotonic()
            response = user.send(conversation, f"{content} {n}")
            tally.send_latency.append(time.monotonic() - sent_at)
            if response.status_code != 202:
                tally.errors[f"send {response.status_code}"] += 1
                time.sleep(0.5)
                continue
            tally.replies += 1
            tally.cancels += cancel
            _read(user, response.json()["id"], tally, cancel_after=3 if cancel else None)
            tally.reply_latency.append(time.monotonic() - sent_at)
        except BROKEN as exc:
            tally.errors[f"connection ({exc.__class__.__name__})"] += 1
            time.sleep(0.5)


def test_fifty_people_for_45_seconds_the_ledger_equals_what_they_were_shown(stack):
    started = time.monotonic()
    webs = [stack.start_web(server="uvicorn"), stack.start_web(server="uvicorn")]
    for _ in range(2):
        stack.start_worker(concurrency=30)
    infos = stack.seed_users(USERS, credits=START_CREDITS, prefix="load")
    people = [User(info, webs[i % 2].url, session_auth=True) for i, info in enumerate(infos)]
    conversations = [u.conversation() for u in people]
    tallies = [Tally() for _ in people]

    load_started = time.monotonic()
    until = load_started + SECONDS
    threads = [
        threading.Thread(target=_person, args=(people[i], conversations[i], tallies[i], until, i)) for i in range(USERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 90)
    assert not any(t.is_alive() for t in threads)
    load = time.monotonic() - load_started

    drain = stack.wait_drained(timeout=60)
    assert stack.pending_holds() == 0

    # What each person was shown: the cost in each reply's done event (or, for a stream
    # that did not show the end, the message's detail), and the credits of each top-up.
    for user, tally in zip(people, tallies, strict=True):
        for reply_id in tally.unseen:
            tally.shown_cost += user.message(reply_id)["cost"] or 0
    usage = dict(
        stack.sql(
            "SELECT a.user_id, coalesce(sum(e.amount), 0) FROM wallet_account a "
            "LEFT JOIN wallet_entry e ON e.debit_account_id = a.id AND e.kind = 'usage' "
            "WHERE a.user_id IS NOT NULL GROUP BY 1"
        )
    )
    topups = dict(
        stack.sql(
            "SELECT a.user_id, coalesce(sum(e.amount), 0) FROM wallet_account a "
            "LEFT JOIN wallet_entry e ON e.credit_account_id = a.id AND e.kind = 'topup' "
            "WHERE a.user_id IS NOT NULL GROUP BY 1"
        )
    )
    for user, tally in zip(people, tallies, strict=True):
        uid = user.info["user_id"]
        assert int(usage[uid]) == tally.shown_cost, (user.info["email"], usage[uid], tally.shown_cost)
        assert int(topups[uid]) == tally.shown_topup, (user.info["email"], topups[uid], tally.shown_topup)
        wallet = user.get("/api/v1/wallet").json()
        assert wallet["balance"] == START_CREDITS + tally.shown_topup - tally.shown_cost
        assert wallet["held"] == 0

    statuses = Counter(s for (s,) in stack.sql("SELECT status FROM chat_message WHERE role = 'assistant'"))
    assert set(statuses) <= {"done", "cancelled"}, statuses
    replies = sum(t.replies for t in tallies)
    assert sum(statuses.values()) == replies
    entries = stack.sql("SELECT kind, count(*) FROM wallet_entry GROUP BY 1")
    done = stack.audit()
    assert done.returncode == 0, done.stdout + done.stderr

    errors: Counter[str] = Counter()
    for tally in tallies:
        errors.update(tally.errors)
    sends = [x for t in tallies for x in t.send_latency]
    whole = [x for t in tallies for x in t.reply_latency]
    print(f"[load] streams resumed after a broken connection: {sum(t.reconnects for t in tallies)}")
    assert not errors, errors
    assert replies >= USERS  # every person got at least a reply's worth of work through
    report(
        "load: 50 users, 2 web + 2 workers",
        messages=replies,
        statuses=dict(statuses),
        topups=sum(t.topups for t in tallies),
        entries=dict(entries),
        messages_per_s=round(replies / load, 1),
        send_p50_ms=round(median(sends) * 1000),
        send_p95_ms=round(percentile(sends, 95) * 1000),
        reply_p50_ms=round(median(whole) * 1000),
        reply_p95_ms=round(percentile(whole, 95) * 1000),
        load_s=round(load, 1),
        drain_s=round(drain, 1),
        duration_s=round(time.monotonic() - started, 1),
        user_errors=sum(errors.values()),
        stream_reconnects=sum(t.reconnects for t in tallies),
        audit="clean",
    )
