#!/bin/sh
# /init of the DittoFS test VM (busybox-static). Installed by hack/vm/build-initramfs.sh.
#
# Kernel command line parameters read from /proc/cmdline:
#   dittofs.fs=nfs|cifs   which kernel client mounts the export (default nfs)
#   dittofs.port=P        NFS or SMB port on the host (required)
#   dittofs.mountport=M   MOUNT port on the host (default: P; NFS only)
#   dittofs.export=PATH   export path (default /export; cifs mounts the share of that name)
#   dittofs.dialects=D,D  cifs only: the SMB dialects (vers=) to mount one after the other,
#                         running the script once per dialect (default 2.1); D+seal mounts that
#                         dialect encrypted (the seal option), and D+seal is its name below
#   dittofs.mountopts=O   extra comma-separated mount options (optional)
#   dittofs.debug=1       turn on sunrpc/nfs (or cifs) kernel debug messages on the console
# The test script is /test/script.sh, appended at run time as a second cpio archive; for cifs the
# same archive holds /test/credentials ("username=U" and "password=W" lines, kept off the command
# line so the password can hold any character but a comma and never reaches the console).
# The script runs with DITTOFS_FS=nfs|cifs in its environment and, for cifs, DITTOFS_DIALECT=<label> (the dialect as given: 3.0, default+seal),
# DITTOFS_FIRST_RUN=1 in the first dialect's run and DITTOFS_LAST_RUN=1 in the last's (0 otherwise),
# so that runs can share work within a boot.
#
# The last line this prints is always "DITTOFS-VM-RESULT exit=<status>", then it powers off.
# <status> is the script's exit status (for cifs: the first non-zero one among the dialects), or:
# 240 no port given, 241 insmod failed, 242 no eth0, 243 mount failed, 244 no test script,
# 245 umount failed after a successful script, 246 bad cifs parameters or credentials.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
HOST=10.0.2.2

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

fs=nfs
port=
mountport=
export_path=/export
dialects=2.1
extra_opts=
debug=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	dittofs.fs=*) fs=${arg#dittofs.fs=} ;;
	dittofs.port=*) port=${arg#dittofs.port=} ;;
	dittofs.dialects=*) dialects=${arg#dittofs.dialects=} ;;
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
	[ -w /proc/fs/cifs/cifsFYI ] && echo 1 >/proc/fs/cifs/cifsFYI
fi

ip link set lo up
ip link set eth0 up || { echo "dittofs-vm: no eth0"; ls /sys/class/net; finish 242; }
ip addr add 10.0.2.15/24 dev eth0
ip route add default via "$HOST"

if [ ! -f /test/script.sh ]; then
	echo "dittofs-vm: no test script in the initramfs"
	finish 244
fi

# run_script MNT: runs /test/script.sh with MNT as working directory; prints its status.
run_script() {
	echo "dittofs-vm: running test script"
	_t0=$(cut -d' ' -f1 /proc/uptime)
	(cd "$1" && exec sh /test/script.sh)
	_rc=$?
	echo "dittofs-vm: test script exited with $_rc after $(awk -v a="$_t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')s"
	return $_rc
}

if [ "$fs" = nfs ]; then
	MNT=/mnt/nfs
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
	run_script "$MNT"
	status=$?
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
fi

[ "$fs" = cifs ] || { echo "dittofs-vm: unknown dittofs.fs=$fs"; finish 246; }
user=
pass=
if [ -r /test/credentials ]; then
	while IFS= read -r line; do
		case "$line" in
		username=*) user=${line#username=} ;;
		password=*) pass=${line#password=} ;;
		esac
	done </test/credentials
fi
share=${export_path#/}
case "$user$pass$share" in *,*) echo "dittofs-vm: a comma in the cifs user, password or share name"; finish 246 ;; esac
[ -n "$user" ] && [ -n "$pass" ] && [ -n "$share" ] || { echo "dittofs-vm: no cifs credentials (/test/credentials) or share"; finish 246; }
MNT=/mnt/cifs
mkdir -p "$MNT"
status=0
set -- $(echo "$dialects" | tr ',' ' ')
runs=$#
run=0
for label in "$@"; do
	run=$((run + 1))
	vers=${label%+seal}
	seal=
	[ "$vers" != "$label" ] && seal=,seal
	# Busybox mount has no cifs support of its own (no mount.cifs either): it passes the source and
	# the option string to mount(2) unchanged. The kernel's cifs fs_context turns the source
	# //host/share into its UNC and, with no ip= option, takes the server address from the UNC's
	# host part, which must therefore be an IP address (there is no DNS upcall in this VM).
	# uid/gid/file_mode/dir_mode stay the kernel defaults (root, 0755): without unix extensions
	# the client shows every file that way whatever the server holds.
	opts="port=$port,username=$user,password=$pass,vers=$vers$seal"
	[ -n "$extra_opts" ] && opts="$opts,$extra_opts"
	echo "dittofs-vm: mount -t cifs -o port=$port,username=$user,password=...,vers=$vers$seal${extra_opts:+,$extra_opts} //$HOST/$share $MNT"
	if ! mount -t cifs -o "$opts" "//$HOST/$share" "$MNT"; then
		echo "dittofs-vm: cifs mount at vers=$label failed"
		dmesg | tail -20
		finish 243
	fi
	echo "dittofs-vm: mounted (vers=$label)"
	grep " $MNT " /proc/mounts | sed 's/password=[^,]*/password=.../'
	[ -w /proc/fs/cifs/Stats ] && echo 0 >/proc/fs/cifs/Stats
	first=0 last=0
	[ $run = 1 ] && first=1
	[ $run = "$runs" ] && last=1
	DITTOFS_FS=cifs DITTOFS_DIALECT=$label DITTOFS_FIRST_RUN=$first DITTOFS_LAST_RUN=$last run_script "$MNT"
	rc=$?
	echo "dittofs-vm: cifs vers=$label script status $rc"
	# SMB2 commands the kernel client sent during the run, and the failures it counted.
	if [ -r /proc/fs/cifs/Stats ]; then
		echo "dittofs-vm: cifs commands sent (vers=$label):"
		sed -n '/^[0-9]*) \\\\/,$p' /proc/fs/cifs/Stats
	fi
	cd /
	if ! umount "$MNT"; then
		echo "dittofs-vm: umount $MNT (vers=$label) failed"
		[ $rc -eq 0 ] && rc=245
	fi
	[ $status -eq 0 ] && status=$rc
done
finish $status
