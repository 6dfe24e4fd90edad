#!/usr/bin/env bash
# Boots the DittoFS test VM (QEMU, software emulation is fine) whose Linux kernel NFSv3 client
# mounts HOST:EXPORT (the host's 127.0.0.1:PORT, seen from the guest as 10.0.2.2:PORT) and runs
# a shell script inside the mount as root.
#
# Usage: hack/vm/run-nfs-test.sh --port P [--mount-port M] [--export /export] --script FILE [--timeout SECONDS]
#                                [--mount-opts OPTS] [--log FILE] [--nfs-debug]
#   --port P          NFS port of the server on 127.0.0.1
#   --mount-port M    MOUNT protocol port (default: P, DittoFS serves both on one port)
#   --export PATH     export path (default /export)
#   --script FILE     POSIX sh script run with the mount as working directory (busybox sh)
#   --timeout S       kill the VM after S seconds (default 900)
#   --mount-opts O    extra comma-separated NFS mount options (no spaces)
#   --log FILE        also write the console output to FILE
#   --nfs-debug       turn on the guest kernel's sunrpc/nfs debug messages (very verbose)
# The guest console is streamed to stdout. Exit status: the script's exit status as reported by
# the guest's "DITTOFS-VM-RESULT exit=N" line (240-245: the VM's /init failed, e.g. 243 = the NFS
# mount failed; see hack/vm/init.sh); 124 on timeout; 125 if the VM ended without that line;
# 2 on usage errors; 3 if qemu or the kernel is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port= mountport= export_path=/export script= timeout_s=900 mount_opts= log= nfs_debug=0

usage() { sed -n '5,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=${2:-}; shift 2 ;;
    --mount-port) mountport=${2:-}; shift 2 ;;
    --export) export_path=${2:-}; shift 2 ;;
    --script) script=${2:-}; shift 2 ;;
    --timeout) timeout_s=${2:-}; shift 2 ;;
    --mount-opts) mount_opts=${2:-}; shift 2 ;;
    --log) log=${2:-}; shift 2 ;;
    --nfs-debug) nfs_debug=1; shift ;;
    -h|--help) usage ;;
    *) echo "run-nfs-test: unknown argument $1" >&2; usage ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -gt 0 ] && [ "$port" -lt 65536 ] || { echo "run-nfs-test: --port P required" >&2; usage; }
[ -z "$mountport" ] || [[ "$mountport" =~ ^[0-9]+$ ]] || { echo "run-nfs-test: bad --mount-port" >&2; usage; }
[[ "$timeout_s" =~ ^[0-9]+$ ]] && [ "$timeout_s" -gt 0 ] || { echo "run-nfs-test: bad --timeout" >&2; usage; }
[ -n "$script" ] && [ -r "$script" ] || { echo "run-nfs-test: --script FILE required and readable" >&2; usage; }
case "$export_path" in /*) ;; *) echo "run-nfs-test: --export must be absolute" >&2; usage ;; esac
case "$export_path$mount_opts" in *[[:space:]]*) echo "run-nfs-test: no spaces in --export/--mount-opts" >&2; usage ;; esac

qemu=$(command -v qemu-system-x86_64 || true)
if [ -z "$qemu" ]; then
  echo "run-nfs-test: qemu-system-x86_64 not found (run hack/install-deps.sh vm)" >&2
  exit 3
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/dittofs-vm.XXXXXX")
qpid=
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill -KILL "$qpid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! "$here/build-initramfs.sh" "$work/boot" >/dev/null; then
  echo "run-nfs-test: building the VM boot set failed (run hack/install-deps.sh vm)" >&2
  exit 3
fi

# Second initramfs archive with the test script; the kernel unpacks concatenated archives in order.
mkdir -p "$work/extra/test"
install -m 0755 "$script" "$work/extra/test/script.sh"
(cd "$work/extra" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 -n >"$work/extra.cpio.gz"
cat "$work/boot/initramfs.cpio.gz" "$work/extra.cpio.gz" >"$work/initrd.cpio.gz"

# The kernel has virtio_net as a module in the initramfs; e1000 is there too as a fallback
# (E2E_VM_NIC=e1000).
nic=${E2E_VM_NIC:-virtio-net-pci}
accel=tcg
if [ "${E2E_VM_KVM:-0}" = 1 ] && [ -w /dev/kvm ]; then accel=kvm; fi
append="console=ttyS0 panic=-1 loglevel=4 mitigations=off tsc=reliable dittofs.port=$port dittofs.export=$export_path"
[ -n "$mountport" ] && append="$append dittofs.mountport=$mountport"
[ -n "$mount_opts" ] && append="$append dittofs.mountopts=$mount_opts"
[ "$nfs_debug" = 1 ] && append="$append dittofs.debug=1"

out=$work/console.log
: >"$out"
[ -n "$log" ] && : >"$log"
start=$(date +%s)
echo "run-nfs-test: booting $(cat "$work/boot/kernel-version") (accel=$accel, nic=$nic, port=$port, timeout=${timeout_s}s)"
"$qemu" -accel "$accel" -m 1024 -smp 1 -no-reboot -nodefaults -display none -monitor none -serial stdio \
  -netdev user,id=n0 -device "$nic,netdev=n0" \
  -kernel "$work/boot/vmlinuz" -initrd "$work/initrd.cpio.gz" -append "$append" \
  </dev/null >"$out" 2>&1 &
qpid=$!

# Stream the console while waiting, bounded by the timeout.
tail -n +1 -f --pid="$qpid" "$out" | sed -u 's/\r$//' | if [ -n "$log" ]; then tee -a "$log"; else cat; fi &
tailpid=$!
timed_out=0
deadline=$((start + timeout_s))
while kill -0 "$qpid" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    timed_out=1
    kill -TERM "$qpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$qpid" 2>/dev/null || true
    break
  fi
  sleep 0.5
done
wait "$qpid" 2>/dev/null && qrc=0 || qrc=$?
qpid=
wait "$tailpid" 2>/dev/null || true
elapsed=$(($(date +%s) - start))

result=$(tr -d '\r' <"$out" | sed -n 's/.*DITTOFS-VM-RESULT exit=\([0-9][0-9]*\).*/\1/p' | tail -1)
if [ "$timed_out" = 1 ]; then
  echo "run-nfs-test: TIMEOUT after ${elapsed}s, VM killed"
  exit 124
fi
if [ -z "$result" ]; then
  echo "run-nfs-test: the VM ended (qemu status $qrc) after ${elapsed}s without reporting a result"
  exit 125
fi
echo "run-nfs-test: VM finished in ${elapsed}s, script exit status $result"
exit "$result"
