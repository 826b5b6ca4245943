import {
  HVMMEM_ram_ro,
  HVMMEM_ram_rw,
  SHUTDOWN_poweroff,
  SHUTDOWN_reboot,
  XEN_DMOP_MEM_CACHEATTR_WB,
} from '@xen-depriv/dmop-abi';
import type { PolicyProfile } from './policy.js';

/** 128 MiB of 4 KiB pages: above any VRAM QEMU's Xen VGA models use, and track_dirty_vram's bitmap then fits one 4096-byte buffer. */
const VRAM_PAGES = 32768;

/**
 * The DM_OPs QEMU 7.2 issues for an x86 HVM guest (docs/audits/privcmd-ops.md), with the arguments
 * it uses: MSIs only into the local APIC window 0xfee00000-0xfeefffff, `set_mem_type` only between
 * `HVMMEM_ram_rw` and `HVMMEM_ram_ro` (xen_platform.c, xen-hvm.c), dirty tracking and relocation of
 * at most VRAM-sized ranges inside guest memory, `modified_memory` with one extent (what
 * xen_modified_memory() sends), ioreq ranges inside what the toolstack declared, ISA IRQs 0-15,
 * PCI links 0-3, poweroff/reboot only, write-back cache pinning only. Two buffers at most
 * (modified_memory and track_dirty_vram use bufs[1]), each at most a page.
 */
export const qemuXenHvmProfile: PolicyProfile = {
  name: 'qemu-xen-hvm',
  limits: { maxBufs: 2, maxBufSize: 4096 },
  ops: {
    create_ioreq_server: {},
    get_ioreq_server_info: {},
    map_io_range_to_ioreq_server: { withinDeclaredIoRanges: true },
    unmap_io_range_from_ioreq_server: { withinDeclaredIoRanges: true },
    set_ioreq_server_state: {},
    destroy_ioreq_server: {},
    track_dirty_vram: { maxPages: VRAM_PAGES, withinGuestMemory: true },
    set_pci_intx_level: { linkMax: 3 },
    set_isa_irq_level: { isaIrqMax: 15 },
    set_pci_link_route: { linkMax: 3, isaIrqMax: 15 },
    modified_memory: { maxExtents: 1, maxPages: 262144, withinGuestMemory: true },
    set_mem_type: {
      memTypes: [HVMMEM_ram_rw, HVMMEM_ram_ro],
      maxPages: VRAM_PAGES,
      withinGuestMemory: true,
    },
    inject_msi: { msiAddress: [0xfee00000n, 0xfeefffffn] },
    remote_shutdown: { shutdownReasons: [SHUTDOWN_poweroff, SHUTDOWN_reboot] },
    relocate_memory: { maxPages: VRAM_PAGES, withinGuestMemory: true },
    pin_memory_cacheattr: { cacheAttrs: [XEN_DMOP_MEM_CACHEATTR_WB], withinGuestMemory: true },
  },
};
