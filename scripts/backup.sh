#!/usr/bin/env bash
# Backs up the database that DATABASE_URL names (the variable Panels itself reads;
# unset: the SQLite file db.sqlite3), while Panels keeps running:
#   PostgreSQL: pg_dump's custom format (compressed, one consistent snapshot);
#   SQLite: an online copy through SQLite's backup API.
# The backup is written under a temporary name, checked, then renamed, so a file with
# the final name is always complete. Restore it with scripts/restore.sh.
#
#   scripts/backup.sh [OUTPUT]      default: backups/panels-<UTC time>.dump or .sqlite3
set -euo pipefail
source "$(dirname "$0")/lib.sh"

URL=${DATABASE_URL:-sqlite:///$ROOT/db.sqlite3}
SCHEME=${URL%%://*}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

pg_tool() {
  local bin
  bin=$(pg_bindir)
  if [ -n "$bin" ] && [ -x "$bin/$1" ]; then echo "$bin/$1"; else command -v "$1"; fi
}

# sqlite:///relative/path or sqlite:////absolute/path, as dj-database-url reads them.
sqlite_path() {
  local rest=${1#sqlite://}
  rest=${rest%%\?*}
  echo "${rest#/}"
}

case "$SCHEME" in
  postgres | postgresql | pgsql)
    OUT=${1:-$ROOT/backups/panels-$STAMP.dump}
    mkdir -p "$(dirname "$OUT")"
    # libpq reads postgres:// and postgresql:// URLs; pgsql:// is dj-database-url's alias.
    PG_URL="postgresql://${URL#*://}"
    "$(pg_tool pg_dump)" --format=custom --no-owner --no-privileges --file="$OUT.partial" --dbname="$PG_URL"
    "$(pg_tool pg_restore)" --list "$OUT.partial" >/dev/null
    mv "$OUT.partial" "$OUT"
    ;;
  sqlite)
    SRC=$(sqlite_path "$URL")
    [ -f "$SRC" ] || { log "no SQLite database at $SRC"; exit 1; }
    OUT=${1:-$ROOT/backups/panels-$STAMP.sqlite3}
    mkdir -p "$(dirname "$OUT")"
    rm -f "$OUT.partial"
    python3 - "$SRC" "$OUT.partial" <<'PY'
import sqlite3
import sys

source = sqlite3.connect(sys.argv[1], timeout=30)
target = sqlite3.connect(sys.argv[2])
source.backup(target)  # page by page; writers wait only for each step
target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
(result,) = target.execute("PRAGMA integrity_check").fetchone()
if result != "ok":
    sys.exit(f"the copy failed SQLite's integrity check: {result}")
target.close()
source.close()
PY
    mv "$OUT.partial" "$OUT"
    ;;
  *)
    log "DATABASE_URL must be a postgres:// or sqlite:// URL (got $SCHEME://...)"
    exit 2
    ;;
esac
log "backup written: $OUT ($(du -h "$OUT" | cut -f1))"
echo "$OUT"
