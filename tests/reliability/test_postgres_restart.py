"""PostgreSQL restarts while users send: what they see is clean JSON errors (never an
HTML error page from the API), everything recovers, every reply ends, the ledger audits."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests

from tests.reliability.conftest import BROKEN, User, follow_reply, is_clean_error, report

pytestmark = pytest.mark.slow

USERS = 8
BEFORE_SECONDS = 5.0
DOWN_SECONDS = 3.0
AFTER_SECONDS = 8.0


def stuck(stack, doing: dict[int, tuple[str, int | None, float]]) -> str:
    """What the users still waiting are waiting on: each reply's row, and the processes' logs."""
    now = time.monotonic()
    lines = []
    for i, (what, reply_id, since) in sorted(doing.items()):
        row = stack.sql(
            "SELECT status, error_code, created_at, started_at, finished_at FROM chat_message WHERE id = %s",
            [reply_id],
        )
        lines.append(f"user {i}: {what} {reply_id or ''} for {now - since:.1f} s; row {row}")
    return "\n".join(lines) + "\n" + stack.logs()


def test_postgres_restart_under_load_gives_clean_errors_and_everything_recovers(stack, pg):
    # A reply may wait 30 s to start (the hold's time limit less the settle margin): the
    # worker's tasks that met the restart retry with back-off.
    stack.env.update({"HOLD_TTL_SECONDS": "60", "HOLD_SWEEP_SECONDS": "2", "MODEL_TIMEOUT_SECONDS": "5"})
    started = time.monotonic()
    web = stack.start_web()
    worker = stack.start_worker()
    people = [User(info, web.url) for info in stack.seed_users(USERS)]
    conversations = [u.conversation() for u in people]

    stop = threading.Event()
    lock = threading.Lock()
    outcomes: Counter[str] = Counter()
    dirty: list[str] = []  # answers that were not clean JSON
    accepted: list[tuple[User, int]] = []
    shown_cost: dict[int, int] = {}
    doing: dict[int, tuple[str, int | None, float]] = {}  # what each user is waiting on, since when

    def note(what: str) -> None:
        with lock:
            outcomes[what] += 1

    def person(i: int) -> None:
        user, conversation = people[i], conversations[i]
        n = 0
        while not stop.is_set():
            n += 1
            doing[i] = ("sending", None, time.monotonic())
            try:
                response = user.send(conversation, f"[demo:tokens=10] [demo:tps=40] message {n}", timeout=20)
            except BROKEN as exc:
                note(f"connection error ({exc.__class__.__name__})")
                time.sleep(0.5)
                continue
            if response.status_code != 202:
                code = response.json()["error"]["code"] if is_clean_error(response) else "NOT JSON"
                note(f"{response.status_code} {code}")
                if not is_clean_error(response):
                    with lock:
                        dirty.append(
                            f"{response.status_code} {response.headers.get('Content-Type')}: {response.text[:200]}"
                        )
                time.sleep(0.5)
                continue
            note("202")
            reply_id = response.json()["id"]
            with lock:
                accepted.append((user, reply_id))
            doing[i] = ("following", reply_id, time.monotonic())
            seen = follow_reply(user, reply_id, deadline=time.monotonic() + 15, retry_after=0.5)
            if seen.terminal is not None and seen.terminal.kind == "done":
                shown_cost[reply_id] = seen.terminal.data["cost"]
        doing.pop(i, None)

    threads = [threading.Thread(target=person, args=(i,)) for i in range(USERS)]
    load_started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(BEFORE_SECONDS)
    down_at = time.monotonic()
    pg.stop("fast")
    time.sleep(DOWN_SECONDS)
    pg.start()
    outage = time.monotonic() - down_at
    time.sleep(AFTER_SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=40)
    assert not any(t.is_alive() for t in threads), stuck(stack, doing)
    load_seconds = time.monotonic() - load_started

    # After the restart, sends work again.
    last = people[0].send(conversations[0], "[demo:tokens=5] after the restart")
    assert last.status_code == 202, last.text[:300]
    accepted.append((people[0], last.json()["id"]))

    assert dirty == [], dirty
    drain = stack.wait_drained(timeout=60)
    assert stack.pending_holds() == 0
    statuses = Counter(s for (s,) in stack.sql("SELECT status FROM chat_message WHERE role = 'assistant'"))
    assert set(statuses) <= {"done", "failed", "cancelled"}
    # No reply in flight during the restart was left for the sweep to fail once its hold
    # expired: the worker settles it when the database is back.
    expired = stack.sql(
        "SELECT id, error_message, created_at, started_at, finished_at FROM chat_message WHERE error_code = 'expired'"
    )
    assert expired == [], (expired, stack.logs())
    assert load_seconds < BEFORE_SECONDS + DOWN_SECONDS + AFTER_SECONDS + 15, load_seconds
    # Every reply a user saw end as done was charged exactly what the user was shown.
    for reply_id, cost in shown_cost.items():
        charged = stack.sql(
            "SELECT coalesce(sum(amount), 0) FROM wallet_entry WHERE reference = %s", [f"message:{reply_id}"]
        )
        assert charged[0][0] == cost, (reply_id, charged, cost)
    assert worker.alive, worker.log_tail()
    done = stack.audit()
    assert done.returncode == 0, done.stdout + done.stderr
    health = requests.get(f"{web.url}/healthz", timeout=10)
    assert health.status_code == 200, health.text

    entries = stack.sql("SELECT count(*) FROM wallet_entry WHERE kind = 'usage'")[0][0]
    worker_log = "".join(p.log_path.read_text(errors="replace") for p in stack.workers)
    settle_retries = worker_log.count("database unavailable while settling a reply")
    failed = dict(stack.sql("SELECT error_code, count(*) FROM chat_message WHERE status = 'failed' GROUP BY 1"))
    errors = {k: v for k, v in outcomes.items() if k != "202"}
    report(
        "PostgreSQL restart under load",
        users=USERS,
        messages=sum(statuses.values()),
        statuses=dict(statuses),
        failed_because=failed,
        usage_entries=entries,
        outage_s=round(outage, 1),
        accepted=outcomes["202"],
        user_errors=errors or 0,
        settle_retries=settle_retries,
        load_s=round(load_seconds, 1),
        drain_s=round(drain, 1),
        duration_s=round(time.monotonic() - started, 1),
        audit="clean",
    )
