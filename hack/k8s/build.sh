#!/usr/bin/env bash
# Builds a real Kubernetes control plane for DittoFS's tests with the Go toolchain, from the Go
# modules pinned in hack/k8s/go.mod (k8s.io/kubernetes + etcd) and hack/k8s/helm/go.mod (helm),
# into a cache outside the repository:
#
#   ${DITTOFS_K8S_CACHE:-$HOME/.cache/dittofs/k8s}/<k8s-version>/bin/
#     kube-apiserver  kube-controller-manager  kubectl  etcd  helm
#
# Idempotent: a binary is rebuilt only when it is missing or its stamp (name, version, module files)
# changed. Compiling kube-apiserver takes tens of minutes on 2 cores the first time; later runs take
# a second. Needs Go >= 1.26 and the Go module proxy, nothing else (no Docker, no downloads of
# release binaries).
#
# Usage: hack/k8s/build.sh                 build what is missing, print the bin dir last
#        hack/k8s/build.sh NAME...         only these binaries
#        hack/k8s/build.sh --print-bin-dir print the bin dir and exit (builds nothing)
#        hack/k8s/build.sh --check         exit 0 if every binary is built and current, else 1
set -euo pipefail

# The pins. Change them together with the go.mod files (see the comment in go.mod).
K8S_VERSION=v1.36.3   # k8s.io/kubernetes; staging modules k8s.io/* v0.36.3
ETCD_VERSION=v3.6.8   # go.etcd.io/etcd/server/v3: the version k8s.io/kubernetes v1.36.3 requires
HELM_VERSION=v3.21.4  # helm.sh/helm/v3, built against k8s.io/client-go v0.36
GO_MIN_MINOR=26       # both go.mod files say go 1.26.0
GO_FALLBACK_TOOLCHAIN=go1.26.8

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${DITTOFS_K8S_CACHE:-$HOME/.cache/dittofs/k8s}
BIN=$CACHE/$K8S_VERSION/bin
ALL=(kube-apiserver kube-controller-manager kubectl etcd helm)

log() { printf '[k8s-build] %s\n' "$*" >&2; }
die() { printf '[k8s-build] error: %s\n' "$*" >&2; exit 1; }

# name -> module dir, package, version, ldflags
spec() {
  local k8s_x="" p minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_x+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  case $1 in
    kube-apiserver | kube-controller-manager | kubectl)
      S_DIR=$HERE S_PKG=k8s.io/kubernetes/cmd/$1 S_VERSION=$K8S_VERSION S_LDFLAGS="-s -w$k8s_x" ;;
    etcd)
      S_DIR=$HERE S_PKG=go.etcd.io/etcd/server/v3 S_VERSION=$ETCD_VERSION S_LDFLAGS="-s -w" ;;
    helm)
      local h=helm.sh/helm/v3
      S_DIR=$HERE/helm S_PKG=$h/cmd/helm S_VERSION=$HELM_VERSION
      S_LDFLAGS="-s -w -X $h/internal/version.version=$HELM_VERSION -X $h/internal/version.gitTreeState=clean"
      S_LDFLAGS+=" -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor"
      S_LDFLAGS+=" -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor" ;;
    *) die "unknown binary '$1' (known: ${ALL[*]})" ;;
  esac
}

# What a binary was built from: a changed pin, go.mod, go.sum or ldflags makes it stale.
stamp_of() {
  spec "$1"
  printf '%s %s %s %s\n' "$1" "$S_VERSION" \
    "$(cat "$S_DIR/go.mod" "$S_DIR/go.sum" | sha256sum | cut -c1-16)" \
    "$(printf '%s' "$S_LDFLAGS" | sha256sum | cut -c1-16)"
}

is_current() {
  [[ -x $BIN/$1 && -f $BIN/.stamps/$1 ]] && [[ $(cat "$BIN/.stamps/$1") == "$(stamp_of "$1")" ]]
}

