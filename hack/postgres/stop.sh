#!/usr/bin/env bash
# Stops the private PostgreSQL cluster that hack/postgres/start.sh started in DIR.
# Usage: hack/postgres/stop.sh DIR [immediate]
# With "immediate": pg_ctl stop -m immediate at once (a crash: WAL not yet flushed is lost), for tests.
# Idempotent: a cluster that is not running (or a DIR without one) is fine. A fast shutdown that
# does not finish in 30 s is followed by an immediate one. DIR itself is left in place.
set -euo pipefail

log() { echo "hack/postgres/stop.sh: $*" >&2; }

[ $# -ge 1 ] && [ $# -le 2 ] && [ -n "$1" ] && { [ $# -eq 1 ] || [ "$2" = immediate ]; } || {
  log "usage: $0 DIR [immediate]"
  exit 2
}
MODE=${2:-fast}
[ -d "$1" ] || exit 0
DIR=$(cd "$1" && pwd -P)
DATA="$DIR/data"
[ -f "$DATA/PG_VERSION" ] || exit 0

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$BIN" ] && [ -x "$BIN/pg_ctl" ] || {
  log "no /usr/lib/postgresql/*/bin/pg_ctl"
  exit 1
}

if [ "$(id -u)" -eq 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 || exit 0
if [ "$MODE" = immediate ]; then
  as_pg timeout 45 "$BIN/pg_ctl" -D "$DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
elif ! as_pg timeout 45 "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null 2>&1; then
  log "fast shutdown did not finish; shutting down immediately"
  as_pg timeout 45 "$BIN/pg_ctl" -D "$DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
fi
if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "PostgreSQL in $DATA is still running"
  exit 1
fi
