#!/usr/bin/env bash
# Stops the s3rver that hack/s3/start.sh started for DIR. Idempotent; DIR and its objects stay.
# Usage: hack/s3/stop.sh DIR
set -euo pipefail

[ $# -eq 1 ] && [ -n "$1" ] || {
  echo "usage: $0 DIR" >&2
  exit 2
}
PIDFILE="$1/s3rver.pid"
[ -f "$PIDFILE" ] || exit 0
PID=$(cat "$PIDFILE")
if kill "$PID" 2>/dev/null; then
  for _ in $(seq 1 50); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$PID" 2>/dev/null || true
fi
rm -f "$PIDFILE"
