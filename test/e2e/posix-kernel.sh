#!/bin/sh
# POSIX file-system checks run by busybox sh as root inside the test VM, with the working
# directory at the root of a Linux-kernel NFSv3 or cifs mount (see hack/vm/run-vm-test.sh).
# Prints "PASS: <check>" or "FAIL: <check>" per check (test/e2e/kernel-client.test.ts and
# kernel-cifs.test.ts expect every PASS line listed there), "INFO: ..." lines with timings, and
# exits non-zero if any check failed. Expected contents are generated in the VM's tmpfs (/tmp) and
# compared with cmp; caches are dropped (sync + drop_caches) before reading back so data comes
# from the server.
# DITTOFS_FS=cifs (set by the VM's /init, with DITTOFS_DIALECT) runs what SMB 2.0.2/2.1 semantics
# allow: a client without unix extensions shows every file with the mount's owner and modes, has
# no symlinks and no chown, and maps chmod to the DOS read-only attribute; those checks are
# replaced or left out (see t_perms_cifs).
# Leaves ./kernel-client-marker (cifs: ./kernel-cifs-marker-<dialect> and
# ./kernel-cifs-data-<dialect>) for the host to read; everything else it creates is removed.

MNT=$(pwd)
FS=${DITTOFS_FS:-nfs}
DIALECT=${DITTOFS_DIALECT:-}
W=$MNT/posix-kernel.work
T=/tmp/posix-expect.$$
USER_UID=1000
if [ "$FS" = cifs ]; then
	MARKER_NAME=kernel-cifs-marker-$DIALECT
	MARKER_CONTENT="written by the Linux kernel cifs client (vers=$DIALECT) in the DittoFS test VM"
	BIG_MIB=32
else
	MARKER_NAME=kernel-client-marker
	MARKER_CONTENT='written by the Linux kernel NFS client in the DittoFS test VM'
	BIG_MIB=3
fi
failures=0
passes=0

pass() { echo "PASS: $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
info() { echo "INFO: $*"; }
# ck DESC CMD...: PASS if CMD succeeds, else FAIL (returns 1 so a section can stop).
ck() {
	_d=$1
	shift
	if "$@"; then pass "$_d"; else fail "$_d"; return 1; fi
}
# eq DESC GOT WANT
eq() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (got '$2', want '$3')"; return 1; fi
}
# Write dirty pages back and forget cached pages, dentries and inodes, so reads go to the server.
flush() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}
# Run a shell command as uid/gid 1000 (busybox su as root needs no password).
as_user() { su -s /bin/sh tester -c "$1" </dev/null; }
# user_denied CMD: succeeds if CMD run as uid 1000 fails (its error messages are discarded).
user_denied() { ! su -s /bin/sh tester -c "$1" </dev/null >/dev/null 2>&1; }
# Seconds since boot with centiseconds, for timings.
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
size_of() { stat -c %s "$1" 2>/dev/null; }
# same_content A B: A and B hold the same bytes, compared by sha256 of 1 MiB reads (cmp reads
# 4 KiB at a time, one uncached READ each over cifs without an oplock: 9 s for 32 MiB here).
same_content() {
	[ "$(dd if="$1" bs=1048576 2>/dev/null | sha256sum)" = "$(dd if="$2" bs=1048576 2>/dev/null | sha256sum)" ]
}

rm -rf "$T" && mkdir -p "$T" || { echo "FAIL: tmpfs work dir"; exit 1; }
if [ -e "$W" ]; then
	info "removing leftovers of an earlier run: $W"
	rm -rf "$W"
fi
mkdir "$W" || { echo "FAIL: create work dir $W"; exit 1; }
chmod 0755 "$W"
cd "$W" || exit 1
info "work dir $W ($FS${DIALECT:+ vers=$DIALECT})"

# --- directories ----------------------------------------------------------------------------
t_mkdir() {
	ck "mkdir -p a/b/c/d/e/f" mkdir -p a/b/c/d/e/f || return
	ck "deep directory exists" test -d a/b/c/d/e/f || return
	flush
	eq "deep tree visible after cache drop" "$(find a -type d | wc -l)" 6 || return
	ck "mkdir of an existing directory fails" sh -c '! mkdir a 2>/dev/null' || return
	ck "rmdir of a non-empty directory fails" sh -c '! rmdir a/b/c/d/e 2>/dev/null' || return
	ck "rmdir of an empty directory" rmdir a/b/c/d/e/f || return
	ck "removed directory is gone" test ! -e a/b/c/d/e/f
}

