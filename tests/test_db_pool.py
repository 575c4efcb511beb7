"""DB_POOL_MAX_SIZE: threads share a bounded pool of PostgreSQL connections."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("PG_DATABASE_URL", "")

SCRIPT = """
import os, threading, time, django, psycopg
django.setup()
from django.db import connection

def work():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.3)")
    connection.close()  # hands the connection back to the pool

threads = [threading.Thread(target=work) for _ in range(24)]
for t in threads: t.start()
time.sleep(0.15)
# Counted from outside the pool, while the threads hold or wait for connections.
with psycopg.connect(os.environ["DATABASE_URL"]) as watcher:
    busy = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ).fetchone()[0]
for t in threads: t.join()
print("backends", busy)
print("pool", connection.settings_dict["OPTIONS"]["pool"]["max_size"])
"""


@pytest.mark.skipif(not PG_URL, reason="needs the suite's PostgreSQL (scripts/test.sh sets PG_DATABASE_URL)")
def test_threads_share_a_bounded_pool():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "panels.settings",
        "DATABASE_URL": PG_URL.rsplit("/", 1)[0] + "/postgres",
        "DB_POOL_MAX_SIZE": "4",
        "DB_POOL_MIN_SIZE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split() for line in result.stdout.split("\n") if line)
    assert lines["pool"] == "4"
    assert 1 <= int(lines["backends"]) <= 4
