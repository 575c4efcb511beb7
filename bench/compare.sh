#!/usr/bin/env bash
# Panels side by side with the LiteLLM proxy, one run on this machine (bench/compare.py):
# throwaway PostgreSQL with durable commits and Redis, the demo model server (no delay
# of its own), the LiteLLM proxy in front of it (installed into bench/.litellm-venv: a
# benchmark-only dependency, never in requirements), and Panels: one uvicorn web process
# (the /v1 path and the chat API) and one Celery worker (the chat path's replies).
# Arguments go to bench/compare.py (e.g. --runs 50 --seconds 5).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
ensure_apt redis-server redis-server
ensure_apt postgresql "$(pg_bindir)/initdb"
ensure_venv requirements-dev.txt

LITELLM_VERSION=1.105.7  # the newest whose [proxy] extra resolves from PyPI here (1.108+ pins unpublished litellm-proxy-extras)
LITELLM_VENV="$ROOT/bench/.litellm-venv"
# Through the venv's python, not its scripts: a virtualenv that was moved (or reached by a
# symlink) keeps scripts whose #! line names its old place.
litellm_version() { "$LITELLM_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('litellm'))" 2>/dev/null || true; }
if [ "$(litellm_version)" != "$LITELLM_VERSION" ]; then
  log "installing the LiteLLM proxy $LITELLM_VERSION into bench/.litellm-venv"
  python3 -m venv "$LITELLM_VENV"
  "$LITELLM_VENV/bin/python" -m pip install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
fi

TMP=$(mktemp -d /tmp/panels-compare.XXXXXX); chmod 755 "$TMP"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_redis "$TMP/redis"; stop_postgres "$TMP/pg"; rm -rf "$TMP"
}
trap cleanup EXIT

PG_PORT=$(free_port); REDIS_PORT=$(free_port); WEB_PORT=$(free_port); DEMO_PORT=$(free_port); LITELLM_PORT=$(free_port)
PG_DURABLE=1 PG_MAX_CONNECTIONS=400 start_postgres "$PG_PORT" "$TMP/pg"
start_redis "$REDIS_PORT" "$TMP/redis"
"$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres panels
durable=$("$(pg_bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc "SHOW fsync" panels)/$("$(pg_bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc "SHOW synchronous_commit" panels)
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/panels"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export DEMO_MODEL_URL="http://127.0.0.1:$DEMO_PORT/v1"
export DEBUG=false LOG_LEVEL=WARNING RATE_SEND=1000000/min RATE_V1=1000000/min MAX_REPLIES_IN_FLIGHT_PER_USER=0 DB_POOL_MAX_SIZE=${DB_POOL_MAX_SIZE:-40}

"$PY" manage.py migrate -v0
"$PY" manage.py createcachetable
"$PY" manage.py load_catalog >/dev/null
# One account (a user, a wallet and an API key) per concurrent user, as 50 people would be:
# a user's own sends take turns on the user's row (chat/send_sql.py), so 50 clients sharing
# one account measure one person with 50 tabs. BENCH_ACCOUNTS=1 measures that instead.
BENCH_ACCOUNTS=${BENCH_ACCOUNTS:-50}
"$PY" manage.py shell -v 0 -c "
from django.contrib.auth import get_user_model
from allauth.account.models import EmailAddress
from panels.models import ApiKey
from wallet.services import wallet_for_user, wallet_grant
for i in range($BENCH_ACCOUNTS):
    u = get_user_model().objects.create_user(username=f'bench{i}', email=f'bench{i}@example.com', password='x')
    EmailAddress.objects.create(user=u, email=u.email, verified=True, primary=True)
    wallet_grant(account=wallet_for_user(user=u), amount=10**13, reason='benchmark', actor='bench', idempotency_key=f'bench{i}')
    print(ApiKey.issue(user=u, name='bench')[1])
" >"$TMP/keys"

cat >"$TMP/litellm.yaml" <<YAML
model_list:
  - model_name: demo
    litellm_params:
      model: openai/demo
      api_base: $DEMO_MODEL_URL
      api_key: demo
general_settings:
  master_key: sk-bench
YAML

"$PY" -m chat.demo_server --host 127.0.0.1 --port "$DEMO_PORT" --quiet &
pids+=($!); DEMO_PID=$!
"$VENV/bin/celery" -A panels worker -P threads -c "${WORKER_THREADS:-200}" --without-gossip --without-mingle \
  --without-heartbeat -l WARNING >"$TMP/worker.log" 2>&1 &
pids+=($!); WORKER_PID=$!
# The same server stack as the LiteLLM proxy's: one uvicorn worker on uvloop with h11 (its
# CLI picks uvloop; httptools is in neither environment), no access log.
"$VENV/bin/uvicorn" panels.asgi:application --host 127.0.0.1 --port "$WEB_PORT" --log-level warning --workers 1 \
  --loop uvloop --http h11 --no-access-log --timeout-keep-alive 30 >"$TMP/web.log" 2>&1 &
pids+=($!); WEB_PID=$!
(cd "$TMP" && exec env -u DATABASE_URL -u REDIS_URL LITELLM_LOG=ERROR "$LITELLM_VENV/bin/python" -c "import sys; from litellm import run_server; sys.argv[0] = 'litellm'; sys.exit(run_server())" --config "$TMP/litellm.yaml" --host 127.0.0.1 \
  --port "$LITELLM_PORT" --num_workers 1 >"$TMP/litellm.log" 2>&1) &
pids+=($!); LITELLM_PID=$!
# Tries of 0.1 s: the web process loads Auto's encoder at start, LiteLLM its whole proxy.
for p in "$WEB_PORT:web" "$DEMO_PORT:demo" "$LITELLM_PORT:litellm"; do
  wait_port "${p%%:*}" 3000 || { log "${p#*:} did not start"; tail -n 20 "$TMP"/*.log; exit 1; }
done
sleep 3
MACHINE="$(nproc) cores, $(free -g | awk '/Mem/{print $2}') GB, $(uname -m); PostgreSQL fsync/synchronous_commit $durable"
echo "machine: $MACHINE; $(date -u +%Y-%m-%d)"
# CPU per reply of each process (PostgreSQL: the postmaster and its backends).
PROCS="web=$WEB_PID,worker=$WORKER_PID,litellm=$LITELLM_PID,demo=$DEMO_PID,redis=$(cat "$TMP/redis/redis.pid"),postgres=$(head -n 1 "$TMP/pg/data/postmaster.pid")"
"$PY" bench/compare.py --demo "$DEMO_MODEL_URL" --litellm "http://127.0.0.1:$LITELLM_PORT/v1" \
  --panels "http://127.0.0.1:$WEB_PORT" --keys-file "$TMP/keys" --machine "$MACHINE" --procs "$PROCS" "$@"
