#!/usr/bin/env bash
# The main job: install and build what is needed, then run `xen-depriv demo` on the
# embedded defaults (no Xen needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1 NO_UPDATE_NOTIFIER=1
bash scripts/ensure-install.sh >&2
bash scripts/setup-system.sh >&2
npx turbo run build --filter=@xen-depriv/depriv-launcher... --output-logs=errors-only >&2
exec node apps/depriv-launcher/dist/cli.js demo "$@"
