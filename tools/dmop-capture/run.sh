#!/usr/bin/env bash
# Regenerates the golden vectors of @xen-depriv/dmop-abi from Debian's libxendevicemodel and
# libxenforeignmemory (package libxen-dev) and gcc's view of the structs.
#   bash tools/dmop-capture/run.sh            writes packages/dmop-abi/test/vectors/*.json
#   bash tools/dmop-capture/run.sh OUT_DIR    writes OUT_DIR/*.json instead (used by the regen test)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../packages/dmop-abi/test/vectors}"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
cflags="-O2 -Wall -Wextra -Werror"
gcc $cflags -fPIC -shared -o "$build/shim.so" "$here/shim.c" -ldl
gcc $cflags -o "$build/drive" "$here/drive.c" -lxendevicemodel -lxenforeignmemory -lxentoolcore -ldl
gcc $cflags -o "$build/layout" "$here/layout.c"
mkdir -p "$out"
LD_PRELOAD="$build/shim.so" "$build/drive" >"$build/vectors.json"
"$build/layout" >"$build/layout.json"
# Re-indented by python3 so the committed files are stable and readable.
for f in vectors layout; do
  python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), indent=2); open(sys.argv[2], "a").write("\n")' \
    "$build/$f.json" "$out/$f.json"
done
echo "wrote $out/vectors.json $out/layout.json"
