#!/bin/sh
# /init of the DittoFS test VM (busybox-static). Installed by hack/vm/build-initramfs.sh.
#
# Kernel command line parameters read from /proc/cmdline:
#   dittofs.port=P        NFS port on the host (required)
#   dittofs.mountport=M   MOUNT port on the host (default: P)
#   dittofs.export=PATH   export path (default /export)
#   dittofs.mountopts=O   extra comma-separated mount options (optional)
#   dittofs.debug=1       turn on sunrpc/nfs kernel debug messages on the console
# The test script is /test/script.sh, appended at run time as a second cpio archive.
#
# The last line this prints is always "DITTOFS-VM-RESULT exit=<status>", then it powers off.
# <status> is the script's exit status, or: 240 no port given, 241 insmod failed, 242 no eth0,
# 243 NFS mount failed, 244 no test script, 245 umount failed after a successful script.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
HOST=10.0.2.2
MNT=/mnt/nfs

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
exec </dev/console >/dev/console 2>&1

finish() {
	echo "DITTOFS-VM-RESULT exit=$1"
	sync
	poweroff -f
	# poweroff -f should not return; never let init exit (that panics the kernel).
	sleep 5
	echo o >/proc/sysrq-trigger
	exit "$1"
}

echo "dittofs-vm: init started, kernel $(uname -r)"
# Quieten the console: keep warnings and errors (NFS "server not responding" etc.).
echo 4 >/proc/sys/kernel/printk

port=
mountport=
export_path=/export
extra_opts=
debug=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	dittofs.port=*) port=${arg#dittofs.port=} ;;
	dittofs.mountport=*) mountport=${arg#dittofs.mountport=} ;;
	dittofs.export=*) export_path=${arg#dittofs.export=} ;;
	dittofs.mountopts=*) extra_opts=${arg#dittofs.mountopts=} ;;
	dittofs.debug=1) debug=1 ;;
	esac
done
[ -n "$port" ] || { echo "dittofs-vm: no dittofs.port= on the kernel command line"; finish 240; }

# Load modules in dependency order (list written at build time).
while read -r mod; do
	[ -n "$mod" ] || continue
	insmod "/lib/modules/$mod" || { echo "dittofs-vm: insmod $mod failed"; finish 241; }
done </etc/dittofs-modules.order

if [ "$debug" = 1 ]; then
	echo 8 >/proc/sys/kernel/printk
	echo 65535 >/proc/sys/sunrpc/rpc_debug
	echo 65535 >/proc/sys/sunrpc/nfs_debug
fi

ip link set lo up
ip link set eth0 up || { echo "dittofs-vm: no eth0"; ls /sys/class/net; finish 242; }
ip addr add 10.0.2.15/24 dev eth0
ip route add default via "$HOST"

[ -n "$mountport" ] || mountport=$port
opts="vers=3,proto=tcp,port=$port,mountport=$mountport,mountproto=tcp,nolock,addr=$HOST,mountaddr=$HOST"
[ -n "$extra_opts" ] && opts="$opts,$extra_opts"
mkdir -p "$MNT"
echo "dittofs-vm: mount -t nfs -o $opts $HOST:$export_path $MNT"
# Debian's busybox has no NFS mount support of its own, so it hands the option string to
# mount(2) unchanged and the kernel parses it (text-based NFS mount options).
mount -t nfs -o "$opts" "$HOST:$export_path" "$MNT"
rc=$?
if [ $rc -ne 0 ]; then
	echo "dittofs-vm: NFS mount failed (status $rc)"
	dmesg | tail -20
	finish 243
fi
echo "dittofs-vm: mounted"
grep " $MNT " /proc/mounts

if [ ! -f /test/script.sh ]; then
	echo "dittofs-vm: no test script in the initramfs"
	finish 244
fi
echo "dittofs-vm: running test script"
(cd "$MNT" && exec sh /test/script.sh)
status=$?
echo "dittofs-vm: test script exited with $status"
# NFS operations the kernel client sent during the run (from /proc/self/mountstats).
awk -v mnt="$MNT" '
	$1 == "device" { inmnt = ($5 == mnt) }
	inmnt && /per-op statistics/ { ops = 1; next }
	inmnt && ops && NF >= 9 && $2 > 0 { sub(":", "", $1); line = line " " $1 "=" $2 }
	END { print "dittofs-vm: NFS ops sent:" line }
' /proc/self/mountstats

cd /
if ! umount "$MNT"; then
	echo "dittofs-vm: umount $MNT failed"
	[ $status -eq 0 ] && status=245
fi
finish $status
