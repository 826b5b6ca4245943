/** Debian's Xen-enabled QEMU (package qemu-system-xen): the default binary of target `dom0`. */
export const XEN_QEMU_BINARY = '/usr/libexec/xen-qemu-system-i386';
