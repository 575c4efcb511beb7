"""The audit's digest-chain check on PostgreSQL: entries streamed out by COPY in id
order, every link recomputed in Python, in parallel processes for a big ledger.

Why not in SQL: PostgreSQL's sha256() costs about 5 us a call (a hash context set
up per call) and building the content string another few, so 10 million entries
took minutes on one core; hashlib does the same two digests in about 1 us.

Why id order: a wallet's chain follows its entries' ids, so a pass in id order sees
each wallet's entries in chain order while keeping only one state per wallet (not
per entry), and the table is append-only (entries are immutable), so id order is
the heap's order and the scan is sequential. The ids are cut into ranges, one per
process, each importing the audit's snapshot (`pg_export_snapshot`) so all see the
same ledger; a range does not know the digest a wallet had before it, so it reports
each wallet's first link open, and `stitch` checks those links in range order.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
from dataclasses import dataclass, field

from django.db import connection
from psycopg.types.string import TextLoader

from wallet import digests

log = logging.getLogger(__name__)

PARALLEL_FROM = 200_000  # ids to check in a full audit before the check forks worker processes

# Every column as the content string needs it: no NULL (a hold id or ''), the time as
# its microseconds since the epoch (exact integer arithmetic in PostgreSQL, cheaper than
# printing the timestamp and parsing it back, about 2 us of Python an entry).
MICROS_SQL = "(extract(epoch from {e}created_at) * 1000000)::bigint"
_COLUMNS = (
    "{e}id, {e}wallet_id, {e}kind, {e}debit_account_id, {e}credit_account_id, {e}amount, {e}idempotency_key, "
    "{e}reference, {e}memo, coalesce({e}hold_id::text, ''), " + MICROS_SQL + ", {e}digest"
)


@dataclass
class Segment:
    """One id range's findings: links broken inside it, and per wallet its first
    entry (whose link to the previous range is checked by `stitch`) and where it ends."""

    broken: list[tuple[int, str]] = field(default_factory=list)
    # wallet id (as text) -> (first entry id (text), its key, its content digest, its digest)
    opens: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    # wallet id (as text) -> [newest entry id (text), its digest, the balance the range's entries add]
    ends: dict[str, list] = field(default_factory=dict)


def check_rows(rows: list[tuple], segment: Segment) -> None:
    """Check entries into `segment`: each wallet's in id order, every column as
    PostgreSQL's text (`_COLUMNS`). The loop is the audit's hot path: no more per row than
    the two digests need (wallets keyed by their id's text, ids parsed on a break; the
    content string as `digests.content_digest` builds it, inline)."""
    sha256 = hashlib.sha256
    opens, ends, broken = segment.opens, segment.ends, segment.broken
    for pk, wallet, kind, debit, credit, amount, key, ref, memo, hold, m, digest in rows:
        content = sha256(
            f"{len(kind)}:{kind}|{len(debit)}:{debit}|{len(credit)}:{credit}|{len(amount)}:{amount}|"
            f"{len(key)}:{key}|{len(ref)}:{ref}|{len(memo)}:{memo}|{len(hold)}:{hold}|{len(m)}:{m}".encode()
        ).hexdigest()
        end = ends.get(wallet)
        if end is None:
            opens[wallet] = (pk, key, content, digest)
            ends[wallet] = [pk, digest, int(amount) if credit == wallet else -int(amount)]
            if credit != wallet and debit != wallet:
                broken.append((int(pk), key))
            continue
        if sha256((end[1] + content).encode()).hexdigest() != digest:
            broken.append((int(pk), key))
        end[0] = pk
        end[1] = digest
        if credit == wallet:
            end[2] += int(amount)
        else:
            end[2] -= int(amount)
            if debit != wallet:
                broken.append((int(pk), key))


_RANGE = f"SELECT {_COLUMNS.format(e='')} FROM wallet_entry WHERE id BETWEEN %s AND %s ORDER BY id"
# Past each wallet's checkpoint (or all of a wallet that has none): one index range per wallet.
_SINCE_CHECKPOINTS = f"""
SELECT {_COLUMNS.format(e="e.")}
FROM wallet_account a
CROSS JOIN LATERAL (
    SELECT * FROM wallet_entry e
    WHERE e.wallet_id = a.id
      AND e.id > coalesce((SELECT c.entry_id FROM wallet_auditcheckpoint c WHERE c.account_id = a.id), 0)
) e
ORDER BY e.wallet_id, e.id
"""


def _check_query(conn, sql: str, params: list) -> Segment:
    """The entries a query returns through `check_rows`, fetched in slices by a
    server-side cursor that loads every column as text (psycopg's C loaders; the
    digests need the text)."""
    segment = Segment()
    with conn.cursor(name="wallet_audit_chain") as cursor:
        for oid in ("int8", "int4"):
            cursor.adapters.register_loader(oid, TextLoader)
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(20_000):
            check_rows(rows, segment)
    return segment


def _worker(params: dict, snapshot: str, lo: int, hi: int, out: mp.Queue) -> None:
    # A forked child never touches the parent's connection (it stays the parent's);
    # it opens its own and imports the parent's snapshot.
    import psycopg

    try:
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            out.put((lo, _check_query(conn, _RANGE, [lo, hi])))
    except BaseException as exc:
        out.put((lo, exc))
        raise


def segments(*, incremental: bool, outermost: bool) -> list[Segment]:
    """The entries to check, as segments in chain order. Incremental: each wallet's past
    its checkpoint, in-process. Full: id ranges, in parallel processes when there are
    many and this is the audit's own transaction (whose snapshot they import)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM wallet_entry")
        bottom, top = cursor.fetchone()
        bottom, top = bottom or 1, top or 0
        processes = min(os.cpu_count() or 1, 8)
        parallel = (
            not incremental
            and outermost
            and processes > 1
            and top - bottom >= PARALLEL_FROM
            and "fork" in mp.get_all_start_methods()
        )
        if not parallel:
            sql, params = (_SINCE_CHECKPOINTS, []) if incremental else (_RANGE, [bottom, top])
            return [_check_query(connection.connection, sql, params)]
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
    step = (top - bottom) // processes + 1
    bounds = [(bottom + i * step, min(top, bottom + (i + 1) * step - 1)) for i in range(processes)]
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(params, snapshot, lo, hi, out)) for lo, hi in bounds]
    for w in workers:
        w.start()
    found = dict(out.get() for _ in workers)
    for w in workers:
        w.join()
    failed = [r for r in found.values() if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"the chain check failed in a worker process: {failed[0]!r}")
    return [found[lo] for lo, _ in bounds]


def stitch(
    parts: list[Segment], starts: dict[int, tuple[str, int]]
) -> tuple[list[tuple[int, str]], dict[int, tuple[int, str, int]]]:
    """Check each range's open links against where the previous ranges (or the wallet's
    checkpoint, `starts`: digest and balance) left the wallet. Returns the broken links
    (with those found inside ranges) and per wallet its newest entry, digest and balance."""
    broken = [link for part in parts for link in part.broken]
    state: dict[int, tuple[int, str, int]] = {}
    for part in parts:
        for wallet_text, (pk, key, content, digest) in part.opens.items():
            wallet = int(wallet_text)
            _, previous, balance = state.get(wallet) or (0, *starts.get(wallet, ("", 0)))
            if digests.chain(previous, content) != digest:
                broken.append((int(pk), key))
            last, head, delta = part.ends[wallet_text]
            state[wallet] = (int(last), head, balance + delta)
    return sorted(broken), state
