#!/usr/bin/env bash
# Ledger benchmark on a throwaway PostgreSQL on a free loopback port (on disk).
# First with durable commits (fsync, synchronous_commit, full_page_writes on): the
# figures that count. Then, unless --durable-only, the pair rates again with fsync
# off, printed as a second, labelled line. The last line is one JSON object.
#   bash bench/ledger.sh [--seconds 5] [--workers 8] [--batch-workers 2] [--batch-threads 64]
#                        [--warmup 2] [--audit-entries 10000000] [--durable-only]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
ensure_apt postgresql "$(pg_bindir)/initdb"
ensure_venv requirements-dev.txt
ARGS=() DURABLE_ONLY=0
for arg in "$@"; do
  if [ "$arg" = --durable-only ]; then DURABLE_ONLY=1; else ARGS+=("$arg"); fi
done
TMP=$(mktemp -d /var/tmp/panels-bench.XXXXXX); chmod 755 "$TMP"
trap 'stop_postgres "$TMP/pg"; stop_postgres "$TMP/pg2"; rm -rf "$TMP"' EXIT

run_on() {  # run_on DIR DURABLE ARGS...: a fresh cluster, migrated, then the benchmark
  local dir=$1 durable=$2 port; shift 2
  port=$(free_port)
  PG_DURABLE=$durable PG_EXTRA_OPTS="-c shared_buffers=512MB -c max_wal_size=4GB" start_postgres "$port" "$dir"
  "$(pg_bindir)/createdb" -h 127.0.0.1 -p "$port" -U postgres panels
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/panels"
  "$PY" manage.py migrate -v0
  "$PY" bench/ledger.py "$@"
  stop_postgres "$dir"
}

run_on "$TMP/pg" 1 "${ARGS[@]}" --json-out "$TMP/durable.json" | sed '$d'
if [ "$DURABLE_ONLY" = 0 ]; then
  echo "--- second run, fsync OFF (not durable; for comparison only) ---"
  run_on "$TMP/pg2" 0 "${ARGS[@]}" --audit-entries 0 --json-out "$TMP/nosync.json" | sed '$d'
fi
"$PY" - "$TMP/durable.json" "$TMP/nosync.json" <<'PY'
import json, sys
from pathlib import Path
result = json.loads(Path(sys.argv[1]).read_text())
other = Path(sys.argv[2])
if other.exists():
    nosync = json.loads(other.read_text())
    result["fsync_off"] = {k: v for k, v in nosync.items() if k.endswith("pairs_per_s")}
print(json.dumps(result))
PY
