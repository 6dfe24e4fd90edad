#!/usr/bin/env bash
# `make test`: every test, with the Kubernetes build overlapping the tests that do not need it.
#
#   1. hack/k8s/build.sh starts in the background unless its binaries are current. It runs niced
#      (DITTOFS_K8S_NICE, 19), so it takes the CPU the tests leave idle while they wait on servers,
#      clients and VMs; its progress lines ([k8s-build]) appear among the tests' output.
#   2. The unit, end-to-end and fault-injection tests run, DITTOFS_TEST_JOBS (3) files at a time.
#   3. Once the build is done, the Kubernetes tests run.
#
# At the end: the wall time of each phase, and (from test/reporters/file-times.mjs) the time of
# each test file. Exit status 1 if any test or the build failed.
#
# Usage: hack/test.sh [--no-k8s]     (the Makefile passes the test files in LOCAL_TESTS and K8S_TESTS)
set -uo pipefail
cd "$(dirname "$0")/.."

JOBS=${DITTOFS_TEST_JOBS:-3}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "hack/test.sh: DITTOFS_TEST_JOBS=$JOBS: expected a positive number" >&2; exit 2; }
export DITTOFS_TEST_JOBS=$JOBS
with_k8s=1
[[ ${1:-} == --no-k8s ]] && with_k8s=0

read -r -a local_tests <<<"${LOCAL_TESTS:-}"
read -r -a k8s_tests <<<"${K8S_TESTS:-}"
((${#local_tests[@]})) || {
  echo "hack/test.sh: LOCAL_TESTS is empty (run it through make test)" >&2
  exit 2
}

node_test() {
  node --import tsx --test --test-concurrency="$JOBS" \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=./test/reporters/file-times.mjs --test-reporter-destination=stdout "$@"
}
now() { date +%s; }
fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

t0=$(now)
build_pid=""
build_log=$(mktemp "${TMPDIR:-/tmp}/dittofs-k8s-build.XXXXXX")
trap 'rm -f "$build_log"; [[ -n $build_pid ]] && kill "$build_pid" 2>/dev/null' EXIT
if ((with_k8s && ${#k8s_tests[@]})) && ! hack/k8s/build.sh --check >/dev/null 2>&1; then
  echo "hack/test.sh: building the Kubernetes binaries in the background (hack/k8s/build.sh) while the other tests run"
  # Progress lines to the terminal as they come; the bin dir (stdout) is not needed.
  hack/k8s/build.sh >/dev/null 2> >(tee "$build_log" >&2) &
  build_pid=$!
fi

echo "hack/test.sh: ${#local_tests[@]} unit, end-to-end and fault-injection test files, $JOBS at a time"
node_test "${local_tests[@]}"
local_rc=$?
t_local=$(now)

k8s_rc=0 build_rc=0
t_build=$t_local
if ((with_k8s && ${#k8s_tests[@]})); then
  if [[ -n $build_pid ]]; then
    # Nothing else of ours runs now: the build no longer needs to yield, except to other work on
    # the machine. Lowering the niceness needs root; as another user it stays niced.
    tree() {
      local c
      echo "$1"
      for c in $(pgrep -P "$1" 2>/dev/null); do tree "$c"; done
    }
    if kill -0 "$build_pid" 2>/dev/null && renice 0 -p $(tree "$build_pid") >/dev/null 2>&1; then
      echo "hack/test.sh: the Kubernetes build runs at normal priority now"
    fi
    echo "hack/test.sh: waiting for the Kubernetes build to finish"
    wait "$build_pid"
    build_rc=$?
    build_pid=""
    t_build=$(now)
  fi
  if ((build_rc != 0)); then
    echo "hack/test.sh: hack/k8s/build.sh failed (exit $build_rc); the Kubernetes tests did not run:" >&2
    tail -n 20 "$build_log" >&2
    k8s_rc=1
  else
    echo "hack/test.sh: ${#k8s_tests[@]} Kubernetes test files"
    node_test "${k8s_tests[@]}"
    k8s_rc=$?
  fi
fi
t_end=$(now)

echo
echo "hack/test.sh: unit, e2e, fault tests $(fmt $((t_local - t0))) (exit $local_rc)"
if ((with_k8s && ${#k8s_tests[@]})); then
  echo "hack/test.sh: Kubernetes build done $(fmt $((t_build - t0))) after the start (exit $build_rc); Kubernetes tests $(fmt $((t_end - t_build))) (exit $k8s_rc)"
fi
echo "hack/test.sh: all $(fmt $((t_end - t0)))"
((local_rc == 0 && build_rc == 0 && k8s_rc == 0))
