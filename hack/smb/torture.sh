#!/usr/bin/env bash
# smbtorture (Debian samba-testsuite 4.17) against DittoFS and against Samba's smbd as the
# reference, suite by suite, and a markdown table of subtest counts (pass/fail/skip) per server.
# Run `hack/smb/torture.sh --help` for the options. The suite lists of issue 13 live in
# hack/smb/suites.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=hack/smb/suites.sh
source "$HERE/suites.sh"
# shellcheck source=hack/smb/lib.sh
source "$HERE/lib.sh"

usage() {
  cat <<'EOF'
Usage: hack/smb/torture.sh [options] [SUITE...]

Runs smbtorture suites against DittoFS and against Samba's smbd (the reference) and prints a
markdown table: per suite, the subtests that passed/failed/were skipped on each server.

What to run (default: --list required):
  SUITE...               smbtorture names: smb2.lock, smb2.lock.cancel, or
                         smb2.lock!replay_*  (a suite minus subtests matching a glob; quote it)
                         smb2.notify:valid-req,tdis1  (only those subtests)
  --list NAME            a named list (several --list add up): required, smbd-fails, report,
                         all (the three), gate (what test/e2e/smbtorture.test.ts runs)
  --show-lists           print the named lists and exit

Servers (default: both, each started by this script on free loopback ports, stopped at the end):
  --only dittofs|smbd    run against one server only
  --dittofs-port P       use a DittoFS already listening for SMB on --host:P (not started here);
                         give --user/--password of a control-plane user with read-write on --share
  --smbd-port P          use an smbd already listening on --host:P (same user/password/share)
  --host H               server address for --dittofs-port/--smbd-port (default 127.0.0.1)
  --share NAME           share name (default export)
  --user U --password W  the (non-root) user; default torture / Torture-Passw0rd. Servers started
                         here get that user (a unix user too for smbd, created if missing).
  --dist DIR             DittoFS build to start (default: server/dist of this tree; run make build)

Modes:
  --signing              only with --option='client signing=required'
  --encrypt              only with --option='client smb encrypt=required' (3.x: with --max-protocol)
  --both-modes           plain, then with signing required
  --max-protocol P       client max protocol (default SMB2_10: what DittoFS offers; smbd started
                         here is capped there too)

Output and limits:
  --timeout S            wall-clock bound per smbtorture run (default 300; a hang is killed and
                         counted as a failure of the subtest it was in)
  --out FILE             also write the table (with date and commit) to FILE
  --logs DIR             each run's smbtorture output goes there (default: a new
                         /tmp/dittofs-torture-logs-* dir, kept and printed)
  --jobs N               suites run N at a time per server (default 1); N>1 needs private
                         per-job shares, so it works only for servers started here
  --keep                 leave the temp dirs (server logs) in place
  -h, --help             this text

Examples:
  hack/smb/torture.sh smb2.connect smb2.read
  hack/smb/torture.sh --list all --both-modes --out /tmp/torture.md
  hack/smb/torture.sh --only dittofs --dittofs-port 12445 --user alice --password secret smb2.lock
EOF
}

ONLY=""
DFS_PORT=""
SMBD_PORT=""
HOST=127.0.0.1
SHARE=export
TUSER=torture
TPASS='Torture-Passw0rd'
DIST="$REPO/server/dist"
MODES=(plain)
MAXPROTO=SMB2_10
TIMEOUT=300
OUT=""
LOGS=""
JOBS=1
KEEP=0
SPECS=()

while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --show-lists) torture_show_lists; exit 0 ;;
    --list) mapfile -t -O "${#SPECS[@]}" SPECS < <(torture_list "$2"); shift ;;
    --only) ONLY=$2; shift ;;
    --dittofs-port) DFS_PORT=$2; shift ;;
    --smbd-port) SMBD_PORT=$2; shift ;;
    --host) HOST=$2; shift ;;
    --share) SHARE=$2; shift ;;
    --user) TUSER=$2; shift ;;
    --password) TPASS=$2; shift ;;
    --dist) DIST=$2; shift ;;
    --signing) MODES=(signed) ;;
    --encrypt) MODES=(encrypted) ;;
    --both-modes) MODES=(plain signed) ;;
    --max-protocol) MAXPROTO=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --out) OUT=$2; shift ;;
    --logs) LOGS=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --keep) KEEP=1 ;;
    -*) echo "torture.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) SPECS+=("$1") ;;
  esac
  shift
