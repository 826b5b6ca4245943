#!/usr/bin/env bash
# The real-Xen tier: boots Xen 4.17 + a Debian dom0 under QEMU (TCG) once, with this repository
# shared into dom0 over 9p, runs test/xen/*.xen.mjs there with Node, and prints the results
# ending with `N passed, M failed, K skipped`. The lab recipe is ../shared/tools/xen-lab.
#   scripts/test-xen.sh [--no-build] [--filter TEXT]
# Artefacts are cached outside the repo in $XEN_LAB_CACHE (default /var/cache/xen-depriv-lab),
# keyed by the lab's inputs; the serial log of a failed boot is kept in reports/xen-boot.log.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
build=1 filter=
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --filter) filter=$2; shift 2 ;;
    *) echo "usage: scripts/test-xen.sh [--no-build] [--filter TEXT]" >&2; exit 2 ;;
  esac
done
mkdir -p reports
rm -f reports/xen.json

skip() {
  echo "test:xen: skipped: $*"
  printf '{"skipped":%s,"numPassedTests":0,"numFailedTests":0,"numPendingTests":0,"numTodoTests":0}\n' \
    "$(node -e 'console.log(JSON.stringify(process.argv[1]))' "$*")" > reports/xen.json
  exit 0
}

lab=$(cd "$repo/../shared/tools/xen-lab" 2>/dev/null && pwd) || skip "no ../shared/tools/xen-lab beside the repository"
[ "$(id -u)" -eq 0 ] || skip "needs root (builds a dom0 initramfs with device nodes, boots QEMU)"
for need in /boot/xen-4.17-amd64.gz /bin/busybox /usr/bin/cpio /usr/bin/qemu-system-x86_64 /usr/lib/xen-4.17/bin/xl; do
  [ -e "$need" ] || skip "$need missing (scripts/setup-system.sh installs it as root)"
done
ls /lib/modules | grep -qE -- '-amd64$' || skip "no Debian amd64 kernel (linux-image-amd64)"

# One lab boot at a time on this machine (it is CPU-heavy): wait for any other run of the tier.
exec 9>/tmp/xen-depriv-lab.lock
flock 9

if [ $build = 1 ]; then
  bash scripts/ensure-install.sh
  TURBO_TELEMETRY_DISABLED=1 npx turbo run build --output-logs=errors-only >/dev/null
fi

# The device guest's CD images (test/xen/guest-devices.xen.mjs), each an ISO 9660 image holding
# one marker.txt; dom0 has no genisoimage, so they are made here, on the share.
rm -rf reports/xen-guest
mkdir -p reports/xen-guest
if command -v genisoimage >/dev/null 2>&1; then
  for x in a b; do
    d=$(mktemp -d)
    echo "XD-CD-$x $(date +%s%N)" > "$d/marker.txt"
    genisoimage -quiet -V "XD$x" -o "reports/xen-guest/cd-$x.iso" "$d"
    rm -rf "$d"
  done
fi
# xl save/restore need libxl's save helper, which the lab's dom0 does not have.
cp /usr/lib/xen-4.17/bin/libxl-save-helper reports/xen-guest/ 2>/dev/null || true

# The lab's artefacts, built once per key (scripts/lab-artefacts.sh).
. scripts/lab-artefacts.sh
art=$(lab_artefacts "$lab")

set +e
"$lab/boot.sh" "$art" --share "$repo" --timeout 1200 --log "$art/last-boot.log" -- \
  "cd /mnt/host && XEN_TEST_FILTER='$filter' node test/xen/dom0-runner.mjs"
rc=$?
set -e
if [ ! -s reports/xen.json ]; then
  cp "$art/last-boot.log" reports/xen-boot.log
  echo "test:xen: no report from dom0 (boot.sh exit $rc); serial log kept in reports/xen-boot.log"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi
if [ $rc -ne 0 ]; then
  cp "$art/last-boot.log" reports/xen-boot.log
  echo "test:xen: serial log kept in reports/xen-boot.log"
fi
exit $rc
