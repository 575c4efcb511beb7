"""Redis stops while replies stream and users send: sends answer a clean 503 and store
nothing half-way; when Redis returns, new sends work and every reply ends, paid once."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.reliability.conftest import BROKEN, Followed, User, follow_reply, is_clean_error, report, wait_for

pytestmark = pytest.mark.slow

IN_FLIGHT = 4
SENDS_DURING_OUTAGE = 6
OUTAGE_SECONDS = 4.0


def test_redis_down_mid_stream_sends_answer_503_and_everything_ends_once_it_returns(stack):
    stack.env.update(
        {
            # Replies may run 15 s (the hold's time limit less the settle margin).
            "HOLD_TTL_SECONDS": "45",
            "HOLD_SWEEP_SECONDS": "2",
            "MODEL_TIMEOUT_SECONDS": "5",
            "CELERY_VISIBILITY_TIMEOUT": "20",
        }
    )
    started = time.monotonic()
    web = stack.start_web()
    worker = stack.start_worker()
    people = [User(info, web.url) for info in stack.seed_users(IN_FLIGHT + 2)]
    conversations = [u.conversation() for u in people]

    # Replies long enough to span the outage: ~8 s each at 15 tokens/s.
    flights: list[tuple[User, int]] = []
    for user, conversation in zip(people[:IN_FLIGHT], conversations, strict=False):
        accepted = user.send(conversation, "[demo:tokens=120] [demo:tps=15] a long reply")
        assert accepted.status_code == 202, accepted.text
        flights.append((user, accepted.json()["id"]))
    followed: dict[int, Followed] = {}

    def follow(user: User, message_id: int) -> None:
        followed[message_id] = follow_reply(user, message_id, deadline=time.monotonic() + 60)

    readers = [threading.Thread(target=follow, args=flight) for flight in flights]
    for reader in readers:
        reader.start()
    time.sleep(1.5)

    stack.redis.stop()
    down_at = time.monotonic()
    answers: list[requests.Response] = []
    send_seconds: list[float] = []
    outage_user, outage_conversation = people[IN_FLIGHT], conversations[IN_FLIGHT]
    for i in range(SENDS_DURING_OUTAGE):
        t = time.monotonic()
        answers.append(outage_user.send(outage_conversation, f"[demo:tokens=5] sent while Redis is down {i}"))
        send_seconds.append(time.monotonic() - t)
    health = requests.get(f"{web.url}/healthz", timeout=10)
    cancel = people[0].post(f"/api/v1/messages/{flights[0][1]}/cancel")
    detail_while_down = people[1].get(f"/api/v1/messages/{flights[1][1]}")
    wallet_while_down = people[1].get("/api/v1/wallet")
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    stack.redis.start()
    outage = time.monotonic() - down_at

    # While Redis was down: clean JSON 503s, quickly; reads that need only the database work.
    assert [a.status_code for a in answers] == [503] * SENDS_DURING_OUTAGE, [a.text[:200] for a in answers]
    assert all(is_clean_error(a) and a.json()["error"]["code"] == "service_unavailable" for a in answers)
    assert "Nothing was charged" in answers[0].json()["error"]["message"]
    assert max(send_seconds) < 5, send_seconds
    assert health.status_code == 503 and "redis" in health.json()["failing"]
    assert cancel.status_code == 503 and is_clean_error(cancel), cancel.text[:300]
    assert detail_while_down.status_code == 200 and wallet_while_down.status_code == 200

    # After: a new send works (the web process reconnects to the broker by itself).
    def send_works() -> requests.Response | None:
        try:
            response = people[-1].send(conversations[-1], "[demo:tokens=5] after the outage")
        except BROKEN:
            return None
        return response if response.status_code == 202 else None

    after = wait_for(send_works, timeout=20, what="a send to be accepted after Redis returned", every=1.0)
    after_events = people[-1].read_reply(after.json()["id"], timeout=30)
    assert after_events and after_events[-1].kind == "done", after_events

    drain = stack.wait_drained(timeout=60)
    for reader in readers:
        reader.join(timeout=70)
    assert not any(r.is_alive() for r in readers)

    # The replies in flight ended, and each reader saw the whole reply exactly once.
    finals = {}
    for user, message_id in flights:
        detail = user.message(message_id)
        finals[message_id] = detail["status"]
        seen = followed[message_id]
        assert seen.terminal is not None, (message_id, seen.events[-3:])
        assert detail["status"] in ("done", "cancelled", "failed")
        if detail["status"] != "failed":
            assert seen.text == detail["content"], (message_id, seen.text, detail["content"])
            assert seen.terminal.kind == "done" and seen.terminal.data["cost"] == detail["cost"]
    # The sends refused during the outage stored the user's message and a failed reply,
    # their holds voided: no queued reply without a task, nothing held.
    outage_replies = stack.sql(
        "SELECT m.status, m.error_code, m.cost, h.status FROM chat_message m JOIN wallet_hold h ON h.id = m.hold_id "
        "WHERE m.conversation_id = %s AND m.role = 'assistant'",
        [outage_conversation],
    )
    assert len(outage_replies) == SENDS_DURING_OUTAGE
    assert set(outage_replies) == {("failed", "service_unavailable", 0, "voided")}
    assert stack.pending_holds() == 0
    health_after = wait_for(
        lambda: (r := requests.get(f"{web.url}/healthz", timeout=10)).status_code == 200 and r,
        timeout=30,
        what="/healthz to recover",
        every=1.0,
    )
    assert health_after.json()["status"] == "ok"
    # The worker rode out the outage: it reconnected rather than exit.
    assert worker.alive, worker.log_tail()
    done = stack.audit()
    assert done.returncode == 0, done.stdout + done.stderr

    messages, entries = stack.sql(
        "SELECT (SELECT count(*) FROM chat_message WHERE role = 'assistant'), "
        "(SELECT count(*) FROM wallet_entry WHERE kind = 'usage')"
    )[0]
    report(
        "Redis stopped mid-stream",
        messages=messages,
        usage_entries=entries,
        outage_s=round(outage, 1),
        in_flight_final=sorted(finals.values()),
        reconnects=sum(f.reconnects for f in followed.values()),
        send_503_max_s=round(max(send_seconds), 2),
        worker_exited=not worker.alive,
        drain_s=round(drain, 1),
        duration_s=round(time.monotonic() - started, 1),
        user_errors=f"{SENDS_DURING_OUTAGE} sends + 1 cancel answered 503 JSON",
        audit="clean",
    )
