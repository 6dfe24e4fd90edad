#!/usr/bin/env bash
# Starts (or finds running) a local S3-protocol server (s3rver) keeping its objects in DIR.
# Usage: hack/s3/start.sh DIR [PORT [BUCKET]]   prints http://127.0.0.1:PORT on stdout
#
# Listens on 127.0.0.1 only; PORT defaults to 4568 and BUCKET (created if missing) to "dittofs".
# Credentials: access key id S3RVER, secret S3RVER. Idempotent: with a server already running for
# DIR (DIR/s3rver.pid) it prints its endpoint again. Logs go to DIR/s3rver.log. Stop it with
# hack/s3/stop.sh DIR. Needs the npm packages (make deps).
set -euo pipefail

die() {
  echo "hack/s3/start.sh: $*" >&2
  exit 1
}
[ $# -ge 1 ] && [ $# -le 3 ] && [ -n "$1" ] || die "usage: $0 DIR [PORT [BUCKET]]"
mkdir -p "$1"
DIR=$(cd "$1" && pwd -P)
PORT=${2:-4568}
BUCKET=${3:-dittofs}
PIDFILE="$DIR/s3rver.pid"
LOG="$DIR/s3rver.log"
ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "http://127.0.0.1:$(cat "$DIR/port")"
  exit 0
fi

cd "$ROOT"
nohup node --import tsx hack/s3/s3rver.mts "$PORT" "$DIR/data" "$BUCKET" >"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
echo "$PORT" >"$DIR/port"
for _ in $(seq 1 100); do
  if grep -q '^s3rver ready ' "$LOG" 2>/dev/null; then
    echo "http://127.0.0.1:$PORT"
    exit 0
  fi
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
  sleep 0.2
done
kill "$(cat "$PIDFILE")" 2>/dev/null || true
rm -f "$PIDFILE"
die "s3rver did not start; $LOG says:
$(tail -n 20 "$LOG")"
