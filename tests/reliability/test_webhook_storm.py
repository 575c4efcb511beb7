"""A storm of signed Stripe events (duplicated, shuffled, concurrent) against a web process
on PostgreSQL: every top-up is credited once, every refund and lost dispute taken back once."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fakes.stripe_api import FakeStripe
from tests.reliability.conftest import User, is_clean_error, report
from tests.stripe_helpers import API_KEY, WEBHOOK_SECRET, WEBHOOK_URL, dispute, event, sign

pytestmark = pytest.mark.slow

USERS = 10
TOPUPS = 20  # user k % USERS pays top-up k
CENTS = 500
CREDITS = 10_000_000  # $5
THREADS = 16


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    server = FakeStripe(api_key=API_KEY).start()
    try:
        yield server
    finally:
        server.stop()


def _story(fake: FakeStripe, k: int, session_id: str, t0: int) -> tuple[str, list[dict]]:
    """What happens to top-up k, as the events Stripe sends about it (in their true order)."""
    kind = ["paid", "paid", "refunded", "dispute_lost", "dispute_won" if (k // 5) % 2 == 0 else "async_failed"][k % 5]
    at = iter(range(t0, t0 + 10))
    if kind == "async_failed":
        session = fake.mark_unpaid(session_id)
        failed = {**session, "payment_status": "unpaid"}
        return kind, [
            event("checkout.session.completed", session, created=next(at)),
            event("checkout.session.async_payment_failed", failed, created=next(at)),
        ]
    session = fake.mark_paid(session_id)
    story = [event("checkout.session.completed", session, created=next(at))]
    charge = fake.charge_for(session_id)
    if kind == "paid":
        story.append(event("checkout.session.async_payment_succeeded", session, created=next(at)))
    elif kind == "refunded":
        # A partial refund, then the rest: amount_refunded is cumulative.
        story.append(event("charge.refunded", fake.refund(charge["id"], 200), created=next(at)))
        story.append(event("charge.refunded", fake.refund(charge["id"], CENTS - 200), created=next(at)))
    else:
        case = f"dp_{k}"
        story.append(event("charge.dispute.created", dispute(charge, dispute_id=case), created=next(at)))
        status = "lost" if kind == "dispute_lost" else "won"
        story.append(event("charge.dispute.closed", dispute(charge, status=status, dispute_id=case), created=next(at)))
    return kind, story


def test_a_storm_of_duplicated_shuffled_concurrent_events_credits_and_claws_back_exactly_once(stack, fake_stripe):
    stripe_env = {
        "STRIPE_SECRET_KEY": API_KEY,
        "STRIPE_API_BASE": fake_stripe.url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    stack.env.update(stripe_env)
    started = time.monotonic()
    web = stack.start_web()
    people = [User(info, web.url) for info in stack.seed_users(USERS, credits=0, prefix="payer")]

    kinds: dict[int, str] = {}
    owner: dict[int, int] = {}
    events: list[dict] = []
    t0 = int(time.time()) - 3600
    for k in range(TOPUPS):
        user = people[k % USERS]
        created = user.post("/api/v1/topups", {"amount_usd": "5"})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["provider"] == "stripe"
        session_id = body["checkout_url"].rsplit("/", 1)[-1]
        kind, story = _story(fake_stripe, k, session_id, t0 + 100 * k)
        kinds[body["id"]] = kind
        owner[body["id"]] = user.info["user_id"]
        events += story

    # Stripe delivers at least once and in any order: each event three to eight times, shuffled.
    rng = random.Random(20261125)
    deliveries = [e for e in events for _ in range(rng.randint(3, 8))]
    rng.shuffle(deliveries)
    answers: Counter[str] = Counter()
    dirty: list[str] = []
    lock = threading.Lock()
    local = threading.local()

    def deliver(body: dict) -> None:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        payload = json.dumps(body)
        response = local.http.post(
            web.url + WEBHOOK_URL,
            data=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)},
            timeout=60,
        )
        with lock:
            answers[str(response.status_code)] += 1
            if response.status_code != 200 and not (400 <= response.status_code < 500 and is_clean_error(response)):
                dirty.append(f"{response.status_code}: {response.text[:300]}")

    storm_started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(deliver, deliveries))
    storm = time.monotonic() - storm_started

    assert dirty == [], dirty
    assert set(answers) <= {"200"} | {str(s) for s in range(400, 500)}

    # Every event recorded once; none left waiting for a top-up that was credited.
    recorded = dict(stack.sql("SELECT status, count(*) FROM wallet_stripeevent GROUP BY 1"))
    assert sum(recorded.values()) == len(events)
    assert recorded.get("deferred", 0) == 0 and recorded.get("failed", 0) == 0, recorded
    assert recorded.get("processing", 0) == 0, recorded

    # The ledger: each paid top-up credited once; each refund and lost dispute taken back once.
    topup_entries = stack.sql(
        "SELECT reference, count(*), sum(amount) FROM wallet_entry WHERE kind = 'topup' GROUP BY 1"
    )
    credited = {int(ref.split(":")[1]): (n, int(total)) for ref, n, total in topup_entries}
    paid = {t for t, kind in kinds.items() if kind != "async_failed"}
    assert set(credited) == paid
    assert all(v == (1, CREDITS) for v in credited.values()), credited
    clawbacks = stack.sql("SELECT reference, count(*), sum(amount) FROM wallet_entry WHERE kind = 'refund' GROUP BY 1")
    taken = {int(ref.split(":")[1]): (n, int(total)) for ref, n, total in clawbacks}
    clawed = {t for t, kind in kinds.items() if kind in ("refunded", "dispute_lost")}
    assert set(taken) == clawed
    # All of each refunded or lost top-up, once: a refund in two steps is one or two entries
    # (two when the partial refund's event is handled before the full one's).
    assert all(total == CREDITS for _, total in taken.values()), taken
    assert all(n == 1 or (n == 2 and kinds[t] == "refunded") for t, (n, _) in taken.items()), taken
    assert stack.sql("SELECT count(*) FROM wallet_shortfall")[0][0] == 0

    for user in people:
        mine = [t for t, uid in owner.items() if uid == user.info["user_id"]]
        kept = sum(CREDITS for t in mine if kinds[t] in ("paid", "dispute_won"))
        wallet = user.get("/api/v1/wallet")
        assert wallet.status_code == 200
        assert wallet.json()["balance"] == kept, (user.info["email"], [kinds[t] for t in mine])
    frozen = dict(
        stack.sql("SELECT a.user_id, a.frozen_reason <> '' FROM wallet_account a WHERE a.user_id IS NOT NULL")
    )
    for t, kind in kinds.items():
        if kind == "dispute_lost":
            assert frozen[owner[t]], t
        elif kind in ("dispute_won", "paid"):
            assert not frozen[owner[t]], (t, kind)
    statuses = dict(stack.sql("SELECT id, status FROM wallet_topup"))
    expected_status = {
        "paid": "paid",
        "refunded": "refunded",
        "dispute_lost": "dispute_lost",
        "dispute_won": "paid",
        "async_failed": "failed",
    }
    assert {t: statuses[t] for t in kinds} == {t: expected_status[kind] for t, kind in kinds.items()}
    done = stack.audit()
    assert done.returncode == 0, done.stdout + done.stderr

    report(
        "Stripe webhook storm",
        topups=TOPUPS,
        distinct_events=len(events),
        deliveries=len(deliveries),
        threads=THREADS,
        answers=dict(answers),
        topup_entries=sum(n for n, _ in credited.values()),
        clawback_entries=sum(n for n, _ in taken.values()),
        events_per_s=round(len(deliveries) / storm, 1),
        storm_s=round(storm, 1),
        duration_s=round(time.monotonic() - started, 1),
        user_errors=0,
        audit="clean",
    )
