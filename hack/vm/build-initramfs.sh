#!/usr/bin/env bash
# Builds (or reuses from the cache) the boot set of the DittoFS kernel-client test VM:
#   OUTDIR/vmlinuz            the host's Debian kernel (/boot/vmlinuz-<ver>)
#   OUTDIR/initramfs.cpio.gz  busybox-static, the network, NFSv3 and cifs client modules, /etc/passwd
#                             and /etc/group (root, tester uid/gid 1000) and hack/vm/init.sh as /init
#   OUTDIR/kernel-version     the kernel version
# The set is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-vm/<ver>-<hash of the inputs>
# and copied (hard-linked when possible) to OUTDIR. OUTDIR defaults to that cache directory.
# Environment: E2E_VM_KERNEL=<ver> picks a kernel under /boot (default: newest with modules).
# Prints OUTDIR on stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
init_src="$here/init.sh"
busybox=/bin/busybox

die() { echo "build-initramfs: $*" >&2; exit 1; }

# --- pick the kernel -----------------------------------------------------------------------
kver=${E2E_VM_KERNEL:-}
if [ -z "$kver" ]; then
  # Newest /boot/vmlinuz-* that has a module tree and a config.
  for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V -r); do
    if [ -d "/lib/modules/$k" ] && [ -f "/boot/config-$k" ]; then kver=$k; break; fi
  done
fi
[ -n "$kver" ] || die "no kernel found (need /boot/vmlinuz-*, /boot/config-* and /lib/modules/*: run hack/install-deps.sh vm)"
kernel=/boot/vmlinuz-$kver
config=/boot/config-$kver
moddir=/lib/modules/$kver
for f in "$kernel" "$config" "$moddir/modules.dep"; do [ -r "$f" ] || die "missing or unreadable $f"; done
[ -x "$busybox" ] || die "missing $busybox (apt-get install busybox-static)"
if command -v file >/dev/null; then
  file -b -L "$busybox" | grep -q 'statically linked' || die "$busybox is not statically linked (install busybox-static)"
fi
command -v cpio >/dev/null || die "cpio not installed"

# --- which modules ------------------------------------------------------------------------
# Wanted config options -> module names. Built-in (=y) options need no module; =m ones do.
wanted=(
  "VIRTIO virtio" "VIRTIO_RING virtio_ring" "VIRTIO_PCI virtio_pci" "VIRTIO_NET virtio_net"
  "E1000 e1000"
  "SUNRPC sunrpc" "GRACE grace" "LOCKD lockd" "NFS_FS nfs" "NFS_V3 nfsv3" "NFS_ACL_SUPPORT nfs_acl"
  "NETFS_SUPPORT netfs" "FSCACHE fscache"
  # The SMB2 client. cifs's own dependencies (cifs_md4, cifs_arc4, dns_resolver, ...) come from
  # modules.dep and its soft dependencies (the crypto it asks for by name) from modules.softdep,
  # below. gcm instantiates ctr(aes) and ghash at run time, which no module file records.
  "CIFS cifs" "NLS_UTF8 nls_utf8" "CRYPTO_CTR ctr" "CRYPTO_GHASH ghash_generic" "CRYPTO_GF128MUL gf128mul"
)
# Options that must be set one way or the other, else the VM cannot work.
for opt in VIRTIO_PCI NFS_FS NFS_V3 CIFS SUNRPC INET BLK_DEV_INITRD RD_GZIP DEVTMPFS TMPFS SERIAL_8250_CONSOLE; do
  grep -Eq "^CONFIG_$opt=(y|m)$" "$config" || die "kernel $kver lacks CONFIG_$opt"
done
roots=()
for w in "${wanted[@]}"; do
  opt=${w% *}; mod=${w#* }
  if grep -q "^CONFIG_$opt=m$" "$config"; then roots+=("$mod"); fi
done

# modules.dep maps "kernel/.../name.ko[.xz|.zst|.gz]: dep dep ...". Resolve names to paths and
# order so that every module comes after all its dependencies (depth-first post-order).
declare -A path_of deps_of state
while IFS= read -r line; do
  p=${line%%:*}
  name=${p##*/}; name=${name%%.ko*}
  path_of[$name]=$p
  deps_of[$p]=${line#*:}
done <"$moddir/modules.dep"
order=()
visit() {
  local p=$1 d
  case "${state[$p]:-}" in done) return ;; active) die "dependency cycle at $p" ;; esac
  state[$p]=active
  for d in ${deps_of[$p]}; do visit "$d"; done
  state[$p]=done
  order+=("$p")
}
# Module names use '_' but file names may use '-'.
path_of_module() { echo "${path_of[$1]:-${path_of[${1//_/-}]:-}}"; }

# Soft dependencies ("softdep cifs pre: ccm gcm ..." in modules.softdep; Debian writes them without
# "pre:") name crypto algorithms the module looks up at run time. A name is a module's own name
# or a "crypto-NAME" alias. Only the generic C implementation of an alias is taken: the x86
# accelerated ones (aesni_intel, sha512_ssse3) need CPU features QEMU's emulated CPU may lack, and
# an algorithm with no module (aes, sha256, hmac, md5 here) is built into the kernel.
declare -A alias_of
while read -r _ a m; do
  case "$a" in crypto-*) alias_of[$a]+=" $m" ;; esac