# --- regular files --------------------------------------------------------------------------
t_files() {
	printf 'hello\n' >"$T/e1"
	printf 'hello\nworld\n' >"$T/e2"
	printf 'new\n' >"$T/e3"
	printf 'hello\n' >f || { fail "create file"; return; }
	flush
	ck "create file and read back" cmp -s f "$T/e1" || return
	printf 'world\n' >>f
	flush
	ck "append to file" cmp -s f "$T/e2" || return
	printf 'new\n' >f
	flush
	ck "overwrite file (O_TRUNC) with shorter content" cmp -s f "$T/e3" || return
	eq "size after overwrite" "$(size_of f)" 4 || return

	head -c $((BIG_MIB * 1048576)) /dev/urandom >"$T/big"
	_t0=$(now)
	cp "$T/big" big || { fail "write $BIG_MIB MiB file"; return; }
	flush
	info "wrote $BIG_MIB MiB in $(elapsed "$_t0")s"
	_t0=$(now)
	# Through dd bs=1M: without an oplock the cifs client reads uncached, one READ per read(2),
	# and sha256sum reads 4 KiB at a time. (Not through cat: busybox cat splices into the pipe,
	# and Linux 6.1 cifs pads an uncached splice read with zeros to a 64 KiB multiple plus 64 KiB;
	# smbd with oplocks off gives the same.)
	_sum=$(dd if=big bs=1048576 2>/dev/null | sha256sum | cut -d' ' -f1)
	info "read $BIG_MIB MiB in $(elapsed "$_t0")s"
	eq "$BIG_MIB MiB file sha256 after cache drop" "$_sum" "$(sha256sum <"$T/big" | cut -d' ' -f1)" || return
	# Unaligned in-place overwrite in the middle, then an append, mirrored on the tmpfs copy.
	head -c 5000 /dev/urandom >"$T/patch"
	dd if="$T/patch" of=big bs=1000 seek=1001 conv=notrunc 2>/dev/null
	dd if="$T/patch" of="$T/big" bs=1000 seek=1001 conv=notrunc 2>/dev/null
	flush
	ck "unaligned overwrite in the middle of a file" same_content big "$T/big" || return
	cat "$T/patch" >>big
	cat "$T/patch" >>"$T/big"
	flush
	ck "append to a large file" same_content big "$T/big" || return
	# With noclobber (set -C) the shell opens with O_CREAT|O_EXCL: NFSv3 CREATE in EXCLUSIVE
	# mode, SMB2 CREATE with FILE_CREATE. (A failing redirection on ':' would end the shell, hence
	# 'true'.)
	ck "exclusive create (O_EXCL) of a new file" sh -c 'set -C; true >excl' || return
	ck "exclusive create (O_EXCL) of an existing file fails" sh -c 'set -C; ! true >excl' 2>/dev/null || return
	ck "empty file has size 0" test "$(size_of excl)" = 0 || return
	rm -f f big excl
	ck "unlink removes files" sh -c '! test -e f && ! test -e big && ! test -e excl'
}

# --- rename ---------------------------------------------------------------------------------
t_rename() {
	printf 'old content\n' >dst
	printf 'new content\n' >src
	printf 'new content\n' >"$T/src"
	ck "rename over an existing file" mv -f src dst || return
	flush
	ck "renamed source name is gone" test ! -e src || return
	ck "rename target has the new content" cmp -s dst "$T/src" || return
	mkdir d1 && printf 'inside\n' >d1/in
	ck "rename a directory" mv d1 d2 || return
	flush
	ck "renamed directory keeps its contents" sh -c 'test ! -e d1 && test "$(cat d2/in)" = inside' || return
	ck "rename across directories" mv d2/in a/b/moved || return
	flush
	ck "file moved across directories" sh -c 'test ! -e d2/in && test "$(cat a/b/moved)" = inside' || return
	rm -rf dst d2
}

