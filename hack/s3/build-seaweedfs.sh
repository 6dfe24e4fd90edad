#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (Apache-2.0), the S3-protocol server of the benchmark's postgres-s3
# configuration (test/bench/seaweedfs.ts), from the Go module proxy, idempotently.
# Usage: hack/s3/build-seaweedfs.sh [--print-path]
#
# The binary goes to ${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-bench/seaweedfs/<version>/weed, and
# .../seaweedfs/weed links to it (where the benchmark looks). Nothing is written in the repository.
# `go install <module>/weed@<version>` refuses the module (its go.mod has a replace directive), so
# the module is downloaded (go mod download) and built as the main module in a scratch copy, removed
# after. Needs Go (PATH or /usr/local/go/bin) at least as new as the module's go.mod asks; the first
# build takes several minutes on two cores. With --print-path, prints the binary's path only.
set -euo pipefail

MODULE=github.com/seaweedfs/seaweedfs
VERSION=v0.0.0-20261109003541-7506e5f91cd6

die() {
  echo "hack/s3/build-seaweedfs.sh: $*" >&2
  exit 1
}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-bench/seaweedfs
bin=$cache/$VERSION/weed
if [ "${1:-}" = --print-path ]; then
  echo "$cache/weed"
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [--print-path]"

if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
  ln -sfn "$VERSION/weed" "$cache/weed"
  exit 0
fi

go=$(command -v go || true)
[ -n "$go" ] || go=/usr/local/go/bin/go
[ -x "$go" ] || die "Go is needed to build SeaweedFS (not in PATH nor /usr/local/go/bin)"

t=$(date +%s)
echo "hack/s3/build-seaweedfs.sh: building $MODULE@$VERSION (weed) into $cache/$VERSION" >&2
src=$("$go" mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -n "$src" ] && [ -f "$src/go.mod" ] || die "go mod download $MODULE@$VERSION gave no module directory"
mkdir -p "$cache/$VERSION"
# A fixed scratch path, so that an interrupted build resumes from Go's build cache.
work=$cache/build-$VERSION
rm -rf "$work"
cp -r "$src" "$work"
chmod -R u+w "$work"
(cd "$work" && "$go" build -o "$bin.tmp" ./weed) || die "go build of $MODULE@$VERSION failed (scratch copy kept in $work)"
mv "$bin.tmp" "$bin"
rm -rf "$work"
ln -sfn "$VERSION/weed" "$cache/weed"
echo "hack/s3/build-seaweedfs.sh: built $("$bin" version 2>/dev/null | head -1) in $(($(date +%s) - t)) s" >&2
