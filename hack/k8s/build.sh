#!/usr/bin/env bash
# Builds a real Kubernetes control plane for DittoFS's tests with the Go toolchain, from the Go
# modules pinned in hack/k8s/go.mod (k8s.io/kubernetes + etcd) and hack/k8s/helm/go.mod (helm),
# into a cache outside the repository:
#
#   ${DITTOFS_K8S_CACHE:-$HOME/.cache/dittofs/k8s}/<k8s-version>/bin/
#     kube-apiserver  kube-controller-manager  kubectl  etcd  helm          (the control plane)
#     kube-scheduler  kubelet  kube-proxy  pause                          (the node: hack/k8s/node.sh)
#
# The control plane is built first (the tests that need no node can start), then the node binaries
# in a second `go build` that reuses every package the first one compiled (Go's build cache). pause
# is the module's own build/pause/linux/pause.c, compiled with `gcc -static`.
#
# Idempotent: a binary is rebuilt only when it is missing or its stamp changed (name, version,
# go.mod/go.sum, ldflags, the Go toolchain, the build flags). One `go build` per Go module builds
# all of its commands, so the packages they share are compiled once; it prints a progress line
# (packages compiled of the total, elapsed time) every 30 s. The first build takes tens of minutes
# on 2 cores; later runs take a second. Needs Go >= 1.26 and the Go module proxy, nothing else (no
# Docker, no downloads of release binaries).
#
# Environment: DITTOFS_K8S_CACHE (the cache above), DITTOFS_K8S_NICE (niceness of the build, 19:
# it yields to everything else), DITTOFS_K8S_PROGRESS_SECS (30). Go's own cache (GOCACHE) makes a
# rebuild after a pin change compile only what changed.
#
# Usage: hack/k8s/build.sh                 build what is missing, print the bin dir last
#        hack/k8s/build.sh NAME...         only these binaries
#        hack/k8s/build.sh --print-bin-dir print the bin dir and exit (builds nothing)
#        hack/k8s/build.sh --check [NAME...] exit 0 if every binary (or NAME...) is built and
#                                          current, else 1
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
NODE=(kube-scheduler kubelet kube-proxy pause)

log() { printf '[k8s-build] %s\n' "$*" >&2; }
die() { printf '[k8s-build] error: %s\n' "$*" >&2; exit 1; }

# name -> module dir, package, version, ldflags, build group (one `go build` per group)
spec() {
  local k8s_x="" p minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_x+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  case $1 in
    kube-apiserver | kube-controller-manager | kubectl)
      S_DIR=$HERE S_PKG=k8s.io/kubernetes/cmd/$1 S_VERSION=$K8S_VERSION S_LDFLAGS="-s -w$k8s_x" S_GROUP=cp ;;
    kube-scheduler | kubelet | kube-proxy)
      S_DIR=$HERE S_PKG=k8s.io/kubernetes/cmd/$1 S_VERSION=$K8S_VERSION S_LDFLAGS="-s -w$k8s_x" S_GROUP=node ;;
    pause)
      # Not Go: the C source in the module, compiled statically (a stamp of its hash and gcc's version).
      S_DIR=$HERE S_PKG=k8s.io/kubernetes/build/pause/linux/pause.c S_VERSION=$K8S_VERSION S_LDFLAGS="-static -Os -DVERSION=$K8S_VERSION" S_GROUP=pause ;;
    etcd)
      # The same ldflags as the three above, so that one `go build` makes all four: etcd links
      # neither version package, and -X of a variable a binary does not link is ignored.
      S_DIR=$HERE S_PKG=go.etcd.io/etcd/server/v3 S_VERSION=$ETCD_VERSION S_LDFLAGS="-s -w$k8s_x" S_GROUP=cp ;;
    helm)
      local h=helm.sh/helm/v3
      S_DIR=$HERE/helm S_PKG=$h/cmd/helm S_VERSION=$HELM_VERSION
      S_LDFLAGS="-s -w -X $h/internal/version.version=$HELM_VERSION -X $h/internal/version.gitTreeState=clean"
      S_LDFLAGS+=" -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor"
      S_LDFLAGS+=" -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor"
      S_GROUP=helm ;;
    *) die "unknown binary '$1' (known: ${ALL[*]} ${NODE[*]})" ;;
  esac
}