# --- hard links -----------------------------------------------------------------------------
t_hardlinks() {
	printf 'linked\n' >h1
	ck "hard link (ln)" ln h1 h2 || return
	flush
	eq "link count 2 after ln" "$(stat -c %h h1) $(stat -c %h h2)" "2 2" || return
	eq "hard links share the inode number" "$(stat -c %i h1)" "$(stat -c %i h2)" || return
	printf 'more\n' >>h2
	flush
	eq "write through one link is seen through the other" "$(cat h1)" "$(printf 'linked\nmore')" || return
	rm h1
	flush
	eq "link count 1 after removing one link" "$(stat -c %h h2)" 1 || return
	eq "remaining link keeps the data" "$(cat h2)" "$(printf 'linked\nmore')" || return
	rm h2
}

# --- symbolic links -------------------------------------------------------------------------
t_symlinks() {
	printf 'target data\n' >target
	ck "symlink (ln -s)" ln -s target s1 || return
	flush
	ck "symlink is a symlink" test -L s1 || return
	eq "readlink of symlink" "$(readlink s1)" target || return
	eq "read through symlink" "$(cat s1)" "target data" || return
	ln -s /nonexistent/dangling/target dang
	flush
	ck "dangling symlink readlink" sh -c 'test -L dang && ! test -e dang && test "$(readlink dang)" = /nonexistent/dangling/target' || return
	long=$(printf '%0200d' 0 | tr 0 x)/$(printf '%0200d' 0 | tr 0 y)
	ln -s "$long" longlink
	flush
	eq "symlink with a 401-byte target" "$(readlink longlink)" "$long" || return
	ln -s a/b sd
	flush
	ck "symlink to a directory" test -d sd/c || return
	rm s1 dang longlink sd target
	ck "removing symlinks" sh -c '! test -L s1 && ! test -L sd && test -d a/b'
}

# --- permissions and ownership ----------------------------------------------------------------
t_perms() {
	: >p
	chmod 0640 p
	flush
	eq "chmod 0640" "$(stat -c %a p)" 640 || return
	chmod 0755 p
	flush
	eq "chmod 0755" "$(stat -c %a p)" 755 || return
	chmod 0 p
	flush
	eq "chmod 0000" "$(stat -c %a p)" 0 || return
	mkdir sticky && chmod 1777 sticky
	flush
	eq "chmod 1777 on a directory" "$(stat -c %a sticky)" 1777 || return
	chown "$USER_UID:$USER_UID" p
	flush
	eq "chown as root" "$(stat -c %u:%g p)" "$USER_UID:$USER_UID" || return
	chgrp 0 p
	flush
	eq "chgrp as root" "$(stat -c %u:%g p)" "$USER_UID:0" || return
	rm -rf p sticky

	mkdir shared rootdir
	chmod 0777 shared
	chmod 0755 rootdir
	printf 'root data\n' >shared/rootfile
	chmod 0644 shared/rootfile
	flush
	ck "uid 1000 can read a root-owned 0644 file" as_user "cat $W/shared/rootfile >/dev/null" || return
	ck "uid 1000 cannot write a root-owned 0644 file" user_denied "echo x >>$W/shared/rootfile" || return
	flush
	eq "root-owned file unchanged after denied write" "$(cat shared/rootfile)" "root data" || return
	ck "uid 1000 creates its own file" as_user "echo mine >$W/shared/userfile" || return
	flush
	eq "new file owned by uid/gid 1000" "$(stat -c %u:%g shared/userfile)" "$USER_UID:$USER_UID" || return
	ck "uid 1000 writes its own file" as_user "echo more >>$W/shared/userfile" || return
	flush
	eq "uid 1000 file content" "$(cat shared/userfile)" "$(printf 'mine\nmore')" || return
	ck "uid 1000 chmods its own file" as_user "chmod 0600 $W/shared/userfile" || return
	flush
	eq "mode after uid 1000 chmod" "$(stat -c %a shared/userfile)" 600 || return
	ck "uid 1000 cannot chown its file to root" user_denied "chown 0:0 $W/shared/userfile" || return
	flush
	eq "owner unchanged after denied chown" "$(stat -c %u:%g shared/userfile)" "$USER_UID:$USER_UID" || return
	ck "uid 1000 cannot chmod a root-owned file" user_denied "chmod 0666 $W/shared/rootfile" || return
	flush
	eq "mode unchanged after denied chmod" "$(stat -c %a shared/rootfile)" 644 || return
	ck "uid 1000 cannot create in a root-owned 0755 directory" user_denied ": >$W/rootdir/x" || return
	flush
	ck "no file created by the denied create" test ! -e rootdir/x || return
	chmod 0600 shared/rootfile
	flush
	ck "uid 1000 cannot read a root-owned 0600 file" user_denied "cat $W/shared/rootfile" || return
	eq "root reads a uid 1000 0600 file" "$(cat shared/userfile)" "$(printf 'mine\nmore')" || return
	rm -rf shared rootdir
}

