"""The audit's chain check on PostgreSQL (wallet/audit_chains.py): entries streamed in id
order and verified in Python, split into id ranges checked by parallel processes that
share the audit's snapshot; a range's first link per wallet is checked when the ranges
are stitched together. The benchmark's bulk entries chain exactly as the ledger's."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from django.db import connection, transaction

from tests.wallet_helpers import funded_wallet, immutability_lifted
from wallet import audit_chains, digests
from wallet.models import Entry
from wallet.selectors import ledger_audit
from wallet.services import wallet_credit, wallet_hold, wallet_post

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        pytest.skip("the streamed, parallel chain check is PostgreSQL's; SQLite's audit checks in Python")


def _spend(account, n: int, tag: str) -> None:
    for i in range(n):
        hold = wallet_hold(account=account, amount=10, idempotency_key=f"{tag}{i}")
        wallet_post(hold=hold, amount=3 + i % 5, memo=f"reply {i}\twith a tab\\ and a backslash, été\nand a line")


def test_parallel_ranges_stitch_each_wallets_chain_and_find_a_tampered_entry(alice, bob, postgres, monkeypatch):
    mine, theirs = funded_wallet(alice, 1000), funded_wallet(bob, 1000)
    for round_ in range(3):  # both wallets' chains run through every id range
        _spend(mine, 4, f"a{round_}-")
        _spend(theirs, 4, f"b{round_}-")
    monkeypatch.setattr(audit_chains, "PARALLEL_FROM", 0)
    monkeypatch.setattr(audit_chains.os, "cpu_count", lambda: 3)
    seen: list[list[audit_chains.Segment]] = []
    real = audit_chains.stitch
    monkeypatch.setattr(audit_chains, "stitch", lambda parts, starts: (seen.append(parts), real(parts, starts))[1])
    assert ledger_audit(full=True) == []
    assert len(seen[0]) == 3  # three id ranges, each checked by a worker process

    first_of_a_range = Entry.objects.get(pk=int(seen[0][1].opens[str(theirs.pk)][0]))
    with immutability_lifted():  # a link checked by the stitching, not inside a range
        Entry.objects.filter(pk=first_of_a_range.pk).update(memo="edited")
    problems = ledger_audit(full=True)
    assert problems == [
        f"entry {first_of_a_range.pk} ({first_of_a_range.idempotency_key}): "
        "contents changed after it was written (digest chain broken)"
    ]


def test_the_incremental_check_reads_only_past_each_wallets_checkpoint(alice, bob, postgres):
    mine, theirs = funded_wallet(alice, 1000), funded_wallet(bob, 1000)
    _spend(mine, 3, "a")
    assert ledger_audit(full=True) == []
    wallet_credit(account=theirs, amount=5, kind=Entry.Kind.GRANT, idempotency_key="later")
    with transaction.atomic():
        parts = audit_chains.segments(incremental=True, outermost=False)
    assert [len(p.opens) for p in parts] == [1] and str(theirs.pk) in parts[0].opens
    with immutability_lifted():
        Entry.objects.filter(idempotency_key="later").update(amount=6)
    assert any("digest chain broken" in p for p in ledger_audit())


def test_the_checks_microseconds_are_the_ledgers(postgres):
    moments = ["2026-01-01 00:00:00+00", "2026-01-01 00:00:00.5+00", "2026-11-29 23:59:59.000042+01:00"]
    moments += ["1969-12-31 23:59:59.999999+00", "2262-04-11 23:47:16.854775+00"]
    expression = audit_chains.MICROS_SQL.format(e="").replace("created_at", "%s::timestamptz")
    with connection.cursor() as cursor:
        cursor.execute("SET TimeZone = 'America/St_Johns'")  # whatever the session's zone
        for text in moments:
            cursor.execute(f"SELECT ({expression})::text", [text])
            assert cursor.fetchone()[0] == str(digests.micros(dt.datetime.fromisoformat(text)))
        cursor.execute("RESET TimeZone")


def test_the_benchmarks_bulk_entries_chain_like_the_ledgers():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import ledger as bench_ledger

    data, heads = bench_ledger._chain_rows([42], 3, grants=7)
    head = ""
    for line in data.decode().splitlines():
        kind, debit, credit, amount, key, ref, memo, hold, wallet, created, digest = line.split("\t")
        entry = Entry(
            kind=kind,
            debit_account_id=int(debit),
            credit_account_id=int(credit),
            amount=int(amount),
            idempotency_key=key,
            reference=ref,
            memo=memo,
            hold_id=None if hold == "\\N" else int(hold),
            created_at=dt.datetime.fromisoformat(created),
        )
        assert digest == entry.chained_digest(head)
        head = digest
    assert heads == {42: head}
