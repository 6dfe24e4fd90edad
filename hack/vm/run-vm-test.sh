#!/usr/bin/env bash
# Boots the DittoFS test VM (QEMU, software emulation is fine) whose Linux kernel client mounts
# the export of the host's 127.0.0.1:PORT (seen from the guest as 10.0.2.2:PORT) and runs a shell
# script inside the mount as root: the NFSv3 client (--fs nfs, the default) or the SMB2 cifs
# client (--fs cifs), which mounts once per dialect and runs the script at each in the same boot.
#
# Usage: hack/vm/run-vm-test.sh [--fs nfs|cifs] --port P --script FILE [--export /export] [--timeout S]
#                               [--mount-port M] [--dialects 2.0,2.1] [--credentials FILE]
#                               [--mount-opts OPTS] [--log FILE] [--debug]
#   --fs nfs|cifs     which kernel client mounts the export (default nfs)
#   --port P          NFS or SMB port of the server on 127.0.0.1
#   --script FILE     POSIX sh script run with the mount as working directory (busybox sh); it
#                     gets DITTOFS_FS=nfs|cifs and, for cifs, DITTOFS_DIALECT in its environment
#   --export PATH     export path (default /export; cifs mounts the share of that name)
#   --timeout S       kill the VM after S seconds (default 900)
#   --mount-port M    NFS only: MOUNT protocol port (default: P, DittoFS serves both on one port)
#   --dialects D,D    cifs only: SMB dialects to mount in turn, as vers= takes them (2.1, 3.02,
#                     or default: the kernel's choice), D+seal for that dialect encrypted (3.x);
#                     default 2.1
#   --credentials F   cifs only (required): a file with "username=U" and "password=W" lines
#   --mount-opts O    extra comma-separated mount options (no spaces)
#   --log FILE        also write the console output to FILE
#   --debug           turn on the guest kernel's sunrpc/nfs or cifs debug messages (very verbose)
#                     (--nfs-debug is the older name)
# The guest console is streamed to stdout. Exit status: the script's exit status as reported by
# the guest's "DITTOFS-VM-RESULT exit=N" line (240-246: the VM's /init failed, e.g. 243 = the
# mount failed; see hack/vm/init.sh); 124 on timeout; 125 if the VM ended without that line;
# 2 on usage errors; 3 if qemu or the kernel is missing.
# Environment: E2E_VM_KVM=1 uses KVM, 0 software emulation; unset: KVM when /dev/kvm is writable
# and the CPU has virtualization extensions (vmx/svm in /proc/cpuinfo; a /dev/kvm without them,
# as in a nested VM, hangs QEMU). E2E_VM_NIC=e1000 picks the other network card.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fs=nfs port= mountport= export_path=/export script= timeout_s=900 mount_opts= log= debug=0
dialects=2.1 credentials=

usage() { sed -n '7,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --fs) fs=${2:-}; shift 2 ;;
    --dialects) dialects=${2:-}; shift 2 ;;
    --credentials) credentials=${2:-}; shift 2 ;;
    --port) port=${2:-}; shift 2 ;;
    --mount-port) mountport=${2:-}; shift 2 ;;
    --export) export_path=${2:-}; shift 2 ;;
    --script) script=${2:-}; shift 2 ;;
    --timeout) timeout_s=${2:-}; shift 2 ;;
    --mount-opts) mount_opts=${2:-}; shift 2 ;;
    --log) log=${2:-}; shift 2 ;;
    --debug | --nfs-debug) debug=1; shift ;;
    -h|--help) usage ;;
    *) echo "run-vm-test: unknown argument $1" >&2; usage ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -gt 0 ] && [ "$port" -lt 65536 ] || { echo "run-vm-test: --port P required" >&2; usage; }
