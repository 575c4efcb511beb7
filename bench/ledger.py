"""Ledger throughput and audit time on the configured database.

    bash bench/ledger.sh                # throwaway PostgreSQL, durable commits, then fsync off
    DATABASE_URL=postgres://... python bench/ledger.py --seconds 5 --audit-entries 1000000

Measures hold+post pairs per second on 1 hot wallet and across 1,000 wallets, each
pair through the services: `wallet_hold` then `wallet_post` from worker processes with
a connection each, one pair at a time; then `wallet_hold_batched` then
`wallet_post_batched` from 2 processes of 64 callers (threads, as a worker's pool)
sharing each process's batcher. Then creates N chained entries (10 M by default: each
of 2 processes computes its wallets' chains and COPYs them in) and times the full
audit. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
        # Unique keys without uuid4's cost on every pair (the callers share the cores measured).
        prefix = f"bench:{uuid.uuid4()}:"
        done = 0
        try:
            while time.time() < deadline:
                account = accounts[local.randrange(len(accounts))]
                hold = wallet_hold_batched(account=account, amount=100, idempotency_key=f"{prefix}{done}")
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
    prefix = f"bench:{uuid.uuid4()}:"
    while time.time() < deadline:
        account = accounts[rng.randrange(len(accounts))]
        hold = wallet_hold(account=account, amount=100, idempotency_key=f"{prefix}{done}")
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


def _chain_rows(wallet_ids: list[int], steps: int, grants: int) -> tuple[bytes, dict[int, str]]:
    """COPY text for `steps` chained grants of 1 credit on each wallet, and each wallet's head.

    The content string is `digests.content_digest`'s, built here with only the varying
    parts formatted (the same digests; `test_bench_entries_chain_like_the_ledger` checks)."""
    import hashlib

    from wallet import digests

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    base = digests.micros(start)
    fixed_head = f"5:grant|{len(str(grants))}:{grants}|"
    lines: list[str] = []
    heads: dict[int, str] = {}
    for wallet in wallet_ids:
        head = ""
        w = str(wallet)
        prefix = f"{fixed_head}{len(w)}:{w}|1:1|"
        for step in range(1, steps + 1):
            key = f"audit:{wallet:010d}:{step:07d}"
            micros = str(base + step)
            content = hashlib.sha256(f"{prefix}{len(key)}:{key}|0:|0:|0:|{len(micros)}:{micros}".encode()).hexdigest()
            head = hashlib.sha256((head + content).encode()).hexdigest()
            created = (start + dt.timedelta(microseconds=step)).isoformat()
            lines.append(f"grant\t{grants}\t{w}\t1\t{key}\t\t\t\\N\t{w}\t{created}\t{head}\n")
        heads[wallet] = head
    return "".join(lines).encode(), heads


def _copy_wallets(wallet_ids: list[int], steps: int, grants: int, out: mp.Queue) -> None:
    try:
        from django.db import connection

        heads: dict[int, str] = {}
        connection.ensure_connection()
        with connection.cursor() as cursor:
            # A throwaway benchmark database, as its superuser: skip the foreign-key
            # triggers while loading (rows are valid by construction); the immutability
            # trigger fires only on UPDATE and DELETE anyway.
            cursor.execute("SET session_replication_role = replica")
            for i in range(0, len(wallet_ids), 200):
                data, part = _chain_rows(wallet_ids[i : i + 200], steps, grants)
                heads.update(part)
                with cursor.cursor.copy(
                    "COPY wallet_entry (kind, debit_account_id, credit_account_id, amount, idempotency_key, "
                    "reference, memo, hold_id, wallet_id, created_at, digest) FROM STDIN"
                ) as copy:
                    copy.write(data)
        connection.close()
        out.put(heads)
    except BaseException as exc:
        out.put(exc)
        raise


def create_entries(n: int, wallets: int = 10_000, procs: int = 2) -> float:
    """N chained grant entries across `wallets` new wallets: each of `procs` processes
    computes its wallets' chains (the ledger's digests) and COPYs them in."""
    from django.contrib.auth import get_user_model
    from django.db import connection, connections

    from wallet import ledger_sql
    from wallet.models import Account

    started = time.perf_counter()
    wallets = min(wallets, n)
    steps = n // wallets
    tag = f"{time.time_ns()}"
    User = get_user_model()
    users = User.objects.bulk_create(
        [User(username=f"audit{tag}-{i}", email=f"audit{tag}-{i}@example.com") for i in range(wallets)],
        batch_size=5000,
    )
    accounts = Account.objects.bulk_create([Account(user=u, kind=Account.Kind.USER) for u in users], batch_size=5000)
    ids = sorted(a.pk for a in accounts)
    grants = ledger_sql.system_account_id("grants")
    connections.close_all()
    queue: mp.Queue = mp.Queue()
    shares = [ids[i::procs] for i in range(procs)]
    workers = [mp.Process(target=_copy_wallets, args=(share, steps, grants, queue)) for share in shares]
    for w in workers:
        w.start()
    heads: dict[int, str] = {}
    for _ in workers:
        got = queue.get()
        if isinstance(got, BaseException):
            raise SystemExit(f"creating entries failed: {got!r}")
        heads.update(got)
    for w in workers:
        w.join()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE wallet_account a SET balance = t.n, chain_head = t.head
            FROM json_to_recordset(%s::json) AS t(id bigint, n bigint, head text) WHERE a.id = t.id
            """,
            [json.dumps([{"id": pk, "n": steps, "head": head} for pk, head in heads.items()])],
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
    parser.add_argument("--audit-entries", type=int, default=10_000_000, help="0 skips the audit measurement")
    parser.add_argument("--no-batched", action="store_true", help="skip the group-commit runs")
    parser.add_argument("--batch-workers", type=int, default=2, help="processes in the group-commit runs")
    parser.add_argument("--batch-threads", type=int, default=64, help="callers (threads) per process there")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured pairs first (0: none)")
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
    if args.warmup and connection.vendor == "postgresql":
        # A running server's tables have history and statistics; fresh ones have neither, and
        # the plans each connection makes once (generic, see wallet/ledger_sql.py) would scan
        # the still-small tables whole for the rest of the run: give them some history first.
        run(_prepare(100), args.batch_workers, args.warmup, batched=args.batch_threads)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE wallet_account, wallet_hold, wallet_entry")
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