# Without unix extensions (SMB 2.0.2/2.1) a chmod reaches the server only as the DOS read-only
# attribute (SET_INFO FileBasicInformation): removing every write bit sets it, adding one clears
# it; other mode changes, chown and chgrp are accepted and dropped by the client. The modes and
# owners the client shows are the mount's (uid=0, file_mode=0755), so only the read-only
# attribute and what the server enforces with it are checked. The server checks permissions as
# the session's control-plane user (uid 1000), not as the VM's root.
no_write_bits() { case "$(stat -c %A "$1")" in *w*) return 1 ;; *) return 0 ;; esac; }
has_write_bits() { ! no_write_bits "$1"; }
t_perms_cifs() {
	printf 'protected\n' >ro
	ck "chmod a-w sets the read-only attribute" chmod a-w ro || return
	flush
	ck "read-only file shows no write bits after cache drop" no_write_bits ro || return
	ck "read-only file refuses a write" sh -c "! printf 'x' >>ro 2>/dev/null" || return
	flush
	eq "read-only file unchanged after the refused write" "$(cat ro)" protected || return
	ck "chmod u+w clears the read-only attribute" chmod u+w ro || return
	flush
	ck "writable again after cache drop" has_write_bits ro || return
	printf 'more\n' >>ro
	flush
	eq "write after clearing read-only" "$(cat ro)" "$(printf 'protected\nmore')" || return
	rm -f ro
}

# SMB names are UTF-16 on the wire: accented letters, and a character outside the BMP that takes
# a surrogate pair there (4 bytes of UTF-8 here and in the server's store).
t_names_cifs() {
	n1='été ünïcödé'
	n2='emoji 😀 name'
	printf 'u1\n' >"$n1" && printf 'u2\n' >"$n2" || { fail "create files with non-ASCII names"; return; }
	flush
	# The shell's glob, not ls: busybox ls prints every non-ASCII byte as '?'.
	eq "non-ASCII names listed exactly" "$(printf '%s\n' * | grep -e ünïcödé -e emoji | LC_ALL=C sort)" "$(printf '%s\n' "$n1" "$n2" | LC_ALL=C sort)" || return
	eq "a name with a UTF-16 surrogate pair reads back" "$(cat "$n2")" u2 || return
	rm -f "$n1" "$n2"
}

# --- truncate -------------------------------------------------------------------------------
t_truncate() {
	printf '%0100d' 7 >"$T/tr100"
	cp "$T/tr100" tr
	ck "truncate -s 10000 (extend)" truncate -s 10000 tr || return
	cp "$T/tr100" "$T/tr10000" && truncate -s 10000 "$T/tr10000"
	flush
	eq "size after extend" "$(size_of tr)" 10000 || return
	ck "extended file: old data then zeros" cmp -s tr "$T/tr10000" || return
	eq "extended region reads as zeros" "$(tail -c 9900 tr | tr -d '\000' | wc -c)" 0 || return
	ck "truncate -s 50 (shrink)" truncate -s 50 tr || return
	flush
	eq "size after shrink" "$(size_of tr)" 50 || return
	ck "shrunk file is the prefix" sh -c "head -c 50 '$T/tr100' | cmp -s - tr" || return
	truncate -s 0 tr
	flush
	eq "truncate to 0" "$(size_of tr)" 0 || return
	# 64-bit sizes and offsets: a sparse 5 GiB file with a few bytes at its very end.
	ck "truncate -s 5G (sparse, 64-bit size)" truncate -s 5368709120 tr || return
	printf 'ending' | dd of=tr bs=1 seek=5368709114 conv=notrunc 2>/dev/null
	flush
	eq "size of 5 GiB file" "$(size_of tr)" 5368709120 || return
	eq "data at a 64-bit offset" "$(dd if=tr bs=1 skip=5368709114 count=6 2>/dev/null)" ending || return
	eq "hole before a 64-bit offset reads as zeros" "$(dd if=tr bs=4096 skip=1310718 count=1 2>/dev/null | tr -d '\000' | wc -c)" 0 || return
	rm -f tr
}

