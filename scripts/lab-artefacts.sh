# Sourced by scripts/test-xen.sh and tools/xen-matrix/run.sh: the lab's artefacts (Xen, the dom0
# kernel and initramfs with node and Xen's QEMU), cached outside the repo in $XEN_LAB_CACHE
# (default /var/cache/xen-depriv-lab) under a key of the lab's own files, the Debian packages
# it copies from, and this Node.
#   lab_artefacts LAB_DIR   prints the artefact directory, building it when missing (to stderr:
#                           whether it was built or cached)
lab_artefacts() {
  local lab=$1 key art
  key=$(
    {
      cat "$lab"/build.sh "$lab"/init.sh "$lab"/dmop-test.c "$lab"/guests/* "$lab"/*.js "$lab"/selftest.sh
      dpkg-query -W -f='${Package} ${Version}\n' xen-hypervisor-4.17-amd64 xen-utils-4.17 linux-image-amd64 \
        qemu-system-xen busybox-static libxen-dev 2>/dev/null
      node --version
    } | sha256sum | cut -c1-16
  )
  art=${XEN_LAB_CACHE:-/var/cache/xen-depriv-lab}/$key
  if [ ! -s "$art/base.cpio" ]; then
    echo "lab: building lab artefacts into $art" >&2
    rm -rf "$art"
    mkdir -p "$art"
    "$lab/build.sh" "$art" --node --qemu-xen >/dev/null
  else
    echo "lab: lab artefacts cached in $art" >&2
  fi
  printf '%s\n' "$art"
}
