#!/usr/bin/env bash
# Sets everything up and runs Panels on its embedded defaults: SQLite, Redis on
# loopback, the demo model server, a Celery worker and the web server (uvicorn, as in
# production, static files by whitenoise; DEBUG stays off unless DEBUG=1 is set).
# Ctrl-C stops everything it started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_apt redis-server redis-server
ensure_venv requirements.txt

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
DEMO_PORT=${DEMO_PORT:-8100}
REDIS_PORT=${REDIS_PORT:-6379}
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"

export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export DEMO_MODEL_URL=${DEMO_MODEL_URL:-http://127.0.0.1:$DEMO_PORT/v1}
export SITE_URL=${SITE_URL:-http://$HOST:$PORT}

pids=()
cleanup() {
  trap - INT TERM EXIT
  log "stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${STARTED_REDIS:-}" ]; then stop_redis "$RUN_DIR/redis"; fi
}
trap cleanup INT TERM EXIT

if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "using the Redis already running on port $REDIS_PORT"
else
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  start_redis "$REDIS_PORT" "$RUN_DIR/redis"
  STARTED_REDIS=1
fi

log "migrating the database"
"$PY" manage.py migrate --no-input -v0
"$PY" manage.py createcachetable
"$PY" manage.py load_catalog
"$PY" manage.py collectstatic --no-input -v0
# Each open reply stream holds a socket and a Redis connection: allow thousands.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$PY" -m chat.demo_server --host 127.0.0.1 --port "$DEMO_PORT" --quiet &
pids+=($!)
"$VENV/bin/celery" -A panels worker -P threads -c "${WORKER_CONCURRENCY:-50}" --without-gossip --without-mingle \
  -l WARNING >"$RUN_DIR/worker.log" 2>&1 &
pids+=($!)
"$VENV/bin/uvicorn" panels.asgi:application --host "$HOST" --port "$PORT" --no-access-log \
  --timeout-graceful-shutdown 5 &
pids+=($!)

wait_port "$PORT" 300 || { log "the web server did not start"; exit 1; }
log "Panels is running: open $SITE_URL  (worker log: .run/worker.log; Ctrl-C stops everything)"
wait -n "${pids[@]}" || true
log "a process exited; shutting down"
