"""A model provider that accepts the call and never answers: the reply fails on the
model timeout with a readable reason, nothing is charged and the hold is voided."""

from __future__ import annotations

import time

import pytest

from tests.reliability.conftest import User, report

pytestmark = pytest.mark.slow


def test_a_provider_hanging_past_the_timeout_fails_the_reply_and_charges_nothing(stack):
    # Two attempts (the first try and one retry before any token), two seconds each.
    stack.env.update({"MODEL_TIMEOUT_SECONDS": "2", "MODEL_FIRST_TOKEN_RETRIES": "1"})
    started = time.monotonic()
    web = stack.start_web()
    stack.start_worker()
    (info,) = stack.seed_users(1)
    user = User(info, web.url)
    before = user.get("/api/v1/wallet").json()
    conversation = user.conversation()

    sent_at = time.monotonic()
    accepted = user.send(conversation, "[demo:fail=timeout] are you there?")
    assert accepted.status_code == 202, accepted.text
    reply_id = accepted.json()["id"]
    events = user.read_reply(reply_id, timeout=30)
    failed_after = time.monotonic() - sent_at

    assert [e.kind for e in events] == ["error"]
    error = events[0].data
    assert error["code"] == "timeout"
    assert "did not answer within 2 seconds" in error["message"] and "Nothing was charged" in error["message"]
    # Bounded by the timeout: two attempts and a short back-off, not the hold's time limit.
    assert 4 <= failed_after < 15, failed_after

    detail = user.message(reply_id)
    assert detail["status"] == "failed" and detail["cost"] == 0
    assert detail["error"] == {"code": "timeout", "message": error["message"]}
    (hold_status,) = stack.sql(
        "SELECT h.status FROM wallet_hold h JOIN chat_message m ON m.hold_id = h.id WHERE m.id = %s", [reply_id]
    )[0]
    assert hold_status == "voided"
    assert stack.sql("SELECT count(*) FROM wallet_entry WHERE reference = %s", [f"message:{reply_id}"])[0][0] == 0
    after = user.get("/api/v1/wallet").json()
    assert (after["balance"], after["held"]) == (before["balance"], 0)
    done = stack.audit()
    assert done.returncode == 0, done.stdout + done.stderr

    report(
        "provider hangs past the timeout",
        messages=1,
        final_status="failed (timeout)",
        failed_after_s=round(failed_after, 1),
        entries=0,
        hold=hold_status,
        duration_s=round(time.monotonic() - started, 1),
        user_errors="1 (timeout, nothing charged)",
        audit="clean",
    )
