#!/usr/bin/env bash
# Makes sure tools/node_modules holds the npm packages of tools/package-lock.json (the offline
# Kubernetes schema validator kubernetes-models, js-yaml, dockerfilelint), installing them with
# `npm ci` when missing or older than the lock file. Serialized with flock, since ctest runs the
# deploy tests in parallel. Prints the node_modules path.
# Usage: node_tools.sh SOURCE_DIR
set -euo pipefail
src=${1:?usage: node_tools.sh SOURCE_DIR}
tools="$src/tools"
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "node_tools: node and npm are required (scripts/install-deps.sh installs them)" >&2
  exit 1
fi
exec 9>"$tools/.install.lock"
flock 9
marker="$tools/node_modules/.package-lock.json"  # written by npm at the end of an install
if [ ! -f "$marker" ] || [ "$tools/package-lock.json" -nt "$marker" ]; then
  echo "node_tools: npm ci --prefix $tools" >&2
  npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error >&2
fi
echo "$tools/node_modules"
