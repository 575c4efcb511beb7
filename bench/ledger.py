"""Ledger throughput and audit time on the configured database.

    bash bench/ledger.sh                # throwaway PostgreSQL, durable commits, then fsync off
    DATABASE_URL=postgres://... python bench/ledger.py --seconds 5 --audit-entries 1000000

Measures hold+post pairs per second on 1 hot wallet and across 1,000 wallets, each
pair through the services (`wallet_hold`, then `wallet_post`, or `wallet_post_batched`
for the group-commit path), from worker processes with a connection each; then
creates N chained entries and times the full audit. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
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


def _worker(account_ids: list[int], seconds: float, seed: int, start_at: float, batched: int, out: mp.Queue) -> None:
    try:
        out.put(_spend(account_ids, seconds, seed, start_at, batched))
    except BaseException as exc:
        out.put(exc)
        raise


def _spend(account_ids: list[int], seconds: float, seed: int, start_at: float, batched: int) -> int:
    """Pairs done by this process: one at a time, or with `batched` callers (threads, as a
    worker's pool) sharing the process's batcher."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from wallet.models import Account
    from wallet.services import wallet_hold, wallet_post

    accounts = list(Account.objects.filter(pk__in=account_ids))
    rng = random.Random(seed)
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.time() + seconds

    def pairs(thread_seed: int) -> int:
        from wallet.batching import wallet_hold_batched, wallet_post_batched

        local = random.Random(thread_seed)
        done = 0
        try:
            while time.time() < deadline:
                account = accounts[local.randrange(len(accounts))]
                hold = wallet_hold_batched(account=account, amount=100, idempotency_key=f"bench:{uuid.uuid4()}")
                wallet_post_batched(hold=hold, amount=60)
                done += 1
        finally:
            connection.close()
        return done

    if batched:
        # Many callers per process share the batcher's one connection and commit.
        with ThreadPoolExecutor(batched) as pool:
            return sum(pool.map(pairs, [rng.randrange(10**9) for _ in range(batched)]))
    done = 0
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


def run(ids: list[int], workers: int, seconds: float, batched: int = 0) -> float:
    from django.db import connections

    connections.close_all()
    queue: mp.Queue = mp.Queue()
    start_at = time.time() + 1.0
    procs = [mp.Process(target=_worker, args=(ids, seconds, n, start_at, batched, queue)) for n in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise SystemExit(f"a worker failed: {errors[0]!r}")
    for p in procs:
        p.join()
    return sum(results) / seconds


def create_entries(n: int, wallets: int = 10_000) -> float:
    """N chained grant entries across `wallets` new wallets, built by PostgreSQL itself:
    a recursive CTE advances every wallet's chain one step per iteration."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from wallet import digests, ledger_sql
    from wallet.models import Account

    started = time.perf_counter()
    wallets = min(wallets, n)
    steps = n // wallets
    tag = f"{time.time_ns()}"
    User = get_user_model()
    users = User.objects.bulk_create(
        [User(username=f"audit{tag}-{i}", email=f"audit{tag}-{i}@example.com") for i in range(wallets)]
    )
    Account.objects.bulk_create([Account(user=u, kind=Account.Kind.USER) for u in users], batch_size=5000)
    grants = ledger_sql.system_account_id("grants")
    row = (
        "SELECT 'grant'::varchar AS kind, %(grants)s::bigint AS debit_account_id, {w}::bigint AS credit_account_id, "
        "1::bigint AS amount, 'audit:' || {w} || ':' || {s} AS idempotency_key, ''::varchar AS reference, "
        "''::varchar AS memo, NULL::bigint AS hold_id, "
        "timestamptz '2026-01-01 00:00:00+00' + ({s}) * interval '1 microsecond' AS created_at"
    )
    content = digests.CONTENT_SQL
    step_sql = row.format(w="c.wallet_id", s="c.step + 1")
    first_sql = row.format(w="a.id", s="1")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO wallet_entry (kind, debit_account_id, credit_account_id, amount, idempotency_key,
                                      reference, memo, hold_id, wallet_id, created_at, digest)
            WITH RECURSIVE c(wallet_id, step, digest) AS (
                SELECT a.id, 1, {digests.CHAIN_SQL.format(previous="''", content=content)}
                FROM wallet_account a, LATERAL ({first_sql}) e
                WHERE a.user_id IN (SELECT id FROM auth_user WHERE username LIKE %(like)s)
              UNION ALL
                SELECT c.wallet_id, c.step + 1, {digests.CHAIN_SQL.format(previous="c.digest", content=content)}
                FROM c, LATERAL ({step_sql}) e
                WHERE c.step < %(steps)s
            )
            SELECT e.kind, e.debit_account_id, e.credit_account_id, e.amount, e.idempotency_key, e.reference,
                   e.memo, e.hold_id, c.wallet_id, e.created_at, c.digest
            FROM c, LATERAL ({row.format(w="c.wallet_id", s="c.step")}) e
            """,
            {"grants": grants, "steps": steps, "like": f"audit{tag}-%"},
        )
        cursor.execute(
            """
            UPDATE wallet_account a SET balance = t.n, chain_head = t.head
            FROM (SELECT DISTINCT ON (wallet_id) wallet_id, digest AS head,
                         count(*) OVER (PARTITION BY wallet_id) AS n
                  FROM wallet_entry WHERE idempotency_key LIKE %(like)s ORDER BY wallet_id, id DESC) t
            WHERE a.id = t.wallet_id
            """,
            {"like": "audit:%"},
        )
        cursor.execute("ANALYZE wallet_entry")
    return time.perf_counter() - started


def _settings() -> dict[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        out = {}
        for name in ("fsync", "synchronous_commit", "full_page_writes", "server_version"):
            cursor.execute(f"SHOW {name}")
            out[name] = cursor.fetchone()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=8, help="worker processes per run")
    parser.add_argument("--audit-entries", type=int, default=1_000_000, help="0 skips the audit measurement")
    parser.add_argument("--no-batched", action="store_true", help="skip the group-commit runs")
    parser.add_argument("--batch-workers", type=int, default=2, help="processes in the group-commit runs")
    parser.add_argument("--batch-threads", type=int, default=32, help="callers (threads) per process there")
    parser.add_argument("--label", default="")
    parser.add_argument("--json-out", help="also write the result object to this file")
    args = parser.parse_args()
    _setup()
    from django.db import connection

    from wallet.selectors import ledger_audit

    pg = _settings() if connection.vendor == "postgresql" else {}
    durable = pg.get("fsync") == "on" and pg.get("synchronous_commit") == "on" and pg.get("full_page_writes") == "on"
    label = args.label or ("durable commits" if durable else "NOT durable (fsync/synchronous_commit off)")
    print(f"database: {connection.vendor} {pg.get('server_version', '')}; {label}; {os.cpu_count()} cores")
    print(f"{'wallets':>8} {'workers':>8} {'path':>10} {'pairs/s':>10}", flush=True)
    result: dict[str, object] = {"durable": durable, "workers": args.workers, "seconds": args.seconds}
    hot, spread = _prepare(1), _prepare(1000)
    for name, ids in (("hot", hot), ("spread", spread)):
        rate = run(ids, args.workers, args.seconds)
        result[f"{name}_pairs_per_s"] = round(rate)
        print(f"{len(ids):>8} {args.workers:>8} {'statement':>10} {rate:>10.0f}", flush=True)
        if not args.no_batched:
            rate = run(ids, args.batch_workers, args.seconds, batched=args.batch_threads)
            result[f"{name}_batched_pairs_per_s"] = round(rate)
            path = f"batched x{args.batch_threads}"
            print(f"{len(ids):>8} {args.batch_workers:>8} {path:>10} {rate:>10.0f}", flush=True)
    problems = ledger_audit()
    print("audit after the runs:", "clean" if not problems else f"{len(problems)} problems: {problems[:3]}")
    result["audit_clean"] = not problems
    if args.audit_entries:
        created = create_entries(args.audit_entries)
        from wallet.models import Entry

        total = Entry.objects.count()
        started = time.perf_counter()
        problems = ledger_audit()
        took = time.perf_counter() - started
        print(f"created {args.audit_entries:,} chained entries in {created:.1f} s")
        print(f"full audit of {total:,} entries: {took:.1f} s ({'clean' if not problems else problems[:3]})")
        result.update(
            audit_entries=total,
            audit_seconds=round(took, 2),
            audit_10m_seconds_extrapolated=round(took * 10_000_000 / total, 1),
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
