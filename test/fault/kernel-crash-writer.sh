#!/bin/sh
# Guest side of test/fault/kernel-crash.test.ts: run by busybox sh as root inside the test VM
# (hack/vm/run-nfs-test.sh), with the working directory at the root of a HARD Linux-kernel NFSv3
# mount. It copies a file of pseudorandom data onto the mount with `dd conv=fsync` while the host
# kills the DittoFS server with SIGKILL and restarts it; the kernel client must resend whatever the
# restarted server (new write verifier) had not committed, and the copy must come out identical.
#
# SIZE_MIB (default 48) may be set by a line the host prepends. Prints, for the host to parse:
#   CRASH-WRITER: source-sha256 <hex>
#   CRASH-WRITER: copy-start
#   CRASH-WRITER: copy-done rc=<dd status> seconds=<s>
#   CRASH-WRITER: mount-sha256 <hex>      (read back right after the copy)
#   CRASH-WRITER: reread-sha256 <hex>     (after sync + drop_caches: read from the server)
# and exits 0 only if both sums equal the source's.

SIZE_MIB=${SIZE_MIB:-48}
SRC=/tmp/crash-source.bin
DST=./crash.bin

now() { cut -d' ' -f1 /proc/uptime; }
sum_of() { sha256sum "$1" | cut -d' ' -f1; }

echo "CRASH-WRITER: generating $SIZE_MIB MiB of pseudorandom data in tmpfs"
head -c $((SIZE_MIB * 1048576)) /dev/urandom >"$SRC" || { echo "CRASH-WRITER: cannot generate $SRC"; exit 1; }
src_sum=$(sum_of "$SRC")
echo "CRASH-WRITER: source-sha256 $src_sum"

# Write back dirty pages while dd runs (not all at fsync), so that the server is receiving WRITEs
# through most of the copy and the host's kills land in the middle of it.
echo $((1 * 1048576)) >/proc/sys/vm/dirty_background_bytes
echo $((4 * 1048576)) >/proc/sys/vm/dirty_bytes

rm -f "$DST"
t0=$(now)
echo "CRASH-WRITER: copy-start"
dd if="$SRC" of="$DST" bs=1M conv=fsync 2>/tmp/dd.err
rc=$?
t1=$(now)
echo "CRASH-WRITER: copy-done rc=$rc seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
[ $rc -eq 0 ] || cat /tmp/dd.err

mount_sum=$(sum_of "$DST")
echo "CRASH-WRITER: mount-sha256 $mount_sum"
sync
echo 3 >/proc/sys/vm/drop_caches
reread_sum=$(sum_of "$DST")
echo "CRASH-WRITER: reread-sha256 $reread_sum"

status=0
[ $rc -eq 0 ] || status=1
if [ "$reread_sum" != "$src_sum" ] || [ "$mount_sum" != "$src_sum" ]; then
	status=1
	echo "CRASH-WRITER: MISMATCH; first differing bytes (cmp -l | head):"
	cmp -l "$SRC" "$DST" 2>&1 | head -5
	echo "CRASH-WRITER: size on the mount: $(stat -c %s "$DST")"
fi
dmesg | grep -i 'nfs' | tail -10
exit $status
