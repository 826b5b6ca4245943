import { xenDeviceModelSeccomp } from '@xen-depriv/privcmd-filter';
import type { SeccompProgram } from './plan.js';

/**
 * privcmd-filter's device-model allow-list without the init-time hypercall, compiled
 * (`xenDeviceModelSeccomp({ mode: 'strict' })`): a filter for a QEMU that never issues
 * IOCTL_PRIVCMD_HYPERCALL (no Xen, or a DM started already restricted). A Xen DM launcher
 * takes `xenDeviceModelSeccomp()` itself.
 */
export function deviceModelSeccomp(): SeccompProgram {
  const s = xenDeviceModelSeccomp({ mode: 'strict' });
  return { profile: s.profile, program: s.program };
}
