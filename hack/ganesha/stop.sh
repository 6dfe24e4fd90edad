#!/usr/bin/env bash
# Stops the nfs-ganesha started by hack/ganesha/start.sh DIR (and rpcbind, if that
# script started it and did not get to stop it). Idempotent; never touches processes
# it did not start: only the pids recorded in DIR, after checking their command lines.
#
# Usage: hack/ganesha/stop.sh DIR
set -euo pipefail

log() { echo "hack/ganesha/stop.sh: $*" >&2; }
[ $# -eq 1 ] || {
  echo "usage: $0 DIR" >&2
  exit 2
}
DIR=$(realpath -m -- "$1")

# shellcheck source=hack/ganesha/lib.sh
. "$(dirname "$0")/lib.sh"

# SIGTERM the process recorded in pidfile $1 (if its command line contains $2), wait up to
# 15 s, then SIGKILL. $3 names it in messages.
stop_recorded() {
  local pidfile=$1 name=$2 label=$3 pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if ! alive "$pid" "$name"; then
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    if ! alive "$pid" "$name"; then
      rm -f "$pidfile"
      log "stopped $label (pid $pid)"
      return 0
    fi
    sleep 0.1
  done
  log "$label (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    if ! alive "$pid" "$name"; then
      rm -f "$pidfile"
      return 0
    fi
    sleep 0.1
  done
  log "$label (pid $pid) is still alive after SIGKILL"
  return 1
}

if [ ! -d "$DIR" ]; then
  log "$DIR does not exist; nothing to stop"
  exit 0
fi
rc=0
if [ -f "$DIR/ganesha.pid" ]; then
  stop_recorded "$DIR/ganesha.pid" "ganesha.nfsd -F -f $DIR/ganesha.conf " ganesha.nfsd || rc=1
else
  log "no ganesha.pid in $DIR; ganesha not running"
fi
stop_recorded "$DIR/rpcbind.pid" "rpcbind -f -w" rpcbind || rc=1
exit $rc
