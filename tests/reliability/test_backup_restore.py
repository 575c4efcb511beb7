"""scripts/backup.sh and scripts/restore.sh: a database with a ledger, backed up and
restored into a fresh database, audits clean with the same balances."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.reliability.conftest import ROOT, TEMPLATE_DB, base_env, manage, report, seed, sql

pytestmark = pytest.mark.slow

BALANCES = (
    "SELECT u.email, a.balance, a.held FROM wallet_account a JOIN auth_user u ON u.id = a.user_id ORDER BY u.email"
)
COUNTS = (
    "SELECT (SELECT count(*) FROM wallet_entry), (SELECT count(*) FROM wallet_hold), "
    "(SELECT count(*) FROM wallet_topup), (SELECT count(*) FROM chat_modelspec)"
)


def script(name: str, database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args],
        cwd=ROOT,
        env=base_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=180,
    )


def sqlite_rows(path: Path, query: str) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()


def test_a_postgresql_backup_restores_into_a_fresh_database_with_the_same_audited_ledger(pg, tmp_path):
    started = time.monotonic()
    source = pg.create_database(f"rel_src_{uuid.uuid4().hex[:8]}", template=TEMPLATE_DB)
    people = seed(source, "ledger", "--count", "6")
    before, counts = sql(source, BALANCES), sql(source, COUNTS)[0]
    assert len(before) == len(people) and any(held for _, _, held in before)  # pending holds too

    dump = tmp_path / "panels.dump"
    made = script("backup.sh", source, str(dump))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(dump) and dump.stat().st_size > 0

    target = pg.create_database(f"rel_dst_{uuid.uuid4().hex[:8]}")  # empty: no template
    restored = script("restore.sh", target, str(dump))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "Audit clean" in restored.stdout

    assert sql(target, BALANCES) == before
    assert sql(target, COUNTS)[0] == counts
    audit = manage(target, "wallet", "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    # A restore never lands on top of live data unless asked to.
    again = script("restore.sh", target, str(dump))
    assert again.returncode != 0 and "empty one or pass --force" in again.stderr
    forced = script("restore.sh", target, str(dump), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sql(target, BALANCES) == before

    report(
        "backup and restore (PostgreSQL)",
        users=len(before),
        entries=counts[0],
        holds=counts[1],
        topups=counts[2],
        backup_kb=round(dump.stat().st_size / 1024),
        duration_s=round(time.monotonic() - started, 1),
        audit="clean, same balances",
    )


def test_a_sqlite_backup_restores_into_a_new_file_with_the_same_audited_ledger(tmp_path):
    started = time.monotonic()
    source = tmp_path / "live.sqlite3"
    url = f"sqlite:///{source}"
    migrated = manage(url, "migrate", "--no-input", "-v0")
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    people = seed(url, "ledger", "--count", "4")
    before, counts = sqlite_rows(source, BALANCES), sqlite_rows(source, COUNTS)[0]
    assert len(before) == len(people)

    copy = tmp_path / "backup.sqlite3"
    made = script("backup.sh", url, str(copy))
    assert made.returncode == 0, made.stderr
    target = tmp_path / "restored" / "db.sqlite3"
    restored = script("restore.sh", f"sqlite:///{target}", str(copy))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "Audit clean" in restored.stdout
    assert sqlite_rows(target, BALANCES) == before
    assert sqlite_rows(target, COUNTS)[0] == counts
    refused = script("restore.sh", f"sqlite:///{target}", str(copy))
    assert refused.returncode != 0 and "pass --force" in refused.stderr

    report(
        "backup and restore (SQLite)",
        users=len(before),
        entries=counts[0],
        holds=counts[1],
        duration_s=round(time.monotonic() - started, 1),
        audit="clean, same balances",
    )