done
[ ${#SPECS[@]} -gt 0 ] || mapfile -t SPECS < <(torture_list required)
case "$ONLY" in "" | dittofs | smbd) ;; *) echo "torture.sh: --only dittofs|smbd" >&2; exit 2 ;; esac
[[ "$TIMEOUT" =~ ^[0-9]+$ && "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "torture.sh: --timeout and --jobs take numbers" >&2; exit 2; }
command -v smbtorture >/dev/null || { echo "torture.sh: smbtorture missing: hack/install-deps.sh test" >&2; exit 1; }
if [ "$JOBS" -gt 1 ] && { [ -n "$DFS_PORT" ] || [ -n "$SMBD_PORT" ]; }; then
  echo "torture.sh: --jobs >1 needs servers started here (each job gets its own share)" >&2
  exit 2
fi

TARGETS=()
[ "$ONLY" != smbd ] && TARGETS+=(dittofs)
[ "$ONLY" != dittofs ] && TARGETS+=(smbd)

WORK=$(mktemp -d /tmp/dittofs-torture-XXXXXX)
chmod 0755 "$WORK"
# Logs outlive the run (servers' state does not, unless --keep): the table points at them.
[ -n "$LOGS" ] || LOGS=$(mktemp -d /tmp/dittofs-torture-logs-XXXXXX)
mkdir -p "$LOGS"
SMB_PIDS="$WORK/pids"
: >"$SMB_PIDS"
cleanup() {
  local rc=$?
  smb_stop_all
  if [ "$KEEP" = 1 ]; then echo "torture.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Shares: export (or --share) for job 1, export2..N for the other jobs (servers started here).
share_for_job() { if [ "$1" -eq 1 ]; then echo "$SHARE"; else echo "$SHARE$1"; fi; }
SHARES=()
for ((j = 1; j <= JOBS; j++)); do SHARES+=("$(share_for_job "$j")"); done

# The reference smbd as Samba's own tests configure it: NT ACLs and named streams in xattrs
# (smb2.delete-on-close-perms and smb2.streams need them), when samba-vfs-modules is installed.
if [ -n "$(find /usr/lib/*/samba/vfs -name streams_xattr.so 2>/dev/null | head -1)" ]; then
  export SMBD_VFS_OBJECTS=${SMBD_VFS_OBJECTS-acl_xattr streams_xattr}
else
  echo "torture.sh: samba-vfs-modules missing: smbd serves no named streams or NT ACLs (hack/install-deps.sh bench)" >&2
fi
declare -A PORT
for t in "${TARGETS[@]}"; do
  if [ "$t" = dittofs ]; then
    if [ -n "$DFS_PORT" ]; then PORT[dittofs]=$DFS_PORT; else
      PORT[dittofs]=$(dittofs_start "$WORK/dittofs" "$DIST" "$TUSER" "$TPASS" "${SHARES[@]}")
    fi
  else
    if [ -n "$SMBD_PORT" ]; then PORT[smbd]=$SMBD_PORT; else
      PORT[smbd]=$(smbd_start "$WORK/smbd" "$TUSER" "$TPASS" "$MAXPROTO" "${SHARES[@]}")
    fi
  fi
  echo "torture.sh: $t listens on $HOST:${PORT[$t]}" >&2
done
smb_client_conf "$WORK/client" "$MAXPROTO" >"$WORK/client.conf"

# Expand the specs once (smbtorture --list): one line per spec, "label<TAB>test test ...".
PLAN="$WORK/plan"
: >"$PLAN"
for spec in "${SPECS[@]}"; do
  tests=$(torture_expand "$spec") || exit 2
  printf '%s\t%s\n' "$spec" "$tests" >>"$PLAN"
done

# One smbtorture run: writes "pass fail skip note" to $result.
run_one() {
  local target=$1 mode=$2 label=$3 tests=$4 share=$5 result=$6
  local log name
  name=$(printf '%s' "$label" | tr -c 'A-Za-z0-9._-' '_')
  # A long entry (many exclusions) would pass the 255-byte file name limit: its start and a checksum.
  [ ${#name} -gt 120 ] && name="${name:0:100}-$(printf '%s' "$label" | cksum | cut -d' ' -f1)"
  log="$LOGS/$target-$mode-$name.log"
  local args=("//$HOST/$share" -p "${PORT[$target]}" -U "$TUSER%$TPASS" -s "$WORK/client.conf" --fullname
    --basedir="$WORK" --option=torture:sharedelay=100000 --option=torture:writetimeupdatedelay=500000)
  [ "$mode" = signed ] && args+=("--option=client signing=required")
  [ "$mode" = encrypted ] && args+=("--option=client smb encrypt=required")
  local rc=0
  # shellcheck disable=SC2086 # the test list is space-separated names
  timeout -k 10 "$TIMEOUT" smbtorture "${args[@]}" $tests >"$log" 2>&1 || rc=$?
  torture_count "$log" "$rc" >"$result"
  torture_failed_names "$log" >"$result.failed"
  if grep -q ' E$' "$result"; then echo "$label: no result (see $log)" >>"$result.failed"; fi
}

RESULTS="$WORK/results"
mkdir -p "$RESULTS"
# Runs every planned suite against one server in one mode, JOBS at a time; a job slot is a share
# of its own, so concurrent suites never meet in one directory.
run_target() {
  local target=$1 mode=$2 i=0 j free label tests
  local -a slot=()
  while IFS=$'\t' read -r label tests; do
    i=$((i + 1))
    free=""
    while [ -z "$free" ]; do
      for ((j = 1; j <= JOBS; j++)); do
        if [ -z "${slot[$j]:-}" ] || ! kill -0 "${slot[$j]}" 2>/dev/null; then free=$j; break; fi
      done
      # Bounded: every run ends within its own timeout.
      [ -n "$free" ] || wait -n || true
    done
    run_one "$target" "$mode" "$label" "$tests" "$(share_for_job "$free")" "$RESULTS/$target.$mode.$i" &
    slot[$free]=$!
  done <"$PLAN"
  wait
}
t0=$(date +%s)
# The two servers are independent: run against both at once, each mode after the other.
for target in "${TARGETS[@]}"; do
  (for mode in "${MODES[@]}"; do run_target "$target" "$mode"; done) &
done
wait
elapsed=$(($(date +%s) - t0))

table=$(torture_table "$PLAN" "$RESULTS" "${MODES[*]}" "${TARGETS[*]}")
# The subtests that did not pass, per server and mode, with smbtorture's reason: what to work on.
failed=""
for mode in "${MODES[@]}"; do
  for target in "${TARGETS[@]}"; do
    names=$(cat "$RESULTS/$target.$mode".*.failed 2>/dev/null | sort -u)
    failed+=$'\n'"### $target $mode: $(printf '%s' "$names" | { grep -c . || true; }) not passed"$'\n'
    [ -z "$names" ] || failed+=$(printf '%s\n' "$names" | sed 's/^/- /')$'\n'
  done
done
if [ "$ONLY" = smbd ]; then
  what="smbd only"
elif [ -n "$DFS_PORT" ]; then
  what="the DittoFS on $HOST:$DFS_PORT"
else
  what="DittoFS commit $(git -C "$DIST" rev-parse --short HEAD 2>/dev/null || echo unknown) ($DIST)"
fi
header="smbtorture $(smbtorture --version 2>/dev/null | head -1 | awk '{print $2}') on $(date -u '+%Y-%m-%d %H:%M UTC'), $what, client max protocol $MAXPROTO, user $TUSER (non-root), per-run timeout ${TIMEOUT}s, ${elapsed}s in all. Cells: passed/failed/skipped subtests; **bold** = not all passed; T = a run killed by the timeout (its unfinished subtests count as failed), E = smbtorture failed outside any subtest (no connection, unknown name). Logs: $LOGS"
report=$(printf '%s\n\n%s\n\n## Subtests that did not pass (first line of the reason)\n%s' "$header" "$table" "$failed")
printf '%s\n' "$report"
if [ -n "$OUT" ]; then printf '%s\n' "$report" >"$OUT"; fi
