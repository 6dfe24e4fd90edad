#!/usr/bin/env bash
# Builds the images the node tests run, without a registry or a Docker engine, and prints the
# docker-archive tarballs (one per line) for `hack/k8s/node.sh import`:
#
#   ghcr.io/dittofs/dittofs:<appVersion>           Dockerfile.server, unchanged (buildah bud)
#   ghcr.io/dittofs/dittofs-operator:<appVersion>  Dockerfile.operator, unchanged
#   localhost/dittofs-test-client:1                libnfs-utils + smbclient (test/k8s/client.Dockerfile)
#
# Their common base stands in for the Dockerfiles' NODE_IMAGE (node:<version>-bookworm-slim): a
# `debootstrap --variant=minbase bookworm` root file system plus this machine's Node.js (the same
# release, /usr/bin/node and npm), tagged with that name. The machine's certificate authorities go
# in too, so that `npm ci` in the build reaches the registry through whatever this machine trusts.
#
# Cached under ${DITTOFS_K8S_NODE_CACHE:-$HOME/.cache/dittofs/k8s-node}: the debootstrap root file
# system (once), buildah's own storage (its layer cache: --layers), and each image's tarball keyed
# by a hash of its inputs (the Dockerfile, the files its COPY lines can see, the base): a second run
# with nothing changed builds nothing and takes a second.
#
# Usage: hack/k8s/images.sh [--check]   (--check: exit 0 if every tarball is current, else 1)
# Needs root, debootstrap, buildah, and the network (Debian mirror once, the npm registry).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${DITTOFS_K8S_NODE_CACHE:-$HOME/.cache/dittofs/k8s-node}
MIRROR=${DITTOFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
NICE=${DITTOFS_K8S_NICE:-10}
APP_VERSION=$(sed -n "s/^appVersion: *['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\} *$/\1/p" "$REPO/charts/dittofs-operator/Chart.yaml")
NODE_VERSION=$(node --version | sed 's/^v//')
# The Dockerfiles' default base (ARG NODE_IMAGE): the base is tagged with exactly this name.
BASE_NAME=$(sed -n 's/^ARG NODE_IMAGE=//p' "$REPO/Dockerfile.server")
CLIENT=localhost/dittofs-test-client:1

log() { printf '[k8s-images] %s\n' "$*" >&2; }
die() { printf '[k8s-images] error: %s\n' "$*" >&2; exit 1; }

[[ -n $APP_VERSION ]] || die "no appVersion in charts/dittofs-operator/Chart.yaml"
[[ $BASE_NAME == "node:$NODE_VERSION-bookworm-slim" ]] ||
  die "Dockerfile.server's NODE_IMAGE is '$BASE_NAME', but this machine's Node.js is $NODE_VERSION: the base would lie"
[[ $(sed -n 's/^ARG NODE_IMAGE=//p' "$REPO/Dockerfile.operator") == "$BASE_NAME" ]] || die "the Dockerfiles name different bases"

mkdir -p "$CACHE/images" "$CACHE/buildah"
# How an image is built: part of its cache key.
BUD_FLAGS=(--isolation chroot --pull=never --layers --format docker)
BUILDAH=(buildah --root "$CACHE/buildah/storage" --runroot "$CACHE/buildah/run" --storage-driver overlay)
hash_files() { sha256sum "$@" | sha256sum | cut -c1-16; }

# The files a COPY of the Dockerfile can read: the repository's files (tracked or not ignored by
# git) minus what .dockerignore leaves out (node_modules, dist...; git ignores those too).
context_hash() { # paths COPY can reach besides the manifests
  (cd "$REPO" && git ls-files -co --exclude-standard -- package.json package-lock.json tsconfig.base.json "$@" |
    grep -v -E '(^|/)(node_modules|dist|data)/' | sort | xargs -d '\n' sha256sum | sha256sum | cut -c1-16)
}

# --- the base: debootstrap minbase + this machine's Node.js ---------------------------------------
# The Node headers go in too (/usr/local/include/node, where the official node images have them):
# Dockerfile.server's deps stage builds better-sqlite3 from source against them (node-gyp would
# otherwise download them from nodejs.org, which this machine cannot reach).
NODE_HEADERS=/usr/include/node
base_key() {
  printf '%s %s %s %s %s\n' "$BASE_NAME" "$(sha256sum /usr/bin/node | cut -c1-16)" \
    "$(cat /usr/lib/node_modules/npm/package.json | sha256sum | cut -c1-16)" "$(hash_files /etc/ssl/certs/ca-certificates.crt)" \
    "$(cd "$NODE_HEADERS" && find . -type f | sort | xargs -d '\n' sha256sum | sha256sum | cut -c1-16)" | sha256sum | cut -c1-16
}

rootfs() {
  local tgz=$CACHE/base/bookworm-minbase.tar.gz
  if [[ ! -f $tgz ]]; then
    command -v debootstrap >/dev/null || die "debootstrap is not installed (hack/install-deps.sh k8s-node)"
    local d=$CACHE/base/rootfs.$$ t=$SECONDS
    rm -rf "$d"
    mkdir -p "$d"
    log "debootstrap --variant=minbase bookworm (once; from $MIRROR) ..."
    nice -n "$NICE" debootstrap --variant=minbase bookworm "$d" "$MIRROR" >"$CACHE/base/debootstrap.log" 2>&1 ||
      { tail -n 20 "$CACHE/base/debootstrap.log" >&2; rm -rf "$d"; die "debootstrap failed (log: $CACHE/base/debootstrap.log)"; }
    rm -rf "$d"/var/cache/apt/archives/*.deb "$d"/var/lib/apt/lists/*
    tar -C "$d" -czf "$tgz.tmp" .
    mv "$tgz.tmp" "$tgz"
    rm -rf "$d"
    log "base root file system in $((SECONDS - t)) s: $tgz ($(du -h "$tgz" | cut -f1))"
  fi
  echo "$tgz"
}

ensure_base() {
  local key stamp=$CACHE/images/base.stamp
  # Before base_key hashes them, and before a working container is made and mounted (a die
  # further down leaves it behind).
  [[ -f $NODE_HEADERS/node_version.h ]] || die "no Node headers in $NODE_HEADERS (Debian: libnode-dev, or the Node.js package that ships them)"
  key=$(base_key)
  if [[ -f $stamp && $(cat "$stamp") == "$key" ]] && "${BUILDAH[@]}" inspect --type image "$BASE_NAME" >/dev/null 2>&1; then
    return
  fi
  local tgz t=$SECONDS c
  tgz=$(rootfs)
  c=$("${BUILDAH[@]}" from --pull=never scratch)
  local mnt
  mnt=$("${BUILDAH[@]}" mount "$c")
  tar -C "$mnt" -xzf "$tgz"
  install -m 0755 /usr/bin/node "$mnt/usr/local/bin/node"
  mkdir -p "$mnt/usr/local/lib/node_modules"
  cp -a /usr/lib/node_modules/npm "$mnt/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$mnt/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$mnt/usr/local/bin/npx"
  mkdir -p "$mnt/usr/local/include"
  cp -a "$NODE_HEADERS" "$mnt/usr/local/include/node"
  mkdir -p "$mnt/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  "${BUILDAH[@]}" umount "$c" >/dev/null
  "${BUILDAH[@]}" config --env NODE_VERSION="$NODE_VERSION" --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    --cmd node --label dittofs.io/base="debootstrap minbase bookworm + node $NODE_VERSION" "$c"
  "${BUILDAH[@]}" commit -q --rm "$c" "$BASE_NAME" >/dev/null
  echo "$key" >"$stamp"
  log "base image $BASE_NAME in $((SECONDS - t)) s"
}

# --- the images -----------------------------------------------------------------------------------
# name tag dockerfile -> tarball (built unless one with the same inputs is cached)
# Arguments after the 3rd: the paths its COPY lines read besides the manifests (none: the
# repository's files are no input).
image() {
  local name=$1 tag=$2 file=$3 key out ctx=none
  (($# > 3)) && ctx=$(context_hash "${@:4}")
  key=$(printf '%s %s %s %s %s\n' "$tag" "${BUD_FLAGS[*]}" "$(hash_files "$REPO/$file" "$REPO/.dockerignore")" "$ctx" "$(base_key)" | sha256sum | cut -c1-16)
  out=$CACHE/images/$name-$key.tar
  if [[ -f $out ]]; then
    log "$tag: cached ($out)"
  elif [[ ${CHECK:-0} == 1 ]]; then
    return 1
  else
    ensure_base
    local t=$SECONDS
    log "$tag: buildah bud -f $file (log: $CACHE/images/$name.log) ..."
    (cd "$REPO" && nice -n "$NICE" "${BUILDAH[@]}" bud "${BUD_FLAGS[@]}" -q \
      -f "$file" -t "$tag" .) >"$CACHE/images/$name.log" 2>&1 ||
      { tail -n 30 "$CACHE/images/$name.log" >&2; die "$tag: buildah bud failed (log: $CACHE/images/$name.log)"; }
    rm -f "$CACHE/images/$name"-????????????????.tar  # the older builds of this image (keys are 16 hex digits)
    "${BUILDAH[@]}" push -q "$tag" "docker-archive:$out.tmp:$tag" >>"$CACHE/images/$name.log" 2>&1 ||
      { rm -f "$out.tmp"; die "$tag: buildah push to a docker-archive failed"; }
    mv "$out.tmp" "$out"
    log "$tag: built in $((SECONDS - t)) s ($(du -h "$out" | cut -f1))"
  fi
  echo "$out"
}

CHECK=0
[[ ${1:-} == --check ]] && CHECK=1
exec 9>"$CACHE/images/.lock"
flock -w 3600 9 || die "another hack/k8s/images.sh holds $CACHE/images/.lock"
start=$SECONDS
image dittofs "ghcr.io/dittofs/dittofs:$APP_VERSION" Dockerfile.server server operator/package.json
image dittofs-operator "ghcr.io/dittofs/dittofs-operator:$APP_VERSION" Dockerfile.operator operator server/package.json
image client "$CLIENT" test/k8s/client.Dockerfile
log "images ready in $((SECONDS - start)) s"
