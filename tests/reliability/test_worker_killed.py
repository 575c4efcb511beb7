"""A worker SIGKILLed mid-reply: the reply ends (failed, nothing charged), never stuck."""

from __future__ import annotations

import time

import pytest

from tests.reliability.conftest import User, chunks_of, parse_events, report, wait_for

pytestmark = pytest.mark.slow

# Replies get HOLD_TTL - 30 s (the settle margin) to run; the sweep ends a dead
# worker's reply once its hold has expired, and runs every 2 s here.
FAST = {
    "HOLD_TTL_SECONDS": "36",
    "HOLD_SWEEP_SECONDS": "2",
    "MODEL_TIMEOUT_SECONDS": "3",
    "CELERY_VISIBILITY_TIMEOUT": "5",
}


def test_worker_sigkilled_mid_reply_the_reply_ends_and_its_hold_is_released_once(stack):
    stack.env.update(FAST)
    started = time.monotonic()
    web = stack.start_web()
    doomed = stack.start_worker()
    (info,) = stack.seed_users(1)
    user = User(info, web.url)
    balance_before = user.get("/api/v1/wallet").json()["balance"]
    conversation = user.conversation()

    accepted = user.send(conversation, "[demo:tokens=200] [demo:tps=20] tell me a long story")
    assert accepted.status_code == 202, accepted.text
    reply_id = accepted.json()["id"]
    hold_id = stack.sql("SELECT hold_id FROM chat_message WHERE id = %s", [reply_id])[0][0]

    # Read a few deltas, so the worker is surely mid-reply, then kill it outright.
    seen = []
    with user.stream(reply_id) as response:
        for event in parse_events(chunks_of(response)):
            seen.append(event)
            if len(seen) >= 5:
                break
    assert [e.kind for e in seen] == ["delta"] * 5
    doomed.kill()
    killed_at = time.monotonic()
    assert stack.sql("SELECT status FROM chat_message WHERE id = %s", [reply_id])[0][0] == "streaming"

    # A new worker: the dead one's unacknowledged task is delivered again once its
    # visibility timeout has passed, and the sweep ends the reply when the hold expires.
    time.sleep(6)
    successor = stack.start_worker(loglevel="INFO")
    wait_for(lambda: stack.unfinished() == 0, timeout=60, what="the reply to end", every=0.5)
    ended_after = time.monotonic() - killed_at

    status, cost, code, message = stack.sql(
        "SELECT status, cost, error_code, error_message FROM chat_message WHERE id = %s", [reply_id]
    )[0]
    hold_status, posted = stack.sql("SELECT status, posted_amount FROM wallet_hold WHERE id = %s", [hold_id])[0]
    entries = stack.sql("SELECT kind, amount FROM wallet_entry WHERE hold_id = %s", [hold_id])
    # Ended once: failed with nothing charged and the hold released, or (had it finished
    # before the kill) done with exactly one usage entry for the posted hold.
    assert status in ("failed", "done"), status
    if status == "failed":
        assert cost == 0 and code == "expired" and "Nothing was charged" in message
        assert hold_status in ("expired", "voided") and entries == []
    else:
        assert hold_status == "posted" and entries == [("usage", posted)] and cost == posted
    assert stack.pending_holds() == 0

    # What the user sees: the stream resumes from where it was and ends with the reason.
    rest = user.read_reply(reply_id, timeout=20)
    assert rest and rest[-1].kind in ("error", "done")
    detail = user.message(reply_id)
    assert detail["status"] == status
    wallet = user.get("/api/v1/wallet").json()
    assert wallet["held"] == 0
    assert wallet["balance"] == balance_before - (cost or 0)

    # The dead worker's task was delivered again; it found the reply no longer queued
    # and did nothing (the claim is a compare-and-swap), so nothing ran or settled twice.
    assert successor.alive
    log = successor.log_path.read_text(errors="replace")
    redelivered = "reply not queued; nothing to do" in log
    assert redelivered, successor.log_tail(60)
    assert "Traceback" not in log, successor.log_tail(200)
    done = stack.audit()
    assert done.returncode == 0, done.stdout + done.stderr

    report(
        "worker SIGKILL mid-reply",
        messages=1,
        final_status=status,
        hold=hold_status,
        entries=len(entries),
        ended_after_kill_s=round(ended_after, 1),
        redelivered=redelivered,
        duration_s=round(time.monotonic() - started, 1),
        user_errors=f"1 ({code})",
        audit="clean",
    )
