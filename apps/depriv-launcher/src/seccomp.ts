import {
  compileSeccomp,
  deviceModelAllowlist,
  IOCTL_PRIVCMD_HYPERCALL,
} from '@xen-depriv/privcmd-filter';
import type { SeccompProgram } from '@xen-depriv/qemu-launcher';

let cached: SeccompProgram | null = null;

/**
 * The one seccomp filter of every device model this app launches, whoever asks (CLI, service,
 * libxl shim): privcmd-filter's device-model allow-list plus IOCTL_PRIVCMD_HYPERCALL. The
 * filter is installed before exec, so it also covers Xen's QEMU's init, before
 * `-xen-domid-restrict`: there QEMU 7.2 populates the VGA VRAM with
 * xc_domain_populate_physmap_exact (hw/i386/xen/xen-hvm.c xen_ram_alloc), a memory_op
 * hypercall through that ioctl, and dies with "xen: failed to populate ram at 7000000" without
 * it. Allowing it costs nothing after the restriction: the kernel refuses the ioctl (EPERM) on a
 * restricted privcmd fd, and the jail's /dev/xen nodes are gone once the DM is ready.
 */
export function dmSeccomp(): SeccompProgram {
  cached ??= {
    profile: 'privcmd-filter/deviceModelAllowlist+IOCTL_PRIVCMD_HYPERCALL',
    program: compileSeccomp({
      ...deviceModelAllowlist,
      ioctls: [...(deviceModelAllowlist.ioctls ?? []), IOCTL_PRIVCMD_HYPERCALL],
    }),
  };
  return cached;
}
