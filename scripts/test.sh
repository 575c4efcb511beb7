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

# run_pass NAME PYTEST-ARGS...: a pass whose interpreter is killed by a signal (a
# crash, not a test failure) is reported loudly and run once more.
run_pass() {
  local name=$1 status=0; shift
  "$PY" -X faulthandler -m pytest -q -p no:cacheprovider "$@" || status=$?
  if [ "$status" -ge 128 ]; then
    log "WARNING: the $name pass crashed (signal $((status - 128))); running it once more"
    status=0
    "$PY" -X faulthandler -m pytest -q -p no:cacheprovider "$@" || status=$?
  fi
  return "$status"
}

log "suite on SQLite"
run_pass SQLite "$@"

log "money paths on PostgreSQL"
status=0
DATABASE_URL="$PG_DATABASE_URL" run_pass PostgreSQL "$@" -m money || status=$?
# 5 = no money test among those selected (e.g. a run limited to one file).
if [ "$status" != 0 ] && [ "$status" != 5 ]; then exit "$status"; fi
