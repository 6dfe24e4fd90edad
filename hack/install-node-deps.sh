#!/usr/bin/env bash
# Installs the npm packages pinned in package-lock.json, idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  hack/install-deps.sh node
fi
# Compilers for a native module npm may have to build from source (better-sqlite3).
hack/install-deps.sh build
# ... against the headers of the Node that runs it, where they are installed beside it (no download).
prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
if [ -z "${npm_config_nodedir:-}" ] && [ -f "$prefix/include/node/node_version.h" ]; then
  export npm_config_nodedir=$prefix
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "DittoFS needs Node.js 20 or newer (found $(node --version))" >&2
  exit 1
fi
echo "hack/install-node-deps.sh: installing the npm packages of package-lock.json (npm ci; a minute or two the first time)..." >&2
t=$(date +%s)
npm ci --no-audit --no-fund --loglevel=error
touch node_modules/.package-lock.json
echo "hack/install-node-deps.sh: npm packages installed in $(( $(date +%s) - t )) s" >&2
