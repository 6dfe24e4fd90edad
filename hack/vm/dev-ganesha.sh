#!/usr/bin/env bash
# Debugging aid only (not used by the tests): runs COMMAND against a private nfs-ganesha NFSv3
# server, to check the VM harness against a known-good server.
#
# Usage: hack/vm/dev-ganesha.sh PORT COMMAND [ARGS...]
#   e.g. hack/vm/dev-ganesha.sh 20600 hack/vm/run-nfs-test.sh --port 20600 --mount-port 20601 --script test/e2e/posix-kernel.sh
#
# Everything runs in private network and mount namespaces (unshare -n -m, needs root): its own
# loopback, its own rpcbind (with a private /run), and ganesha on 127.0.0.1:PORT (NFS; MOUNT on PORT+1)
# exporting a temp dir as /export, so nothing on the host (another rpcbind/ganesha) is disturbed.
# The temp dir (export, config, log) is removed at the end unless DEV_GANESHA_KEEP=1.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,11p' "$0" >&2; exit 2; }

if [ "${DEV_GANESHA_INNER:-}" != 1 ]; then
  exec env DEV_GANESHA_INNER=1 unshare --net --mount --propagation private "$0" "$@"
fi

port=$1; shift
dir=$(mktemp -d /tmp/dittofs-ganesha.XXXXXX)
mkdir -p "$dir/export" "$dir/recov"
chmod 0777 "$dir/export"
ip link set lo up
# glibc getaddrinfo(AI_ADDRCONFIG) wants a non-loopback IPv4 address before it resolves 127.0.0.1.
ip link add dgan0 type dummy 2>/dev/null && ip addr add 192.0.2.1/24 dev dgan0 && ip link set dgan0 up || ip addr add 192.0.2.1/32 dev lo
mount -t tmpfs tmpfs /run
mkdir -p /run/rpcbind /run/ganesha

cat >"$dir/ganesha.conf" <<EOF
NFS_CORE_PARAM {
  Protocols = 3;
  NFS_Port = $port;
  MNT_Port = $((port + 1));
  Bind_addr = 127.0.0.1;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
  mount_path_pseudo = true;
}
NFS_KRB5 { Active_krb5 = false; }
NFSv4 { Graceless = true; RecoveryRoot = "$dir/recov"; }
EXPORT {
  Export_Id = 1;
  Path = "$dir/export";
  Pseudo = "/export";
  Access_Type = RW;
  Squash = No_Root_Squash;
  Protocols = 3;
  Transports = TCP;
  SecType = sys;
  FSAL { Name = VFS; }
}
EOF

rpcbind -f -w &
rpcpid=$!
sleep 0.5
ganesha.nfsd -F -f "$dir/ganesha.conf" -L "$dir/ganesha.log" -p "$dir/ganesha.pid" -N NIV_EVENT &
gpid=$!
stop() {
  kill -TERM "$gpid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$gpid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$gpid" 2>/dev/null || true
  [ -n "$rpcpid" ] && kill -TERM "$rpcpid" 2>/dev/null || true
  if [ "${DEV_GANESHA_KEEP:-0}" != 1 ]; then rm -rf "$dir"; else echo "dev-ganesha: export dir $dir/export, log $dir/ganesha.log" >&2; fi
}
trap stop EXIT
ok=0
for _ in $(seq 1 60); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ok=1; break; fi
  kill -0 "$gpid" 2>/dev/null || break
  sleep 0.5
done
[ $ok = 1 ] || { echo "dev-ganesha: ganesha did not listen on $port" >&2; cat "$dir/ganesha.log" >&2; exit 1; }
# Ganesha may still be in its grace period; NFSv3 without NLM does not care.
set +e
"$@"
rc=$?
set -e
exit $rc