# --- a 10,000-entry directory ---------------------------------------------------------------
# Over cifs, creating and removing 10,000 files through the emulated VM takes about two and three
# minutes, so the dialects of one boot share the directory: the first run creates it
# (DITTOFS_FIRST_RUN=1 from the VM's /init), every run lists it, the last (DITTOFS_LAST_RUN=1)
# removes it. Files are created with '>>' (no O_TRUNC, so no truncating SETATTR / SET_INFO on
# each new empty file).
t_bigdir() {
	many=many
	create=1
	remove=1
	if [ "$FS" = cifs ]; then
		many=$MNT/posix-kernel.many
		[ "${DITTOFS_FIRST_RUN:-1}" = 1 ] || create=0
		[ "${DITTOFS_LAST_RUN:-1}" = 1 ] || remove=0
	fi
	if [ $create = 1 ]; then
		mkdir "$many" || { fail "mkdir for 10000 entries"; return; }
		_t0=$(now)
		(
			cd "$many" || exit 1
			i=0
			while [ $i -lt 10000 ]; do
				: >>"f$i" || exit 1
				i=$((i + 1))
			done
		)
		_rc=$?
		info "created 10000 files in $(elapsed "$_t0")s"
		ck "create 10000 files in one directory" test $_rc = 0 || return
	else
		info "listing the 10000 files an earlier dialect created"
	fi
	i=0
	while [ $i -lt 10000 ]; do
		echo "f$i"
		i=$((i + 1))
	done | LC_ALL=C sort >"$T/want"
	flush
	_t0=$(now)
	ls "$many" >"$T/ls"
	_rc=$?
	info "listed 10000 entries in $(elapsed "$_t0")s"
	ck "ls of the 10000-entry directory succeeds" test $_rc = 0 || return
	eq "ls | wc -l of the 10000-entry directory" "$(wc -l <"$T/ls")" 10000 || return
	LC_ALL=C sort "$T/ls" >"$T/got"
	ck "10000 listed names match exactly" cmp -s "$T/got" "$T/want" || return
	flush
	eq "find sees 10000 files" "$(find "$many" -type f | wc -l)" 10000 || return
	[ $remove = 1 ] || return 0
	_t0=$(now)
	rm -rf "$many"
	_rc=$?
	info "removed 10000 files in $(elapsed "$_t0")s"
	flush
	ck "rm -rf of the 10000-entry directory" sh -c "test $_rc = 0 && ! test -e '$many'"
}

