#!/usr/bin/env bash
# The one test command (README, .ci/run): install, system packages, build, typecheck, lint,
# every vitest project, the real-Xen tier, then one plain summary line counted from vitest's JSON report.
set -euo pipefail
cd "$(dirname "$0")/.."
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1 NO_UPDATE_NOTIFIER=1 FORCE_COLOR=0

bash scripts/ensure-install.sh
bash scripts/setup-system.sh
npx turbo run build typecheck --output-logs=new-only
npx tsc -p tsconfig.json
# The API reference (docs/api, typedoc over every package's exports): a broken doc build fails the run.
npx typedoc --logLevel Error
npx biome check .

mkdir -p reports
rm -f reports/vitest.json
set +e
npx vitest run --reporter=default --reporter=json --outputFile.json=reports/vitest.json "$@"
rc=$?
# The real-Xen tier (one boot of Xen 4.17 under QEMU); it skips itself, saying why, when it
# cannot run here (not root, packages missing).
bash scripts/test-xen.sh --no-build
xrc=$?
set -e
node scripts/summary.mjs reports/vitest.json "$rc" reports/xen.json "$xrc"
