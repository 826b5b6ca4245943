#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only those that are missing.
# Idempotent: a second run installs nothing. As non-root it installs nothing and says
# which packages are missing and which tests are skipped because of it.
set -euo pipefail

# package -> the tests that need it (skipped, with that reason, when it is missing)
declare -A NEEDED_BY=(
  [gcc]="the sys native addon build and every C conformance harness"
  [make]="the sys native addon build (node-gyp)"
  [python3]="the sys native addon build (node-gyp) and xenstored-peer's ring bridge"
  [libc6-dev]="the sys native addon build and every C conformance harness"
  [libxen-dev]="dmop-abi's golden vectors and layout checks against libxendevicemodel, the privcmd trace recorder"
  [xenstore-utils]="xs-restrict tests that run Xen's own xenstore-* clients against the embedded server"
  [xen-utils-4.17]="xs-restrict differential tests against the real C xenstored (xenstored-peer) and test-xenstore"
  [qemu-system-x86]="qemu-launcher and xen-depriv tests that launch a real confined qemu-system-x86_64 -M none"
  [qemu-system-xen]="qemu-launcher's probe and Xen-mode plan checks against Debian's Xen QEMU; the real-Xen tier's device model"
  [xen-hypervisor-4.17-amd64]="the real-Xen tier (npm run test:xen boots this hypervisor under QEMU)"
  [linux-image-amd64]="the real-Xen tier (its dom0 kernel and modules)"
  [seabios]="the real-Xen tier (HVM guest firmware)"
  [busybox-static]="the real-Xen tier (its dom0 initramfs)"
  [cpio]="the real-Xen tier (its dom0 initramfs)"
  [groff-base]="depriv-launcher's man page checks (groff -man -Tutf8 -ww renders each page without a warning)"
  [man-db]="depriv-launcher's man page checks and the global-install test's man xen-depriv from the installed package"
  [genisoimage]="the real-Xen tier's device guest (its CD-ROM images, with a marker file, for cdrom and cd-insert)"
  [patchelf]="the real-Xen tier's privcmd-trace under the launcher (a copy of Xen's QEMU that loads the recorder)"
)
ORDER=(gcc make python3 libc6-dev libxen-dev xenstore-utils xen-utils-4.17 qemu-system-x86 qemu-system-xen
  xen-hypervisor-4.17-amd64 linux-image-amd64 seabios busybox-static cpio groff-base man-db genisoimage patchelf)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup-system: not a Debian system (no dpkg-query); tests that need Debian's Xen and QEMU packages will skip themselves."
  exit 0
fi

missing=()
for pkg in "${ORDER[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-system: all ${#ORDER[@]} Debian packages present, nothing to install."
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-system: not root, installing nothing. Missing Debian packages:"
  for pkg in "${missing[@]}"; do
    echo "  - $pkg: skipped tests: ${NEEDED_BY[$pkg]}"
  done
  echo "setup-system: as root, run: apt-get install -y --no-install-recommends ${missing[*]}"
  exit 0
fi

echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# apt-cache knows nothing before the first update on a fresh machine.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mmin -1440 2>/dev/null | head -1)" ]; then
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-system: installed ${missing[*]}"