done < <(grep '^alias crypto-' "$moddir/modules.alias" 2>/dev/null || true)
softdeps_of() {
  local m=$1 line w c
  [ -r "$moddir/modules.softdep" ] || return 0
  while read -r line; do
    set -- $line
    [ "${1:-}" = softdep ] && [ "${2:-}" = "$m" ] || continue
    shift 2
    for w in "$@"; do
      case "$w" in pre: | post:) continue ;; esac
      if [ -n "$(path_of_module "$w")" ]; then echo "$w"; continue; fi
      for c in ${alias_of[crypto-$w]:-}; do
        case "$c" in *_generic) [ -n "$(path_of_module "$c")" ] && echo "$c" ;; esac
      done
    done
  done <"$moddir/modules.softdep"
}
declare -A is_root
for m in "${roots[@]}"; do is_root[$m]=1; done
for m in "${roots[@]}"; do
  for d in $(softdeps_of "$m"); do
    [ -n "${is_root[$d]:-}" ] || { roots+=("$d"); is_root[$d]=1; }
  done
done
for m in "${roots[@]}"; do
  p=$(path_of_module "$m")
  [ -n "$p" ] || die "module $m is =m in $config but not in $moddir/modules.dep"
  visit "$p"
done
for p in "${order[@]}"; do
  case "$p" in *.ko) ;; *) die "compressed module $p: busybox insmod in the VM cannot load it" ;; esac
done

# --- cache key ----------------------------------------------------------------------------
key_input=$(
  echo "kernel $kver $(stat -c '%s %Y' "$kernel")"
  sha256sum "${BASH_SOURCE[0]}" "$init_src" "$busybox" | cut -d' ' -f1
  for p in "${order[@]}"; do echo "$p $(stat -c '%s %Y' "$moddir/$p")"; done
  stat -c '%n %s %Y' "$moddir/modules.dep" "$moddir/modules.softdep" "$moddir/modules.alias" 2>/dev/null || true
)
key=$(printf '%s\n' "$key_input" | sha256sum | cut -c1-16)
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-vm
cache=$cache_root/$kver-$key
outdir=${1:-$cache}

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock -w 300 9 || die "timed out waiting for $cache_root/.lock"

if [ ! -f "$cache/complete" ]; then
  echo "build-initramfs: building $cache" >&2
  tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  root=$tmp/root
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt/nfs,mnt/cifs,root,test,lib/modules}
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  # Applet symlinks: busybox --list-full gives paths like usr/bin/awk.
  for a in $("$busybox" --list-full); do
    [ "$a" = bin/busybox ] && continue
    mkdir -p "$root/$(dirname "$a")"
    ln -sf /bin/busybox "$root/$a"
  done
  [ -e "$root/bin/sh" ] || ln -s busybox "$root/bin/sh"
  install -m 0755 "$init_src" "$root/init"
  for p in "${order[@]}"; do cp "$moddir/$p" "$root/lib/modules/$(basename "$p")"; done
  for p in "${order[@]}"; do basename "$p"; done >"$root/etc/dittofs-modules.order"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
tester:x:1000:1000:tester:/tmp:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
tester:x:1000:
nogroup:x:65534:
EOF
  echo "/bin/sh" >"$root/etc/shells"
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -6 -n >"$tmp/initramfs.cpio.gz"
  cp "$kernel" "$tmp/vmlinuz"
  echo "$kver" >"$tmp/kernel-version"
  printf '%s\n' "${order[@]}" >"$tmp/modules"
  touch "$tmp/complete"
  rm -rf "$root"
  rm -rf "$cache"
  mv "$tmp" "$cache"
  trap - EXIT
  # Drop older builds (other keys) of this cache.
  find "$cache_root" -mindepth 1 -maxdepth 1 -type d ! -path "$cache" ! -name '.build.*' -exec rm -rf {} + 2>/dev/null || true
fi

if [ "$outdir" != "$cache" ]; then
  mkdir -p "$outdir"
  for f in vmlinuz initramfs.cpio.gz kernel-version modules; do
    rm -f "$outdir/$f"
    ln "$cache/$f" "$outdir/$f" 2>/dev/null || cp "$cache/$f" "$outdir/$f"
  done
fi
echo "$outdir"