case ${1:-} in
  --print-bin-dir) echo "$BIN"; exit 0 ;;
  --check)
    missing=()
    for n in "${ALL[@]}"; do is_current "$n" || missing+=("$n"); done
    if ((${#missing[@]})); then
      log "not built or out of date in $BIN: ${missing[*]} (run hack/k8s/build.sh)"
      exit 1
    fi
    echo "$BIN"; exit 0 ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) die "unknown option $1" ;;
esac

WANT=("$@")
((${#WANT[@]})) || WANT=("${ALL[@]}")
for n in "${WANT[@]}"; do spec "$n"; done

todo=()
for n in "${WANT[@]}"; do
  if is_current "$n"; then log "$n: up to date ($BIN/$n)"; else todo+=("$n"); fi
done
if ((${#todo[@]} == 0)); then echo "$BIN"; exit 0; fi

# --- Go --------------------------------------------------------------------------------------------
# A fresh machine of this project's kind has Go 1.26 in /usr/local/go (see the machine notes).
# Debian bookworm's golang-go is 1.19, too old to build Kubernetes 1.36 and too old to fetch a
# newer toolchain; a Go >= 1.21 can fetch go1.26 itself from the module proxy (GOTOOLCHAIN).
GO=$(command -v go || true)
[[ -n $GO ]] || { [[ -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go; }
[[ -n $GO ]] || die "Go is not installed. Install Go >= 1.$GO_MIN_MINOR (https://go.dev/dl/, e.g. into /usr/local/go); Debian bookworm's golang-go (1.19) is too old for Kubernetes $K8S_VERSION."
gov=$(GOTOOLCHAIN=local "$GO" env GOVERSION 2>/dev/null || true)
gominor=$(sed -nE 's/^go1\.([0-9]+).*/\1/p' <<<"$gov")
export GOTOOLCHAIN=local
if [[ -z $gominor ]]; then
  die "cannot tell the version of $GO (got '$gov'); Go >= 1.$GO_MIN_MINOR is needed"
elif ((gominor < 21)); then
  die "$GO is $gov; Go >= 1.$GO_MIN_MINOR is needed (install it from https://go.dev/dl/; Debian bookworm's golang-go is too old)"
elif ((gominor < GO_MIN_MINOR)); then
  log "$GO is $gov; fetching $GO_FALLBACK_TOOLCHAIN from the Go module proxy (GOTOOLCHAIN)"
  export GOTOOLCHAIN=$GO_FALLBACK_TOOLCHAIN
fi
# -mod=readonly: build exactly what go.mod/go.sum pin (go.sum is checked in, so no checksum
# database is consulted and a mismatch is an error, not an update).
export GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
mkdir -p "$BIN/.stamps" "$CACHE/$K8S_VERSION/logs"
LOGS=$CACHE/$K8S_VERSION/logs
# One build at a time per cache (two `make` runs at once would otherwise both compile).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/$K8S_VERSION/.lock"
  flock -w 3600 9 || die "another hack/k8s/build.sh still holds $CACHE/$K8S_VERSION/.lock after an hour"
  todo2=()
  for n in "${todo[@]}"; do is_current "$n" || todo2+=("$n"); done
  todo=(${todo2[@]+"${todo2[@]}"})
  if ((${#todo[@]} == 0)); then log "built meanwhile by another run"; echo "$BIN"; exit 0; fi
fi
TIME=()
[[ -x /usr/bin/time ]] && TIME=(/usr/bin/time -v)

log "Go: $("$GO" version) (GOTOOLCHAIN=$GOTOOLCHAIN); output: $BIN"
log "downloading modules (Go module proxy: $("$GO" env GOPROXY))"
for d in "$HERE" "$HERE/helm"; do
  (cd "$d" && nice -n 19 "$GO" mod download) >"$LOGS/mod-download.log" 2>&1 ||
    { tail -n 30 "$LOGS/mod-download.log" >&2; die "go mod download failed in $d (log: $LOGS/mod-download.log)"; }
done

total_start=$(date +%s)
for n in "${todo[@]}"; do
  spec "$n"
  log "$n: building $S_PKG ($S_VERSION) ..."
  start=$(date +%s)
  tmp=$BIN/.$n.tmp
  rm -f "$tmp" "$LOGS/$n.time"
  timer=()
  ((${#TIME[@]})) && timer=("${TIME[@]}" -o "$LOGS/$n.time")
  set +e
  (cd "$S_DIR" && nice -n 19 ${timer[@]+"${timer[@]}"} \
    "$GO" build -trimpath -ldflags "$S_LDFLAGS" -o "$tmp" "$S_PKG") >"$LOGS/$n.log" 2>&1
  rc=$?
  set -e
  secs=$(($(date +%s) - start))
  if ((rc != 0)) || [[ ! -x $tmp ]]; then
    tail -n 40 "$LOGS/$n.log" >&2
    rm -f "$tmp"
    die "$n: go build failed after ${secs}s (exit $rc; full log: $LOGS/$n.log)"
  fi
  mv -f "$tmp" "$BIN/$n"
  stamp_of "$n" >"$BIN/.stamps/$n"
  rss=""
  [[ -f $LOGS/$n.time ]] && rss=$(awk -F': ' '/Maximum resident set size/ {printf ", largest process %d MiB", $2/1024}' "$LOGS/$n.time")
  log "$n: built in $((secs / 60))m$((secs % 60))s$rss, $(du -h "$BIN/$n" | cut -f1)"
done
secs=$(($(date +%s) - total_start))
log "done in $((secs / 60))m$((secs % 60))s; cache $(du -sh "$CACHE/$K8S_VERSION" | cut -f1) in $CACHE/$K8S_VERSION"
echo "$BIN"
