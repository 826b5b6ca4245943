#!/usr/bin/env bash
# Downloads the Debian sources of Xen 4.17, QEMU 7.2 and Linux 6.1 into .sources/ (git-ignored),
# for reading semantics: xen/arch/x86/hvm/dm.c, hw/xen/*, drivers/xen/privcmd.c ...
# Never copy code from them into the project.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.sources
mkdir -p "$dest"

if [ "$(id -u)" -ne 0 ]; then
  echo "fetch-sources: needs root (adds a deb-src entry and installs dpkg-dev)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
list=/etc/apt/sources.list.d/xen-depriv-src.sources
if [ ! -f "$list" ]; then
  cat >"$list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi
command -v dpkg-source >/dev/null || apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null

cd "$dest"
# A mirror may lack the newest upload's source (the security archive often does): try each
# version apt knows, newest first.
for src in xen qemu; do
  ls -d "$src"-*/ >/dev/null 2>&1 && continue
  for v in $(apt-cache showsrc "$src" | awk '/^Version:/ {print $2}' | sort -Vr); do
    if apt-get source -qq "$src=$v" >/dev/null 2>&1; then
      echo "fetch-sources: $src $v"
      break
    fi
  done
  ls -d "$src"-*/ >/dev/null 2>&1 || { echo "fetch-sources: no source of $src could be fetched" >&2; exit 1; }
done
if [ ! -d linux-source-6.1 ]; then
  apt-get download -qq linux-source-6.1 >/dev/null
  dpkg-deb -x linux-source-6.1_*.deb linux-deb
  tar -xf linux-deb/usr/src/linux-source-6.1.tar.xz
  rm -rf linux-deb linux-source-6.1_*.deb
fi
echo "fetch-sources: $(ls -d */ | tr '\n' ' ')in $(pwd)"
