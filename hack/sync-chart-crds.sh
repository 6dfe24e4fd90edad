#!/usr/bin/env bash
# Copies the CRDs (crds/*.yaml, their one source of truth) into the Helm chart's crds/ directory.
# Helm installs charts/dittofs-operator/crds/ before the templates, and a chart cannot symlink
# outside itself (a packaged chart would lose the link), so the chart holds byte-identical copies.
# test/k8s/chart.test.ts fails when they drift.
#
#   hack/sync-chart-crds.sh          copy (and remove chart CRDs that no longer exist in crds/)
#   hack/sync-chart-crds.sh --check  exit 1, naming the files, if the copies differ
set -euo pipefail
cd "$(dirname "$0")/.."

src=crds
dst=charts/dittofs-operator/crds
check=false
case "${1:-}" in
  --check) check=true ;;
  '') ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

shopt -s nullglob
sources=("$src"/*.yaml)
if [ ${#sources[@]} -eq 0 ]; then
  echo "no CRDs in $src/" >&2
  exit 1
fi

drift=()
for f in "${sources[@]}"; do
  name=$(basename "$f")
  if ! cmp -s "$f" "$dst/$name"; then drift+=("$dst/$name"); fi
done
for f in "$dst"/*; do
  name=$(basename "$f")
  if [ ! -e "$src/$name" ]; then drift+=("$dst/$name (not in $src/)"); fi
done

if $check; then
  if [ ${#drift[@]} -gt 0 ]; then
    printf 'out of date: %s\n' "${drift[@]}" >&2
    echo "run hack/sync-chart-crds.sh" >&2
    exit 1
  fi
  exit 0
fi

mkdir -p "$dst"
for f in "$dst"/*; do
  [ -e "$src/$(basename "$f")" ] || rm -f -- "$f"
done
cp -- "${sources[@]}" "$dst/"
if [ ${#drift[@]} -gt 0 ]; then
  printf 'updated: %s\n' "${drift[@]}"
else
  echo "$dst is up to date"
fi
