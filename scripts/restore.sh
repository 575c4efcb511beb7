#!/usr/bin/env bash
# Restores a backup made by scripts/backup.sh into the database that DATABASE_URL names,
# then runs `manage.py wallet audit` on it (exit 1 if any balance does not match its
# entries). The target must be new and empty (PostgreSQL: `createdb NAME` first; SQLite:
# a path with no file yet), so a restore never mixes with live data; --force replaces it.
# Stop the web and worker processes before restoring over a database they use.
#
#   DATABASE_URL=postgres://user@host/panels_restored scripts/restore.sh BACKUP.dump
#   DATABASE_URL=sqlite:////srv/panels/db.sqlite3 scripts/restore.sh BACKUP.sqlite3 [--force]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BACKUP=${1:-}
FORCE=${2:-}
[ -n "$BACKUP" ] && [ -f "$BACKUP" ] || { log "usage: DATABASE_URL=... scripts/restore.sh BACKUP [--force]"; exit 2; }
[ -z "$FORCE" ] || [ "$FORCE" = --force ] || { log "unknown option $FORCE"; exit 2; }
[ -n "${DATABASE_URL:-}" ] || { log "set DATABASE_URL to the database to restore into"; exit 2; }
URL=$DATABASE_URL
SCHEME=${URL%%://*}

pg_tool() {
  local bin
  bin=$(pg_bindir)
  if [ -n "$bin" ] && [ -x "$bin/$1" ]; then echo "$bin/$1"; else command -v "$1"; fi
}

case "$SCHEME" in
  postgres | postgresql | pgsql)
    PG_URL="postgresql://${URL#*://}"
    "$(pg_tool pg_restore)" --list "$BACKUP" >/dev/null || { log "$BACKUP is not a pg_dump archive"; exit 1; }
    TABLES=$("$(pg_tool psql)" --dbname="$PG_URL" -Atc \
      "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
    CLEAN=()
    if [ "$TABLES" != 0 ]; then
      [ -n "$FORCE" ] || { log "the target database has $TABLES tables; restore into an empty one or pass --force"; exit 1; }
      CLEAN=(--clean --if-exists)
    fi
    # One transaction: a restore that fails part-way leaves the target as it was.
    "$(pg_tool pg_restore)" --no-owner --no-privileges --exit-on-error --single-transaction "${CLEAN[@]}" \
      --dbname="$PG_URL" "$BACKUP"
    ;;
  sqlite)
    TARGET=${URL#sqlite://}
    TARGET=${TARGET%%\?*}
    TARGET=${TARGET#/}
    if [ -s "$TARGET" ] && [ -z "$FORCE" ]; then
      log "$TARGET exists; restore to a new path or pass --force"
      exit 1
    fi
    mkdir -p "$(dirname "$TARGET")"
    rm -f "$TARGET.partial"
    python3 - "$BACKUP" "$TARGET.partial" <<'PY'
import sqlite3
import sys

source = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
(result,) = source.execute("PRAGMA integrity_check").fetchone()
if result != "ok":
    sys.exit(f"the backup failed SQLite's integrity check: {result}")
target = sqlite3.connect(sys.argv[2])
source.backup(target)
target.close()
source.close()
PY
    rm -f "$TARGET-wal" "$TARGET-shm"
    mv "$TARGET.partial" "$TARGET"
    ;;
  *)
    log "DATABASE_URL must be a postgres:// or sqlite:// URL (got $SCHEME://...)"
    exit 2
    ;;
esac
log "restored $BACKUP; auditing the ledger"
cd "$ROOT"
"$PY" manage.py wallet audit
