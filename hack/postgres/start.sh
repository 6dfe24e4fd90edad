#!/usr/bin/env bash
# Starts (or finds running) a private PostgreSQL cluster in DIR for development and tests.
# Usage: hack/postgres/start.sh DIR      prints postgres://postgres@127.0.0.1:PORT/dittofs on stdout
#
# Idempotent: the first call installs Debian's postgresql if needed, runs initdb into DIR/data,
# picks a free port (kept in DIR/port so restarts reuse it) and creates the `dittofs` database;
# later calls start the cluster if it is stopped and print the same URL. The cluster listens on
# 127.0.0.1 only, keeps its unix socket inside DIR, trusts local connections and keeps fsync on.
# As root it runs as the `postgres` system user (initdb refuses root) and DIR is chowned to it.
# Every step is bounded in time. Stop it with hack/postgres/stop.sh DIR.
set -euo pipefail

log() { echo "hack/postgres/start.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 DIR"
mkdir -p "$1"
DIR=$(cd "$1" && pwd -P)
DATA="$DIR/data"
LOGFILE="$DIR/postgres.log"
PORTFILE="$DIR/port"
# A unix socket path is limited to 107 bytes: ".s.PGSQL.NNNNN" must fit after DIR.
[ ${#DIR} -le 80 ] || die "DIR is too long for a unix socket path (${#DIR} > 80 bytes): $DIR"

find_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
  return 0
}

BIN=$(find_bin)
if [ -z "$BIN" ]; then
  log "installing Debian's postgresql"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
    timeout 300 $SUDO apt-get update -qq
  fi
  # Don't let the package start the system cluster; nothing here depends on it.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  timeout 600 $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  BIN=$(find_bin)
  [ -n "$BIN" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
fi

# Run server-side tools as the postgres system user when we are root.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' system user"
  chown -R postgres: "$DIR"
  chmod 700 "$DIR"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

running() { as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

free_port() {
  if command -v node >/dev/null 2>&1; then
    node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
  else
    # Fallback: a random high port nothing answers on.
    local p
    for _ in $(seq 1 50); do
      p=$((20000 + RANDOM % 40000))
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "$p"
        return 0
      fi
    done
    return 1
  fi
}

if [ ! -f "$DATA/PG_VERSION" ]; then
  log "initdb into $DATA"
  rm -rf "$DATA"
  as_pg timeout 120 "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-instructions >"$DIR/initdb.log" 2>&1 ||
    as_pg timeout 120 "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C --no-instructions >"$DIR/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 20 "$DIR/initdb.log")"
  cat >"$DATA/pg_hba.conf" <<HBA
# DittoFS private test cluster: the unix socket lives in $DIR (mode 0700) and TCP is loopback only.
local all all trust
host  all all 127.0.0.1/32 trust
HBA
  cat >>"$DATA/postgresql.conf" <<CONF

# --- hack/postgres/start.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
shared_buffers = 64MB
logging_collector = off
include_if_exists = 'port.conf'
CONF
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DATA/pg_hba.conf" "$DATA/postgresql.conf"; fi
fi

write_port() {
  echo "$1" >"$PORTFILE"
  echo "port = $1" >"$DATA/port.conf"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PORTFILE" "$DATA/port.conf"; fi
}

start_cluster() {
  as_pg timeout 90 "$BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t 60 start >/dev/null
}

if ! running; then
  started=0
  if [ -f "$PORTFILE" ]; then
    # Reuse the recorded port: clients reconnect to the same URL after a restart.
    write_port "$(cat "$PORTFILE")"
    start_cluster && started=1
  else
    # A fresh port can be taken between the probe and the bind: try a few.
    for _ in 1 2 3; do
      write_port "$(free_port)"
      if start_cluster; then
        started=1
        break
      fi
      grep -q 'could not bind\|Address already in use' "$LOGFILE" 2>/dev/null || break
      rm -f "$PORTFILE"
    done
  fi
  [ "$started" -eq 1 ] || die "PostgreSQL did not start; last lines of $LOGFILE:
$(tail -n 30 "$LOGFILE" 2>/dev/null)"
fi

PORT=$(cat "$PORTFILE")
PSQL=("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
export PGCONNECT_TIMEOUT=10
ok=0
for _ in $(seq 1 50); do
  if timeout 15 "${PSQL[@]}" -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    ok=1
    break
  fi
  sleep 0.2
done
[ "$ok" -eq 1 ] || die "PostgreSQL on 127.0.0.1:$PORT does not answer; see $LOGFILE"
if [ "$(timeout 15 "${PSQL[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'dittofs'")" != "1" ]; then
  timeout 30 "${PSQL[@]}" -d postgres -c 'CREATE DATABASE dittofs' >/dev/null
fi

echo "postgres://postgres@127.0.0.1:$PORT/dittofs"
