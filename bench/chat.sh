#!/usr/bin/env bash
# Runs bench/chat.py against a full local stack: throwaway PostgreSQL and Redis,
# the demo model server (no delay of its own), one Celery worker process and one
# uvicorn web process. Arguments go to bench/chat.py (e.g. --skip streams).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
ensure_apt redis-server redis-server
ensure_apt postgresql "$(pg_bindir)/initdb"
ensure_venv requirements-dev.txt

TMP=$(mktemp -d /tmp/panels-bench.XXXXXX); chmod 755 "$TMP"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_redis "$TMP/redis"; stop_postgres "$TMP/pg"; rm -rf "$TMP"
}
trap cleanup EXIT

PG_PORT=$(free_port); REDIS_PORT=$(free_port); WEB_PORT=$(free_port); DEMO_PORT=$(free_port)
PG_MAX_CONNECTIONS=1200 start_postgres "$PG_PORT" "$TMP/pg"
start_redis "$REDIS_PORT" "$TMP/redis"
"$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres panels
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/panels"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export DEMO_MODEL_URL="http://127.0.0.1:$DEMO_PORT/v1"
export DEBUG=false LOG_LEVEL=WARNING RATE_SEND=1000000/min MAX_REPLIES_IN_FLIGHT_PER_USER=0 DB_POOL_MAX_SIZE=${DB_POOL_MAX_SIZE:-40}

"$PY" manage.py migrate -v0
"$PY" manage.py createcachetable
"$PY" manage.py load_catalog >/dev/null
"$PY" manage.py shell -c "
from django.contrib.auth import get_user_model
from allauth.account.models import EmailAddress
from wallet.services import wallet_for_user, wallet_grant
u = get_user_model().objects.create_user(username='bench', email='bench@example.com', password='x')
EmailAddress.objects.create(user=u, email=u.email, verified=True, primary=True)
wallet_grant(account=wallet_for_user(user=u), amount=10**13, reason='benchmark', actor='bench', idempotency_key='bench')
"
KEY=$("$PY" manage.py apikey create bench@example.com)

"$PY" -m chat.demo_server --host 127.0.0.1 --port "$DEMO_PORT" --quiet &
pids+=($!)
"$VENV/bin/celery" -A panels worker -P threads -c "${WORKER_THREADS:-1100}" --without-gossip --without-mingle \
  --without-heartbeat -l WARNING >"$TMP/worker.log" 2>&1 &
WORKER_PID=$!
pids+=($WORKER_PID)
"$VENV/bin/uvicorn" panels.asgi:application --host 127.0.0.1 --port "$WEB_PORT" --log-level warning --workers "${WEB_WORKERS:-1}" \
  --no-access-log --timeout-keep-alive 30 &
pids+=($!)
wait_port "$WEB_PORT" 300; wait_port "$DEMO_PORT" 100
sleep 3
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GB; $(date -u +%Y-%m-%d)"
"$PY" bench/chat.py --base "http://127.0.0.1:$WEB_PORT" --demo "$DEMO_MODEL_URL" --key "$KEY" \
  --worker-pid "$WORKER_PID" "$@"
