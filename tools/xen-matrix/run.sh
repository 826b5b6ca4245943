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

# The lab's artefacts, as scripts/test-xen.sh builds and caches them; one boot at a time.
. scripts/lab-artefacts.sh
exec 9>/tmp/xen-depriv-lab.lock
flock 9
art=$(lab_artefacts "$lab")
tmp=reports/xen-matrix.jsonl
mkdir -p reports
"$lab/boot.sh" "$art" --share "$repo" --timeout 300 --log "$art/last-boot.log" -- \
  "cd /mnt/host && tools/xen-matrix/.build/matrix > $tmp.part && mv $tmp.part $tmp"
test -s "$tmp"
mv "$tmp" "$out"
echo "xen-matrix: $(($(wc -l < "$out") - 1)) requests recorded in $out"
