#!/usr/bin/env bash
# Installs the Debian packages DittoFS needs to run and test, idempotently; for bench (and all)
# also versitygw, built from the Go module proxy into ~/.cache (hack/s3/build-versitygw.sh).
# Usage: hack/install-deps.sh [run|node|build|test|bench|vm|k8s-node|all]   (default: test)
set -euo pipefail
what=${1:-test}
here=$(cd "$(dirname "$0")" && pwd -P)

# The S3 server of the benchmark's postgres-s3 rows (test/bench/versitygw.ts). No Debian package
# has it; without Go (1.25 or newer) the bench falls back to s3rver.
build_versitygw() {
  if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then
    "$here/s3/build-versitygw.sh"
  else
    echo "hack/install-deps.sh: no Go (PATH or /usr/local/go/bin): versitygw not built; the bench's postgres-s3 rows use s3rver" >&2
  fi
}

run_pkgs=()
node_pkgs=(nodejs npm)
# npm builds the native module better-sqlite3 (the embedded SQLite metadata engine) from source
# where its prebuilt binary cannot be fetched: python3, make and g++ (node-gyp), against the
# installed Node's headers (npm_config_nodedir, e.g. /usr for Debian's or NodeSource's nodejs).
build_pkgs=(python3 make g++)
# samba-testsuite: smbtorture (test/e2e/smbtorture.test.ts); curl and jq: hack/smb/torture.sh;
# gcc and libc6-dev: the LD_PRELOAD shim of the crash tests (test/fault/volatile-meta.c).
test_pkgs=(libnfs-utils postgresql openssl smbclient samba-testsuite curl jq redis-server gcc libc6-dev)
vm_pkgs=(qemu-system-x86 busybox-static linux-image-amd64 cpio)
# The Kubernetes node of test/k8s/node.test.ts (hack/k8s/node.sh: containerd, runc, the CNI
# plugins, iptables for kube-proxy; gcc + libc6-dev: the static pause binary of hack/k8s/build.sh)
# and its images (hack/k8s/images.sh: debootstrap, buildah).
k8s_node_pkgs=(containerd runc containernetworking-plugins iptables buildah debootstrap gcc libc6-dev)
# samba (smbd) and samba-vfs-modules (streams_xattr): the SMB reference of test/bench/smb.ts and
# hack/smb/torture.sh.
bench_pkgs=(libnfs-utils nfs-ganesha nfs-ganesha-vfs rpcbind samba samba-vfs-modules)

case "$what" in
  run) pkgs=("${run_pkgs[@]}") ;;
  node) pkgs=("${node_pkgs[@]}") ;;
  build) pkgs=("${build_pkgs[@]}") ;;
  test) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}" "${vm_pkgs[@]}" "${k8s_node_pkgs[@]}") ;;
  k8s-node) pkgs=("${k8s_node_pkgs[@]}") ;;
  vm) pkgs=("${vm_pkgs[@]}") ;;
  bench) pkgs=("${bench_pkgs[@]}") ;;
  all) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}" "${vm_pkgs[@]}" "${k8s_node_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 [run|node|build|test|bench|vm|k8s-node|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  case "$what" in bench | all) build_versitygw ;; esac
  exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "hack/install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists at most once an hour.
if [ ! -f /var/lib/apt/lists/lock ] || [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
  echo "hack/install-deps.sh: refreshing the package lists (apt-get update)" >&2
  $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
fi
# Do not let package scripts start daemons (ganesha, rpcbind) on install.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
t=$(date +%s)
$SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "hack/install-deps.sh: installed ${missing[*]} in $(( $(date +%s) - t )) s" >&2
case "$what" in bench | all) build_versitygw ;; esac
