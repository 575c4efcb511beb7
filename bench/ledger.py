"""Ledger throughput: hold+post pairs per second on the configured database.

    bash bench/ledger.sh            # starts a throwaway PostgreSQL and runs this
    DATABASE_URL=postgres://... python bench/ledger.py --seconds 5

Prints pairs/s for 1 hot wallet and for 1,000 wallets with 1, 8 and 32 concurrent
workers (processes, each with its own connection), then audits the ledger.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panels.settings")


def _setup() -> None:
    import django

    django.setup()


def _worker(account_ids: list[int], seconds: float, seed: int, start_at: float, out: mp.Queue) -> None:
    try:
        out.put(_spend(account_ids, seconds, seed, start_at))
    except BaseException as exc:
        out.put(exc)
        raise


def _spend(account_ids: list[int], seconds: float, seed: int, start_at: float) -> int:
    from wallet.models import Account
    from wallet.services import wallet_hold, wallet_post

    accounts = list(Account.objects.filter(pk__in=account_ids))
    rng = random.Random(seed)
    while time.time() < start_at:
        time.sleep(0.001)
    done = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        account = accounts[rng.randrange(len(accounts))]
        hold = wallet_hold(account=account, amount=100, idempotency_key=f"bench:{uuid.uuid4()}")
        wallet_post(hold=hold, amount=60)
        done += 1
    return done


def _prepare(wallets: int) -> list[int]:
    from django.contrib.auth import get_user_model

    from wallet.models import Entry
    from wallet.services import wallet_credit, wallet_for_user

    ids = []
    User = get_user_model()
    tag = f"{time.time_ns()}"
    for i in range(wallets):
        user = User.objects.create_user(username=f"bench{tag}-{i}", email=f"bench{tag}-{i}@example.com")
        account = wallet_for_user(user=user)
        wallet_credit(account=account, amount=10**12, kind=Entry.Kind.GRANT, idempotency_key=f"bench-seed:{tag}:{i}")
        ids.append(account.pk)
    return ids


def run(wallets: int, workers: int, seconds: float) -> float:
    ids = _prepare(wallets)
    from django.db import connections

    connections.close_all()
    queue: mp.Queue = mp.Queue()
    start_at = time.time() + 1.0
    procs = [mp.Process(target=_worker, args=(ids, seconds, n, start_at, queue)) for n in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise SystemExit(f"a worker failed: {errors[0]!r}")
    total = sum(results)
    for p in procs:
        p.join()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", default="1,8,32")
    args = parser.parse_args()
    _setup()
    from django.db import connection

    from wallet.selectors import ledger_audit

    print(f"database: {connection.vendor}; {os.cpu_count()} cores; {args.seconds:.0f} s per run")
    print(f"{'wallets':>8} {'workers':>8} {'pairs/s':>10}")
    for wallets in (1, 1000):
        for workers in [int(w) for w in args.workers.split(",")]:
            rate = run(wallets, workers, args.seconds)
            print(f"{wallets:>8} {workers:>8} {rate:>10.0f}", flush=True)
    problems = ledger_audit()
    print("audit:", "clean" if not problems else f"{len(problems)} problems: {problems[:3]}")


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
