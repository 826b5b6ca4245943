#!/usr/bin/env bash
# Regenerates packages/privcmd-filter/test/vectors/xen-matrix.jsonl: compiles matrix.c on this host
# (Debian's libxen-dev), boots the Xen 4.17 lab once (../shared/tools/xen-lab, under the lab lock)
# with this repository shared into dom0, and runs the matrix there against two fresh HVM domains.
#   bash tools/xen-matrix/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
lab=$(cd "$repo/../shared/tools/xen-lab" && pwd)
out=packages/privcmd-filter/test/vectors/xen-matrix.jsonl
mkdir -p tools/xen-matrix/.build "$(dirname "$out")"
gcc -O1 -Wall -Wextra -Wno-unused-parameter -o tools/xen-matrix/.build/matrix tools/xen-matrix/matrix.c -lxenctrl

# The lab's artefacts, cached under the same key as scripts/test-xen.sh uses.
key=$(
  {
    cat "$lab"/build.sh "$lab"/init.sh "$lab"/dmop-test.c "$lab"/guests/* "$lab"/*.js "$lab"/selftest.sh
    dpkg-query -W -f='${Package} ${Version}\n' xen-hypervisor-4.17-amd64 xen-utils-4.17 linux-image-amd64 \
      qemu-system-xen busybox-static libxen-dev 2>/dev/null
    node --version
  } | sha256sum | cut -c1-16
)
art=${XEN_LAB_CACHE:-/var/cache/xen-depriv-lab}/$key
exec 9>/tmp/xen-depriv-lab.lock
flock 9
if [ ! -s "$art/base.cpio" ]; then
  rm -rf "$art" && mkdir -p "$art"
  "$lab/build.sh" "$art" --node --qemu-xen >/dev/null
fi
tmp=reports/xen-matrix.jsonl
mkdir -p reports
"$lab/boot.sh" "$art" --share "$repo" --timeout 300 --log "$art/last-boot.log" -- \
  "cd /mnt/host && tools/xen-matrix/.build/matrix > $tmp.part && mv $tmp.part $tmp"
test -s "$tmp"
mv "$tmp" "$out"
echo "xen-matrix: $(($(wc -l < "$out") - 1)) requests recorded in $out"
