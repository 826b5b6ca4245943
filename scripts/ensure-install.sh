#!/usr/bin/env bash
# Runs `npm ci` when node_modules is missing or was installed from another lockfile or
# another set of package.json files; otherwise does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.xen-depriv-install
want=$(cat package-lock.json package.json packages/*/package.json apps/*/package.json | sha256sum | cut -c1-64)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "ensure-install: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
