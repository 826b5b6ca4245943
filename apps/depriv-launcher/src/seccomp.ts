import { xenDeviceModelSeccomp } from '@xen-depriv/privcmd-filter';
import type { SeccompProgram } from '@xen-depriv/qemu-launcher';

let cached: SeccompProgram | null = null;

/**
 * The one seccomp filter of every device model this app launches, whoever asks (CLI, service,
 * libxl shim): privcmd-filter's `xenDeviceModelSeccomp()`, the device-model allow-list plus
 * IOCTL_PRIVCMD_HYPERCALL, which Xen's QEMU 7.2 needs during its init before
 * `-xen-domid-restrict` (VGA VRAM populate; see privcmd-filter's README). After the restriction
 * the kernel refuses that ioctl (EPERM) on the restricted fd anyway.
 */
export function dmSeccomp(): SeccompProgram {
  if (cached === null) {
    const s = xenDeviceModelSeccomp();
    cached = { profile: s.profile, program: s.program };
  }
  return cached;
}
