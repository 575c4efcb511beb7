#!/usr/bin/env bash
# Runs bench/ledger.py against a throwaway PostgreSQL on a free loopback port.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
ensure_apt postgresql "$(pg_bindir)/initdb"
ensure_venv requirements-dev.txt
TMP=$(mktemp -d /tmp/panels-bench.XXXXXX); chmod 755 "$TMP"
trap 'stop_postgres "$TMP/pg"; rm -rf "$TMP"' EXIT
PG_PORT=$(free_port)
start_postgres "$PG_PORT" "$TMP/pg"
"$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres panels
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/panels"
"$PY" manage.py migrate -v0
"$PY" bench/ledger.py "$@"
