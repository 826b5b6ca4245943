import type { IoRange, PolicyContext } from './policy.js';

/** What the toolstack configured for an HVM guest (xl.cfg names), all a DM's context follows from. */
export interface HvmGuestConfig {
  /** `memory`, in MiB. */
  readonly memoryMiB: number;
  /** `videoram`, in MiB (libxl: 16 for stdvga, 8 for cirrus). Default 16. */
  readonly videoramMiB?: number;
  /**
   * `mmio_hole`, in MiB: the PCI hole below 4 GiB. Default: hvmloader's, which starts at
   * HVM_BELOW_4G_MMIO_START (0xf0000000).
   */
  readonly mmioHoleMiB?: number;
  /**
   * RAM blocks QEMU adds after the guest's own besides VRAM (option ROMs, each populated through
   * XENMEM_populate_physmap like VRAM), in MiB. Default 8.
   */
  readonly romMiB?: number;
}

const MiB = 1n << 20n;
const GiB4 = 1n << 32n;
/** HVM_BELOW_4G_MMIO_START: hvmloader's default start of the PCI hole. */
const HVM_BELOW_4G_MMIO_START = 0xf0000000n;
/** The legacy VGA window QEMU's VGA models claim (0xa0000-0xbffff). */
const VGA_WINDOW: IoRange = { type: 'mmio', start: 0xa0000n, end: 0xbffffn };

/**
 * The policy context of an HVM guest's device model, derived from what it can legitimately own
 * instead of declared by hand:
 *
 * - I/O ports: the whole 16-bit port space. Port I/O is the guest's own address space; a range
 *   claimed that Xen emulates itself (PIT, PIC, RTC, PCI config) never reaches the DM.
 * - MMIO: the legacy VGA window, and everything from the end of the guest's low RAM to 4 GiB:
 *   hvmloader's PCI hole with every BAR of the DM's emulated devices, and the platform page range
 *   above it, where QEMU 7.2 also claims the MSI window, the IOAPIC and the HPET (seen in a
 *   recording: Xen emulates those itself first, so such a claim only shadows its own guest's
 *   devices). Never the guest's RAM.
 * - PCI config: segment 0, bus 0, the only bus of QEMU's i440fx/xenfv machine.
 * - Guest memory: everything below 4 GiB (RAM, the hole into which QEMU relocates VRAM), RAM
 *   relocated above 4 GiB by the hole, and the RAM blocks QEMU itself populates after the guest's
 *   memory (VRAM and option ROMs).
 */
export function deviceModelContext(guest: HvmGuestConfig): PolicyContext {
  const memory = BigInt(guest.memoryMiB) * MiB;
  const holeStart =
    guest.mmioHoleMiB === undefined
      ? HVM_BELOW_4G_MMIO_START
      : GiB4 - BigInt(guest.mmioHoleMiB) * MiB;
  // Low RAM ends at the hole; hvmloader relocates the rest above 4 GiB.
  const lowRam = memory < holeStart ? memory : holeStart;
  const ramEnd = memory > lowRam ? GiB4 + (memory - lowRam) : lowRam;
  // QEMU's RAM blocks after pc.ram (ram_addr space) are populated at gfns right after the guest's.
  const qemuBlocksEnd =
    ramEnd + BigInt(guest.videoramMiB ?? 16) * MiB + BigInt(guest.romMiB ?? 8) * MiB;
  const end = [GiB4, ramEnd, qemuBlocksEnd].reduce((a, b) => (a > b ? a : b));
  return {
    guestMemoryEndGfn: end >> 12n,
    ioRanges: [
      { type: 'port', start: 0n, end: 0xffffn },
      VGA_WINDOW,
      { type: 'mmio', start: lowRam, end: GiB4 - 1n },
      // XEN_DMOP_PCI_SBDF(0, 0, dev, fn) for every device and function of bus 0.
      { type: 'pci', start: 0n, end: 0xffn },
    ],
  };
}