# The Go that builds, chosen the same way for --check: a changed toolchain makes every binary stale.
# A fresh machine of this project's kind has Go 1.26 in /usr/local/go (see the machine notes).
# Debian bookworm's golang-go is 1.19, too old to build Kubernetes 1.36 and too old to fetch a
# newer toolchain; a Go >= 1.21 can fetch go1.26 itself from the module proxy (GOTOOLCHAIN).
# Sets GO, GOV (its version), GOMINOR and GO_USED (the toolchain that builds, "none" if none can).
find_go() {
  GO=$(command -v go || true)
  [[ -n $GO ]] || { [[ -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go; }
  GOV="" GOMINOR="" GO_USED=none
  [[ -n $GO ]] || return 0
  GOV=$(GOTOOLCHAIN=local "$GO" env GOVERSION 2>/dev/null || true)
  GOMINOR=$(sed -nE 's/^go1\.([0-9]+).*/\1/p' <<<"$GOV")
  if [[ -z $GOMINOR ]] || ((GOMINOR < 21)); then
    GO_USED=none
  elif ((GOMINOR < GO_MIN_MINOR)); then
    GO_USED=$GO_FALLBACK_TOOLCHAIN
  else
    GO_USED=$GOV
  fi
}

# How every binary is built, besides its package and ldflags: a change here makes all of them stale.
BUILD_FLAGS=(-trimpath)
BUILD_GOFLAGS="-mod=readonly -buildvcs=false"
BUILD_RECIPE="CGO_ENABLED=0 GOFLAGS=$BUILD_GOFLAGS go build ${BUILD_FLAGS[*]}"

# What a binary was built from: a changed pin, go.mod, go.sum, ldflags, Go toolchain or build recipe
# makes it stale.
stamp_of() {
  spec "$1"
  if [[ $S_GROUP == pause ]]; then
    printf '%s %s %s %s %s\n' "$1" "$S_VERSION" "$(printf '%s' "$S_LDFLAGS" | sha256sum | cut -c1-16)" \
      "$(gcc -dumpfullversion 2>/dev/null || echo no-gcc)" "$(cat "$S_DIR/go.mod" "$S_DIR/go.sum" | sha256sum | cut -c1-16)"
    return
  fi
  printf '%s %s %s %s %s %s\n' "$1" "$S_VERSION" \
    "$(cat "$S_DIR/go.mod" "$S_DIR/go.sum" | sha256sum | cut -c1-16)" \
    "$(printf '%s' "$S_LDFLAGS" | sha256sum | cut -c1-16)" \
    "$GO_USED" "$(printf '%s' "$BUILD_RECIPE" | sha256sum | cut -c1-16)"
}

is_current() {
  [[ -x $BIN/$1 && -f $BIN/.stamps/$1 ]] && [[ $(cat "$BIN/.stamps/$1") == "$(stamp_of "$1")" ]]
}

case ${1:-} in
  --print-bin-dir) echo "$BIN"; exit 0 ;;
  --check)
    find_go
    shift
    names=("$@")
    ((${#names[@]})) || names=("${ALL[@]}" "${NODE[@]}")
    missing=()
    for n in "${names[@]}"; do spec "$n"; is_current "$n" || missing+=("$n"); done
    if ((${#missing[@]})); then
      log "not built or out of date in $BIN: ${missing[*]} (run hack/k8s/build.sh)"
      exit 1
    fi
    echo "$BIN"; exit 0 ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) die "unknown option $1" ;;
esac

WANT=("$@")
((${#WANT[@]})) || WANT=("${ALL[@]}" "${NODE[@]}")
for n in "${WANT[@]}"; do spec "$n"; done
find_go

todo=()
for n in "${WANT[@]}"; do
  if is_current "$n"; then log "$n: up to date ($BIN/$n)"; else todo+=("$n"); fi
done
if ((${#todo[@]} == 0)); then echo "$BIN"; exit 0; fi

# --- Go --------------------------------------------------------------------------------------------
[[ -n $GO ]] || die "Go is not installed. Install Go >= 1.$GO_MIN_MINOR (https://go.dev/dl/, e.g. into /usr/local/go); Debian bookworm's golang-go (1.19) is too old for Kubernetes $K8S_VERSION."
export GOTOOLCHAIN=local
if [[ -z $GOMINOR ]]; then
  die "cannot tell the version of $GO (got '$GOV'); Go >= 1.$GO_MIN_MINOR is needed"
elif ((GOMINOR < 21)); then
  die "$GO is $GOV; Go >= 1.$GO_MIN_MINOR is needed (install it from https://go.dev/dl/; Debian bookworm's golang-go is too old)"
elif ((GOMINOR < GO_MIN_MINOR)); then
  log "$GO is $GOV; fetching $GO_FALLBACK_TOOLCHAIN from the Go module proxy (GOTOOLCHAIN)"
  export GOTOOLCHAIN=$GO_FALLBACK_TOOLCHAIN
fi
# -mod=readonly: build exactly what go.mod/go.sum pin (go.sum is checked in, so no checksum
# database is consulted and a mismatch is an error, not an update).
export GOFLAGS=$BUILD_GOFLAGS CGO_ENABLED=0
mkdir -p "$BIN/.stamps" "$CACHE/$K8S_VERSION/logs"
LOGS=$CACHE/$K8S_VERSION/logs
PROGRESS_SECS=${DITTOFS_K8S_PROGRESS_SECS:-30}
# The build yields the CPU to everything else (tests running beside it, an editor) by default.
NICE=${DITTOFS_K8S_NICE:-19}
[[ $NICE =~ ^[0-9]+$ ]] && ((NICE <= 19)) || die "DITTOFS_K8S_NICE=$NICE: expected a niceness from 0 to 19"
[[ $PROGRESS_SECS =~ ^[1-9][0-9]*$ ]] || die "DITTOFS_K8S_PROGRESS_SECS=$PROGRESS_SECS: expected a positive number of seconds"
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
# Package lines `go build -v` wrote to a log so far (errors and "# pkg" headers are not counted).
packages_in() { grep -c -E '^[^ #]+$' "$1" 2>/dev/null || true; }

# One build at a time per cache (two `make` runs at once would otherwise both compile). A second
# run waits, saying so every PROGRESS_SECS, for at most two hours.
if command -v flock >/dev/null; then
  exec 9>"$CACHE/$K8S_VERSION/.lock"
  if ! flock -n 9; then
    log "another hack/k8s/build.sh is building into $CACHE/$K8S_VERSION: waiting for it (its logs: $LOGS)"
    waited=0
    until flock -w "$PROGRESS_SECS" 9; do
      waited=$((waited + PROGRESS_SECS))
      ((waited < 7200)) || die "another hack/k8s/build.sh still holds $CACHE/$K8S_VERSION/.lock after $(fmt_secs $waited)"
      other=$(ls -t "$LOGS"/build-*.log 2>/dev/null | head -n 1 || true)
      log "still waiting for the other build, $(fmt_secs $waited)${other:+ ($(packages_in "$other") packages compiled in $(basename "$other"))}"
    done
  fi
  todo2=()
  for n in "${todo[@]}"; do is_current "$n" || todo2+=("$n"); done
  todo=(${todo2[@]+"${todo2[@]}"})
  if ((${#todo[@]} == 0)); then log "built meanwhile by another run"; echo "$BIN"; exit 0; fi
fi
TIME=()
[[ -x /usr/bin/time ]] && TIME=(/usr/bin/time -v)
total_start=$(date +%s)
log "Go: $("$GO" version) (GOTOOLCHAIN=$GOTOOLCHAIN); output: $BIN"
log "downloading modules (Go module proxy: $("$GO" env GOPROXY))"
for d in "$HERE" "$HERE/helm"; do
  (cd "$d" && nice -n "$NICE" "$GO" mod download) >"$LOGS/mod-download.log" 2>&1 ||
    { tail -n 30 "$LOGS/mod-download.log" >&2; die "go mod download failed in $d (log: $LOGS/mod-download.log)"; }
done
log "modules ready after $(fmt_secs $(($(date +%s) - total_start)))"

# One `go build` per Go module (hack/k8s, hack/k8s/helm) builds all of that module's commands at
# once: the packages they share (most of k8s.io/*) are compiled once, in parallel over all cores,
# and one link per command runs in the same job graph. While it runs, a progress line every
# $DITTOFS_K8S_PROGRESS_SECS (30) seconds tells how many packages are compiled of how many the
# commands need (`go build -v` prints each one it compiles; packages already in Go's build cache are
# not printed, so the count can stay below the total).
build_group() { # dir ldflags name...
  local dir=$1 ldflags=$2 label
  shift 2
  local names=("$@") pkgs=() n
  for n in "${names[@]}"; do spec "$n"; pkgs+=("$S_PKG"); done
  label=$(IFS=,; echo "${names[*]}")
  local out=$BIN/.build-$$ log=$LOGS/build-${names[0]}.log timelog=$LOGS/build-${names[0]}.time
  rm -rf "$out" "$timelog"
  mkdir -p "$out"
  local total
  total=$(cd "$dir" && nice -n "$NICE" "$GO" list -deps "${pkgs[@]}" 2>/dev/null | wc -l) || total="?"
  log "$label: building $total packages (go build -v, log: $log) ..."
  local timer=() start rc=0 now done_pkgs last next
  ((${#TIME[@]})) && timer=("${TIME[@]}" -o "$timelog")
  start=$(date +%s)
  (cd "$dir" && exec nice -n "$NICE" ${timer[@]+"${timer[@]}"} \
    "$GO" build -v "${BUILD_FLAGS[@]}" -ldflags "$ldflags" -o "$out/" "${pkgs[@]}") >"$log" 2>&1 &
  local pid=$!
  BUILD_PID=$pid
  next=$((start + PROGRESS_SECS))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    now=$(date +%s)
    if ((now >= next)); then
      next=$((now + PROGRESS_SECS))
      done_pkgs=$(packages_in "$log")
      last=$(grep -E '^[^ #]+$' "$log" | tail -n 1 || true)
      log "$label: $done_pkgs/$total packages compiled (cached ones need none), $(fmt_secs $((now - start))) elapsed${last:+ (last: $last)}"
    fi
  done
  wait "$pid" || rc=$?
  BUILD_PID=""
  local secs=$(($(date +%s) - start))
  local missing=()
  for n in "${names[@]}"; do
    spec "$n"
    # go build -o DIR/ names a command after the last path element that is not a major version (/v3).
    local base=${S_PKG##*/}
    [[ $base =~ ^v[0-9]+$ ]] && base=$(basename "$(dirname "$S_PKG")")
    [[ -x $out/$base ]] || missing+=("$n")
  done
  if ((rc != 0 || ${#missing[@]})); then
    grep -v -E '^[^ #]+$' "$log" | tail -n 40 >&2 || true
    rm -rf "$out"
    die "$label: go build failed after $(fmt_secs "$secs") (exit $rc${missing[*]:+, not built: ${missing[*]}}; full log: $log)"
  fi
  local rss=""
  [[ -f $timelog ]] && rss=$(awk -F': ' '/Maximum resident set size/ {printf ", largest process %d MiB", $2/1024}' "$timelog")
  for n in "${names[@]}"; do
    spec "$n"
    local base=${S_PKG##*/}
    [[ $base =~ ^v[0-9]+$ ]] && base=$(basename "$(dirname "$S_PKG")")
    mv -f "$out/$base" "$BIN/$n"
    stamp_of "$n" >"$BIN/.stamps/$n"
    log "$n: $(du -h "$BIN/$n" | cut -f1)"
  done
  rm -rf "$out"
  log "$label: built in $(fmt_secs "$secs")$rss"
}

# Stopped (Ctrl-C, or make test ending): the go build goes too, with its compilers (by pid).
BUILD_PID=""
kill_tree() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
  kill "$1" 2>/dev/null || true
}
trap 'if [[ -n $BUILD_PID ]]; then kill_tree "$BUILD_PID"; fi; rm -rf "$BIN/.build-$$"; exit 130' INT TERM

# pause: the module's C source (no Go), a static binary of a few hundred KiB.
build_pause() {
  spec pause
  local src
  src=$(cd "$S_DIR" && "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  [[ -f $src ]] || die "pause: $src not found in the module"
  command -v gcc >/dev/null || die "pause: gcc is needed (apt-get install gcc libc6-dev)"
  # shellcheck disable=SC2086 # S_LDFLAGS is a list of flags
  nice -n "$NICE" gcc $S_LDFLAGS -o "$BIN/pause.tmp" "$src" >"$LOGS/build-pause.log" 2>&1 ||
    { cat "$LOGS/build-pause.log" >&2; die "pause: gcc failed (log: $LOGS/build-pause.log)"; }
  strip "$BIN/pause.tmp" 2>/dev/null || true
  mv -f "$BIN/pause.tmp" "$BIN/pause"
  stamp_of pause >"$BIN/.stamps/pause"
  log "pause: $(du -h "$BIN/pause" | cut -f1) (gcc -static $src)"
}

# Group what is to be built by build group: one `go build` per group (the binaries of one group
# share their module and ldflags). The control plane comes first, so that its tests can start while
# the node group builds.
declare -A group_names=()
groups=()
for n in "${todo[@]}"; do
  spec "$n"
  [[ -n ${group_names[$S_GROUP]+x} ]] || { groups+=("$S_GROUP"); group_names[$S_GROUP]=""; }
  group_names[$S_GROUP]+=" $n"
done
for g in "${groups[@]}"; do
  read -r -a names <<<"${group_names[$g]}"
  if [[ $g == pause ]]; then build_pause; continue; fi
  spec "${names[0]}"
  flags=$S_LDFLAGS
  for n in "${names[@]}"; do spec "$n"; [[ $S_LDFLAGS == "$flags" ]] || die "$n: ldflags differ from ${names[0]}'s in the same module"; done
  build_group "$S_DIR" "$flags" "${names[@]}"
done
secs=$(($(date +%s) - total_start))
log "done in $(fmt_secs "$secs"); cache $(du -sh "$CACHE/$K8S_VERSION" | cut -f1) in $CACHE/$K8S_VERSION"
echo "$BIN"