[ -z "$mountport" ] || [[ "$mountport" =~ ^[0-9]+$ ]] || { echo "run-vm-test: bad --mount-port" >&2; usage; }
[[ "$timeout_s" =~ ^[0-9]+$ ]] && [ "$timeout_s" -gt 0 ] || { echo "run-vm-test: bad --timeout" >&2; usage; }
[ -n "$script" ] && [ -r "$script" ] || { echo "run-vm-test: --script FILE required and readable" >&2; usage; }
case "$export_path" in /*) ;; *) echo "run-vm-test: --export must be absolute" >&2; usage ;; esac
case "$export_path$mount_opts" in *[[:space:]]*) echo "run-vm-test: no spaces in --export/--mount-opts" >&2; usage ;; esac
case "$fs" in nfs | cifs) ;; *) echo "run-vm-test: --fs nfs or cifs" >&2; usage ;; esac
if [ "$fs" = cifs ]; then
  [[ "$dialects" =~ ^([0-9.]+|default)(\+seal)?(,([0-9.]+|default)(\+seal)?)*$ ]] || { echo "run-vm-test: bad --dialects" >&2; usage; }
  [ -n "$credentials" ] && [ -r "$credentials" ] || { echo "run-vm-test: --fs cifs needs --credentials FILE" >&2; usage; }
fi

qemu=$(command -v qemu-system-x86_64 || true)
if [ -z "$qemu" ]; then
  echo "run-vm-test: qemu-system-x86_64 not found (run hack/install-deps.sh vm)" >&2
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
  echo "run-vm-test: building the VM boot set failed (run hack/install-deps.sh vm)" >&2
  exit 3
fi

# Second initramfs archive with the test script; the kernel unpacks concatenated archives in order.
mkdir -p "$work/extra/test"
install -m 0755 "$script" "$work/extra/test/script.sh"
[ "$fs" = cifs ] && install -m 0600 "$credentials" "$work/extra/test/credentials"
(cd "$work/extra" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 -n >"$work/extra.cpio.gz"
cat "$work/boot/initramfs.cpio.gz" "$work/extra.cpio.gz" >"$work/initrd.cpio.gz"

# The kernel has virtio_net as a module in the initramfs; e1000 is there too as a fallback
# (E2E_VM_NIC=e1000).
nic=${E2E_VM_NIC:-virtio-net-pci}
accel=tcg cpu=()
case "${E2E_VM_KVM:-}" in
  1) accel=kvm ;;
  0) ;;
  *) if [ -w /dev/kvm ] && grep -Eqw 'vmx|svm' /proc/cpuinfo; then accel=kvm; fi ;;
esac
[ "$accel" = kvm ] && cpu=(-cpu host)
append="console=ttyS0 panic=-1 loglevel=4 mitigations=off tsc=reliable dittofs.fs=$fs dittofs.port=$port dittofs.export=$export_path"
[ -n "$mountport" ] && append="$append dittofs.mountport=$mountport"
[ "$fs" = cifs ] && append="$append dittofs.dialects=$dialects"
[ -n "$mount_opts" ] && append="$append dittofs.mountopts=$mount_opts"
[ "$debug" = 1 ] && append="$append dittofs.debug=1"

out=$work/console.log
: >"$out"
[ -n "$log" ] && : >"$log"
start=$(date +%s)
echo "run-vm-test: booting $(cat "$work/boot/kernel-version") (fs=$fs, accel=$accel, nic=$nic, port=$port, timeout=${timeout_s}s)"
"$qemu" -accel "$accel" "${cpu[@]}" -m 1024 -smp 1 -no-reboot -nodefaults -display none -monitor none -serial stdio \
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
  echo "run-vm-test: TIMEOUT after ${elapsed}s, VM killed"
  exit 124
fi
if [ -z "$result" ]; then
  echo "run-vm-test: the VM ended (qemu status $qrc) after ${elapsed}s without reporting a result"
  exit 125
fi
echo "run-vm-test: VM finished in ${elapsed}s, script exit status $result"
exit "$result"
