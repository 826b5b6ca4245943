import { xenDeviceModelSeccomp } from '@xen-depriv/privcmd-filter';
import type { SeccompProgram } from '@xen-depriv/qemu-launcher';

let cached: SeccompProgram | null = null;

/**
 * The one seccomp filter of every device model this app launches, whoever asks (CLI, service,
 * libxl shim): privcmd-filter's `xenDeviceModelSeccomp()` as it is (its profile name and
 * program), compiled once. That is the device-model allow-list with the tun/tap ioctls of a NIC
 * handed over as a descriptor, plus IOCTL_PRIVCMD_HYPERCALL, which Xen's QEMU 7.2 needs during
 * its init before `-xen-domid-restrict` (the kernel refuses it on the restricted fd afterwards).
 */
export function dmSeccomp(): SeccompProgram {
  if (cached === null) {
    const { profile, program } = xenDeviceModelSeccomp();
    cached = { profile, program };
  }
  return cached;
}