# --- cp -a, diff -r, rm -rf ------------------------------------------------------------------
# One line per entry: path, type, mode, owner, and size + mtime for regular files. (On cifs the
# mode shows only the read-only attribute and the owner is the mount's: still compared, they
# must match too.)
tree_meta() {
	(
		cd "$1" || exit 1
		find . | LC_ALL=C sort | while read -r p; do
			if [ -L "$p" ]; then
				echo "$p link $(readlink "$p")"
			elif [ -d "$p" ]; then
				echo "$p dir $(stat -c '%a %u:%g' "$p")"
			else
				echo "$p file $(stat -c '%a %u:%g %s %Y' "$p")"
			fi
		done
	)
}
t_cptree() {
	mkdir -p src/d1/d2/d3 src/empty
	printf 'one\n' >src/one
	head -c 200000 /dev/urandom >src/d1/random
	printf 'deep\n' >src/d1/d2/d3/deep
	: >src/d1/emptyfile
	printf 'exec\n' >src/d1/d2/run.sh && chmod 0755 src/d1/d2/run.sh
	printf 'private\n' >src/d1/private && chmod 0600 src/d1/private
	if [ "$FS" = cifs ]; then
		# No symlinks or chown without unix extensions; a read-only file instead.
		printf 'read-only\n' >src/d1/readonly && chmod 0444 src/d1/readonly
	else
		printf 'user\n' >src/d1/userowned && chown "$USER_UID:$USER_UID" src/d1/userowned
		ln -s d1/d2/d3/deep src/link
	fi
	touch -d '2001-02-03 04:05:06' src/one src/d1/random
	_t0=$(now)
	ck "cp -a of a tree" cp -a src dst || return
	info "cp -a in $(elapsed "$_t0")s"
	flush
	ck "diff -r of the copy" diff -r src dst || return
	tree_meta src >"$T/meta-src"
	tree_meta dst >"$T/meta-dst"
	ck "cp -a keeps types, modes, owners, sizes, mtimes" cmp -s "$T/meta-src" "$T/meta-dst" || {
		diff "$T/meta-src" "$T/meta-dst"
		return
	}
	eq "cp -a keeps an old mtime" "$(stat -c %Y dst/one)" "$(stat -c %Y src/one)" || return
	if [ "$FS" = cifs ]; then
		ck "copied file keeps the read-only attribute" no_write_bits dst/d1/readonly || return
	else
		eq "copied symlink target" "$(readlink dst/link)" d1/d2/d3/deep || return
	fi
	rm -rf src dst
	flush
	ck "rm -rf of the trees leaves nothing" sh -c '! test -e src && ! test -e dst && ! test -L dst/link' || return
}

# --- df -------------------------------------------------------------------------------------
t_df() {
	out=$(df -k -P "$MNT" 2>&1)
	_rc=$?
	echo "$out"
	ck "df on the mount succeeds" test $_rc = 0 || return
	size=$(echo "$out" | awk 'NR == 2 { print $2 }')
	avail=$(echo "$out" | awk 'NR == 2 { print $4 }')
	ck "df shows a size" sh -c "test '$size' -gt 0 2>/dev/null" || return
	ck "df available <= size" sh -c "test '$avail' -le '$size' 2>/dev/null"
}

# --- marker for the host ------------------------------------------------------------------------
t_marker() {
	printf '%s\n' "$MARKER_CONTENT" >"$MNT/$MARKER_NAME"
	printf '%s\n' "$MARKER_CONTENT" >"$T/marker"
	flush
	ck "marker file written" cmp -s "$MNT/$MARKER_NAME" "$T/marker" || return
	if [ "$FS" = cifs ]; then
		# 1 MiB + 7 bytes of random data the host reads back through NFS and compares by sha256.
		head -c 1048583 /dev/urandom >"$T/data"
		cp "$T/data" "$MNT/kernel-cifs-data-$DIALECT"
		flush
		ck "data file for the host written" cmp -s "$MNT/kernel-cifs-data-$DIALECT" "$T/data" || return
		echo "DATA-SHA256 kernel-cifs-data-$DIALECT $(sha256sum <"$T/data" | cut -d' ' -f1)"
	fi
}

_start=$(now)
if [ "$FS" = cifs ]; then
	sections="t_mkdir t_files t_rename t_hardlinks t_perms_cifs t_names_cifs t_truncate t_bigdir t_cptree t_df t_marker"
else
	sections="t_mkdir t_files t_rename t_hardlinks t_symlinks t_perms t_truncate t_bigdir t_cptree t_df t_marker"
fi
for section in $sections; do
	_s0=$(now)
	cd "$W" || { fail "cd to work dir"; break; }
	$section
	info "$section took $(elapsed "$_s0")s"
done

cd "$MNT" || exit 1
rm -rf "$W"
flush
ck "work dir removed" sh -c "! test -e '$W' && ! ls -a | grep -q '^posix-kernel\.work\$'"
rm -rf "$T"
info "total $(elapsed "$_start")s"
echo "SUMMARY: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
