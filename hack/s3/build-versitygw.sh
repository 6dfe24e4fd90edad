#!/usr/bin/env bash
# Builds versitygw (Versity's S3 gateway, Apache-2.0), the S3-protocol server of the benchmark's
# postgres-s3 configuration (test/bench/versitygw.ts), from the Go module proxy, idempotently.
# Usage: hack/s3/build-versitygw.sh
#
# The binary goes to ${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-bench/versitygw/<version>/versitygw,
# and .../versitygw/versitygw links to it (where the benchmark looks). Nothing is written in the
# repository. Needs Go (PATH or /usr/local/go/bin) at least as new as the module's go.mod asks
# (1.25); the first build takes a few minutes on two cores.
set -euo pipefail

MODULE=github.com/versity/versitygw
VERSION=v1.8.0

die() {
  echo "hack/s3/build-versitygw.sh: $*" >&2
  exit 1
}
[ $# -eq 0 ] || die "usage: $0"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dittofs-bench/versitygw
bin=$cache/$VERSION/versitygw

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  ln -sfn "$VERSION/versitygw" "$cache/versitygw"
  exit 0
fi

go=$(command -v go || true)
[ -n "$go" ] || go=/usr/local/go/bin/go
[ -x "$go" ] || die "Go is needed to build versitygw (not in PATH nor /usr/local/go/bin)"

t=$(date +%s)
echo "hack/s3/build-versitygw.sh: building $MODULE@$VERSION into $cache/$VERSION" >&2
mkdir -p "$cache/$VERSION"
GOBIN="$cache/$VERSION" "$go" install "$MODULE/cmd/versitygw@$VERSION" || die "go install $MODULE/cmd/versitygw@$VERSION failed"
ln -sfn "$VERSION/versitygw" "$cache/versitygw"
echo "hack/s3/build-versitygw.sh: built versitygw $VERSION in $(($(date +%s) - t)) s" >&2
