# shellcheck shell=bash
# Shell helpers for hack/smb/*.sh: start a DittoFS server or Samba's smbd on free loopback ports
# with a non-root user and private state, stop them, and run/count smbtorture. Sourced, not run.
#
# Servers started here record "pid<TAB>what" lines in $SMB_PIDS (set it before starting any);
# smb_stop_all stops exactly those processes.

: "${SMB_PIDS:=}"

# A free TCP port on 127.0.0.1 (bind to 0, read it, close).
smb_free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{process.stdout.write(String(s.address().port));s.close()})'
}

# smb_wait_port PORT PID SECONDS WHAT: until something accepts on 127.0.0.1:PORT; fails at once if
# PID exits, and after SECONDS.
smb_wait_port() {
  local port=$1 pid=$2 secs=$3 what=$4 deadline=$(($(date +%s) + $3))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "smb: $what exited before listening on $port" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "smb: $what did not listen on $port within ${secs}s" >&2
  return 1
}

# _smb_register PID WHAT [PIDDIR]: PIDDIR holds pid files of helpers the process starts itself.
_smb_register() { [ -n "$SMB_PIDS" ] && printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$SMB_PIDS"; return 0; }

# Stops the processes recorded in $SMB_PIDS (TERM, then KILL after 60 s), newest first.
smb_stop_all() {
  [ -n "$SMB_PIDS" ] && [ -f "$SMB_PIDS" ] || return 0
  local pid what piddir i pidf
  while IFS=$'\t' read -r pid what piddir; do
    if kill -TERM "$pid" 2>/dev/null; then
      for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "smb: $what ($pid) ignored SIGTERM for 60 s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    # smbd may have started samba-dcerpcd (and its rpcd_* workers) on demand: they write pid
    # files in the private pid directory of the smbd started here.
    [ -n "$piddir" ] || continue
    for pidf in "$piddir"/*.pid; do
      [ -f "$pidf" ] || continue
      pid=$(head -1 "$pidf" | tr -dc 0-9)
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
  done < <(tac "$SMB_PIDS")
  : >"$SMB_PIDS"
}

# The unix user smbd maps the SMB user to: created (no home, no shell) when missing, never root.
smb_unix_user() {
  local user=$1
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --no-create-home --user-group --shell /usr/sbin/nologin "$user" 2>/dev/null ||
      id -u "$user" >/dev/null 2>&1 || {
      echo "smb: cannot create unix user $user" >&2
      return 1
    }
  fi
  if [ "$(id -u "$user")" -eq 0 ]; then
    echo "smb: $user is root; use a non-root user" >&2
    return 1
  fi
}

# smb_client_conf DIR MAXPROTO: a private client smb.conf on stdout (state kept under DIR, so
# nothing under /var/lib/samba or /etc/samba is read or written).
smb_client_conf() {
  local d=$1
  mkdir -p "$d"/{private,lock,state,cache}
  cat <<EOF
[global]
  workgroup = WORKGROUP
  private dir = $d/private
  lock directory = $d/lock
  state directory = $d/state
  cache directory = $d/cache
  client min protocol = SMB2_02
  client max protocol = $2
  name resolve order = host
EOF
}

# smbd_start DIR USER PASSWORD MAXPROTO SHARE...: Samba's smbd in the foreground on a free loopback
# port with a private smb.conf and private state under DIR, USER (non-root unix user, created if
# missing) with PASSWORD in a private passdb, one directory per share owned by USER. Prints the port.
smbd_start() {
  local d=$1 user=$2 pass=$3 maxproto=$4
  shift 4
  command -v smbd >/dev/null || { echo "smb: smbd missing: hack/install-deps.sh bench" >&2; return 1; }
  smb_unix_user "$user" || return 1
  mkdir -p "$d"/{private,lock,state,cache,pid,ncalrpc,binddns,log,shares}
  chmod 0755 "$d" "$d/shares"
  local port
  port=$(smb_free_port)
  {
    cat <<EOF
[global]
  netbios name = DITTOREF
  workgroup = WORKGROUP
  server role = standalone server
  interfaces = 127.0.0.1
  bind interfaces only = yes
  smb ports = $port
  disable netbios = yes
  private dir = $d/private
  lock directory = $d/lock
  state directory = $d/state
  cache directory = $d/cache
  pid directory = $d/pid
  ncalrpc dir = $d/ncalrpc
  binddns dir = $d/binddns
  log file = $d/log/log.%m
  max log size = 0
  log level = 1
  passdb backend = tdbsam:$d/private/passdb.tdb
  server min protocol = SMB2_02
  server max protocol = $maxproto
  map to guest = never
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  usershare path =
  ea support = yes
  store dos attributes = yes
EOF
    # $SMBD_VFS_OBJECTS: extra modules (Debian samba-vfs-modules), e.g. "acl_xattr streams_xattr"
    # for NT ACLs and named streams in xattrs as Samba's own test environment serves them. Unset:
    # Debian's default smbd (none).
    if [ -n "${SMBD_VFS_OBJECTS:-}" ]; then echo "  vfs objects = $SMBD_VFS_OBJECTS"; fi
    for s in "$@"; do
      mkdir -p "$d/shares/$s"
      chown "$user:" "$d/shares/$s"
      chmod 0755 "$d/shares/$s"
      printf '\n[%s]\n  path = %s\n  read only = no\n  guest ok = no\n' "$s" "$d/shares/$s"
    done
  } >"$d/smb.conf"
  local s
  for s in "$@"; do
    if ! runuser -u "$user" -- test -w "$d/shares/$s" -a -x "$d/shares/$s"; then
      echo "smb: $user cannot write $d/shares/$s (a parent directory closed to others?)" >&2
      return 1
    fi
  done
  printf '%s\n%s\n' "$pass" "$pass" | smbpasswd -c "$d/smb.conf" -s -a "$user" >"$d/log/smbpasswd.log" 2>&1 || {
    cat "$d/log/smbpasswd.log" >&2
    return 1
  }
  # In the foreground (so its pid is ours to stop), in a process group of its own: on SIGTERM smbd
  # signals its whole process group, which must not be this script's.
  setsid smbd --foreground --no-process-group --configfile="$d/smb.conf" </dev/null >"$d/log/smbd.out" 2>&1 &
  local pid=$!
  _smb_register "$pid" smbd "$d/pid"
  smb_wait_port "$port" "$pid" 60 smbd || {
    tail -20 "$d/log/smbd.out" "$d/log/log.smbd" >&2 2>/dev/null
    return 1
  }
  echo "$port"
}

# dittofs_start DIR DIST USER PASSWORD SHARE...: a DittoFS server from DIST (server/dist) with its
# data under DIR on free loopback ports, USER (non-root control-plane user, uid 2000+) with
# read-write on every SHARE (created when it is not /export). Prints the SMB port; writes the API
# port to DIR/api-port. TORTURE_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") go to its node.
dittofs_start() {
  local d=$1 dist=$2 user=$3 pass=$4
  shift 4
  [ -f "$dist/cli/dittofs.js" ] || { echo "smb: $dist/cli/dittofs.js missing: make build" >&2; return 1; }
  mkdir -p "$d/data"
  local nfs api metrics smb
  nfs=$(smb_free_port) api=$(smb_free_port) metrics=$(smb_free_port) smb=$(smb_free_port)
  local admin='dittofs-torture-admin' admin2='dittofs-torture-Admin2'
  DITTOFS_DATA_DIR="$d/data" DITTOFS_BIND_ADDRESS=127.0.0.1 DITTOFS_NFS_PORT=$nfs DITTOFS_API_PORT=$api \
    DITTOFS_METRICS_PORT=$metrics DITTOFS_SMB_PORT=$smb DITTOFS_LOG_LEVEL=${DITTOFS_LOG_LEVEL:-warn} \
    DITTOFS_ADMIN_INITIAL_PASSWORD=$admin node ${TORTURE_NODE_ARGS:-} "$dist/cli/dittofs.js" start </dev/null >"$d/dittofs.log" 2>&1 &
  local pid=$!
  _smb_register "$pid" dittofs
  smb_wait_port "$api" "$pid" 600 dittofs && smb_wait_port "$smb" "$pid" 60 dittofs || {
    tail -30 "$d/dittofs.log" >&2
    return 1
  }
  echo "$api" >"$d/api-port"
  local base="http://127.0.0.1:$api/api/v1" token
  _dfs_login() {
    curl -sS --fail-with-body -H 'content-type: application/json' \
      -d "$(jq -nc --arg p "$1" '{username:"admin",password:$p}')" "$base/auth/login" | jq -r .access_token
  }
  _dfs() { # METHOD PATH [JSON]
    curl -sS --fail-with-body -X "$1" -H "authorization: Bearer $token" ${3:+-H 'content-type: application/json' -d "$3"} "$base$2" >/dev/null
  }
  token=$(_dfs_login "$admin") || return 1
  _dfs POST /users/me/password "$(jq -nc --arg a "$admin" --arg b "$admin2" '{current_password:$a,new_password:$b}')" || return 1
  token=$(_dfs_login "$admin2") || return 1
  local uid=2000
  id -u "$user" >/dev/null 2>&1 && [ "$(id -u "$user")" -ne 0 ] && uid=$(id -u "$user")
  _dfs POST /users "$(jq -nc --arg u "$user" --arg p "$pass" --argjson id "$uid" \
    '{username:$u,password:$p,uid:$id,gid:$id,must_change_password:false}')" || return 1
  local s
  for s in "$@"; do
    if [ "$s" != export ]; then
      _dfs POST /shares "$(jq -nc --arg n "/$s" '{name:$n,metadata_store:"default",block_store:"default"}')" || return 1
    fi
    _dfs PUT "/shares/$s/permissions/users/$user" '{"level":"read-write"}' || return 1
  done
  echo "$smb"
}

# torture_count LOG RC: "pass fail skip note" for one smbtorture run (subunit-style lines:
# "test: X" then "success:|failure:|error:|skip:|xfail: X"). A test started but never finished
# (the run was killed by `timeout`, RC 124/137) counts as failed with note T; a run that ended in
# error with no subtest result at all (no connection, bad name) gets note E.
torture_count() {
  local log=$1 rc=$2
  awk -v rc="$rc" '
    /^test: / { started[substr($0, 7)] = 1; order[++n] = substr($0, 7); next }
    /^(success|xfail): / { name = $0; sub(/^[a-z]+: /, "", name); sub(/ \[.*$/, "", name); pass++; done[name] = 1; next }
    /^(failure|error|uxsuccess): / { name = $0; sub(/^[a-z]+: /, "", name); sub(/ \[.*$/, "", name); fail++; done[name] = 1; next }
    /^skip: / { name = $0; sub(/^[a-z]+: /, "", name); sub(/ \[.*$/, "", name); skip++; done[name] = 1; next }
    END {
      note = ""
      if (rc == 124 || rc == 137) {
        note = "T"
        for (i = 1; i <= n; i++) if (!(order[i] in done)) fail++
      } else if (rc != 0 && pass + fail + skip == 0) { note = "E"; fail = 1 }
      printf "%d %d %d %s\n", pass, fail, skip, note
    }' "$log"
}

# torture_failed_names LOG: one line per subtest in LOG that did not pass: "name: why" (the first
# line of smbtorture's reason), or "name: unfinished (killed by the timeout)".
torture_failed_names() {
  awk '
    /^test: / { t[substr($0, 7)] = 1; next }
    /^(success|failure|error|skip|xfail|uxsuccess): / {
      kind = $0; sub(/:.*/, "", kind)
      n = $0; sub(/^[a-z]+: /, "", n); sub(/ \[.*$/, "", n); delete t[n]
      if (kind != "failure" && kind != "error" && kind != "uxsuccess") next
      why = ""
      if ($0 ~ / \[$/ && (getline l) > 0 && l != "]") why = l
      sub(/^(\.\.\/)*source4\/torture\//, "", why); sub(/^\((\.\.\/)*source4\/torture\//, "(", why)
      printf "%s: %s%s\n", n, (kind == "failure" ? "" : kind " "), substr(why, 1, 200)
    }
    END { for (k in t) print k ": unfinished (killed by the timeout)" }' "$1"
}

# torture_table PLAN RESULTS "MODES" "TARGETS": the markdown table. PLAN has "label<TAB>tests" lines
# (row i = line i); RESULTS/<target>.<mode>.<i> holds "pass fail skip note".
torture_table() {
  local plan=$1 res=$2 modes=$3 targets=$4 m t i label tests cell pass fail skip note
  declare -A tot
  local head="| suite | list |" sep="|---|---|"
  for m in $modes; do for t in $targets; do
    head+=" $t $m |"
    sep+="---|"
  done; done
  echo "$head"
  echo "$sep"
  i=0
  while IFS=$'\t' read -r label tests; do
    i=$((i + 1))
    local row="| \`$label\` | $(torture_list_of "$label") |"
    for m in $modes; do for t in $targets; do
      cell="-"
      if [ -s "$res/$t.$m.$i" ]; then
        read -r pass fail skip note <"$res/$t.$m.$i"
        cell="$pass/$fail/$skip${note:+ $note}"
        [ "$fail" = 0 ] && [ "$pass" -gt 0 ] || cell="**$cell**"
        tot[$t.$m.p]=$((${tot[$t.$m.p]:-0} + pass))
        tot[$t.$m.f]=$((${tot[$t.$m.f]:-0} + fail))
        tot[$t.$m.s]=$((${tot[$t.$m.s]:-0} + skip))
      fi
      row+=" $cell |"
    done; done
    echo "$row"
  done <"$plan"
  local row="| **total** | |"
  for m in $modes; do for t in $targets; do
    row+=" ${tot[$t.$m.p]:-0}/${tot[$t.$m.f]:-0}/${tot[$t.$m.s]:-0} |"
  done; done
  echo "$row"
}

# Which named list of hack/smb/suites.sh a spec comes from.
torture_list_of() {
  local l
  for l in required smbd-fails report; do
    # Not grep -q: its early exit would fail the pipe (pipefail) by SIGPIPE now and then.
    if torture_list "$l" | grep -xF -- "$1" >/dev/null; then echo "$l"; return; fi
  done
  echo ""
}
