# Shared by run.sh and test.sh: install what is missing, start throwaway servers.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { printf '\033[1m[panels]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_apt PACKAGE COMMAND...: install the Debian package when none of the commands exist.
ensure_apt() {
  local pkg=$1; shift
  local cmd
  for cmd in "$@"; do
    if command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ]; then return 0; fi
  done
  if [ -z "${_APT_UPDATED:-}" ]; then
    log "apt-get update"
    as_root apt-get update -q >/dev/null
    _APT_UPDATED=1
  fi
  log "installing $pkg from Debian's packages"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "$pkg" >/dev/null
}

pg_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# ensure_venv REQUIREMENTS: create .venv and install requirements when they changed.
ensure_venv() {
  local req=$1
  if [ ! -x "$PY" ]; then
    log "creating virtualenv in .venv"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$(basename "$req")"
  local sum
  sum=$(cat "$ROOT/requirements.txt" "$ROOT/$req" | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    log "installing Python packages from $req"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/$req"
    echo "$sum" >"$stamp"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
  local port=$1 tries=${2:-100}
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.1
  done
}

# start_redis PORT DIR: a Redis on loopback that keeps nothing on disk.
start_redis() {
  local port=$1 dir=$2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --maxmemory-policy noeviction --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  wait_port "$port" || { log "Redis did not start: $(tail -n 5 "$dir/redis.log")"; return 1; }
}

stop_redis() {
  local dir=$1
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
}

# start_postgres PORT DIR: a throwaway PostgreSQL cluster on loopback, trust auth.
# Commits are not flushed to disk (fast tests) unless PG_DURABLE=1 (benchmarks).
start_postgres() {
  local port=$1 dir=$2 bin durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${PG_DURABLE:-0}" = 1 ] && durability="-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
  bin=$(pg_bindir)
  mkdir -p "$dir"
  local run=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
    || { log "initdb failed: $(tail -n 5 "$dir/initdb.log")"; return 1; }
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $durability -c max_connections=${PG_MAX_CONNECTIONS:-400} ${PG_EXTRA_OPTS:-}" \
    start >/dev/null || { log "PostgreSQL did not start: $(tail -n 5 "$dir/pg.log")"; return 1; }
}

stop_postgres() {
  local dir=$1 bin
  bin=$(pg_bindir)
  [ -d "$dir/data" ] || return 0
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  else
    "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  fi
}
