import { compileSeccomp, xenDeviceModelAllowlist } from '@xen-depriv/privcmd-filter';
import type { SeccompProgram } from '@xen-depriv/qemu-launcher';

/**
 * The tap ioctls QEMU 7.2 issues on a `-netdev tap,fd=N` it was handed (net/tap-linux.c:
 * tap_probe_vnet_hdr TUNGETIFF, tap_probe_has_ufo/tap_fd_set_offload TUNSETOFFLOAD,
 * tap_probe_vnet_hdr_len/tap_fd_set_vnet_hdr_len TUNGETVNETHDRSZ/TUNSETVNETHDRSZ,
 * tap_set_sndbuf TUNSETSNDBUF, tap_fd_set_vnet_le/be TUNSETVNETLE/BE, tap_fd_enable/disable
 * TUNSETQUEUE, TUNGETFEATURES); numbers from linux/if_tun.h (_IOR/_IOW('T', n, int|uint)).
 * They act only on a tun/tap descriptor, and the DM can open none itself (no /dev/net/tun in
 * its root): they reach only the tap the launcher made for it.
 */
export const TAP_IOCTLS: readonly number[] = [
  0x800454cf, // TUNGETFEATURES
  0x400454d0, // TUNSETOFFLOAD
  0x800454d2, // TUNGETIFF
  0x400454d4, // TUNSETSNDBUF
  0x800454d7, // TUNGETVNETHDRSZ
  0x400454d8, // TUNSETVNETHDRSZ
  0x400454d9, // TUNSETQUEUE
  0x400454dc, // TUNSETVNETLE
  0x400454de, // TUNSETVNETBE
];

let cached: SeccompProgram | null = null;

/**
 * The one seccomp filter of every device model this app launches, whoever asks (CLI, service,
 * libxl shim): privcmd-filter's Xen device-model allow-list (`xenDeviceModelAllowlist()`: the
 * device-model ioctls plus IOCTL_PRIVCMD_HYPERCALL, which Xen's QEMU 7.2 needs during its init
 * before `-xen-domid-restrict`; the kernel refuses it on the restricted fd afterwards) and the
 * tap ioctls of a NIC handed over as a descriptor.
 */
export function dmSeccomp(): SeccompProgram {
  if (cached === null) {
    const allow = xenDeviceModelAllowlist();
    cached = {
      profile: 'privcmd-filter/xenDeviceModelAllowlist+tap',
      program: compileSeccomp({ ...allow, ioctls: [...(allow.ioctls ?? []), ...TAP_IOCTLS] }),
    };
  }
  return cached;
}
