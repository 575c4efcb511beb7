#!/usr/bin/env bash
# Installs what the tests need, starts throwaway Redis and PostgreSQL servers on free
# loopback ports, runs the whole suite on SQLite and the money paths on PostgreSQL.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k wallet`).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_apt redis-server redis-server
ensure_apt postgresql "$(pg_bindir)/initdb"
ensure_apt chromium /usr/bin/chromium
ensure_venv requirements-dev.txt

TMP=$(mktemp -d /tmp/panels-test.XXXXXX)
chmod 755 "$TMP"
cleanup() {
  stop_redis "$TMP/redis"
  stop_postgres "$TMP/pg"
  rm -rf "$TMP"
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
PG_PORT=$(free_port)
start_redis "$REDIS_PORT" "$TMP/redis"
start_postgres "$PG_PORT" "$TMP/pg"
log "Redis on 127.0.0.1:$REDIS_PORT, PostgreSQL on 127.0.0.1:$PG_PORT"

export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export TEST_REDIS_DIR="$TMP/redis" TEST_REDIS_PORT="$REDIS_PORT"
export TEST_PG_DIR="$TMP/pg" TEST_PG_PORT="$PG_PORT"
export PG_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/panels"
unset DATABASE_URL STRIPE_SECRET_KEY STRIPE_WEBHOOK_SECRET OPENAI_API_KEY ANTHROPIC_API_KEY GEMINI_API_KEY MISTRAL_API_KEY

if [ -z "${SKIP_LINT:-}" ]; then
  log "lint (ruff)"
  "$VENV/bin/ruff" check .
fi

log "suite on SQLite"
bash scripts/pytest_pass.sh SQLite "$@"

log "money paths on PostgreSQL"
status=0
DATABASE_URL="$PG_DATABASE_URL" bash scripts/pytest_pass.sh PostgreSQL "$@" -m money || status=$?
# 5 = no money test among those selected (e.g. a run limited to one file).
if [ "$status" != 0 ] && [ "$status" != 5 ]; then exit "$status"; fi
