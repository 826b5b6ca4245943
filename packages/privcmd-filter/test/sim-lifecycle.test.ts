import { DeviceModel, HVMMEM_mmio_dm, HVMMEM_ram_ro, XenError } from '@xen-depriv/dmop-abi';
import { SimHypervisor } from '@xen-depriv/dmop-abi/sim';
import { describe, expect, it } from 'vitest';
import {
  type PolicyContext,
  PrivcmdDeniedError,
  qemuXenHvmProfile,
  SimPrivcmd,
} from '../src/index.js';
import { dmOp, OP } from './helpers/dmop-bytes.js';

const HVM_IOREQSRV_BUFIOREQ_ATOMIC = 2;
const SHUTDOWN_reboot = 1;
const XEN_DMOP_MEM_CACHEATTR_WB = 6;

function setup() {
  const hv = new SimHypervisor();
  const domid = hv.createHvmDomain({ vcpus: 2, memoryPages: 0x40000 });
  const context: PolicyContext = {
    guestMemoryEndGfn: 0x40000n,
    ioRanges: [
      { type: 'mmio', start: 0xf0000000n, end: 0xf0ffffffn },
      { type: 'port', start: 0x3f8n, end: 0x3ffn },
      { type: 'pci', start: 0x18n, end: 0x18n }, // 0000:00:03.0
    ],
  };
  const sim = new SimPrivcmd({ domid, profile: qemuXenHvmProfile, context, backend: hv });
  return { hv, domid, sim, dm: new DeviceModel(sim) };
}

describe('SimPrivcmd over the dmop-abi hypervisor model with the qemu-xen-hvm profile', () => {
  it('model: runs the ioreq-server lifecycle QEMU runs, every request reaching the simulated Xen', () => {
    const { hv, domid, sim, dm } = setup();
    const id = dm.createIoreqServer(domid, HVM_IOREQSRV_BUFIOREQ_ATOMIC);
    dm.mapIoRangeToIoreqServer(domid, id, true, 0xf0000000n, 0xf0ffffffn);
    dm.mapIoRangeToIoreqServer(domid, id, false, 0x3f8n, 0x3ffn);
    dm.mapPcidevToIoreqServer(domid, id, 0, 0, 3, 0);
    dm.setIoreqServerState(domid, id, true);
    const info = dm.getIoreqServerInfo(domid, id);
    const server = hv.domain(domid).ioreqServers.get(id);
    expect(server?.enabled).toBe(true);
    expect(info.bufioreqPort).toBe(server?.bufioreqPort);
    dm.setIsaIrqLevel(domid, 4, 1);
    dm.setPciIntxLevel(domid, 0, 0, 3, 0, 1);
    dm.setPciLinkRoute(domid, 0, 11);
    dm.injectMsi(domid, 0xfee01000n, 0x4041);
    expect(hv.domain(domid).interrupts).toHaveLength(3);
    dm.setMemType(domid, HVMMEM_ram_ro, 0xc0n, 0x40);
    dm.trackDirtyVram(domid, 0x100n, 64);
    dm.modifiedMemory(domid, 0x100n, 4);
    dm.pinMemoryCacheattr(domid, 0xf000n, 0xf0ffn, XEN_DMOP_MEM_CACHEATTR_WB);
    dm.unmapIoRangeFromIoreqServer(domid, id, false, 0x3f8n, 0x3ffn);
    dm.unmapPcidevFromIoreqServer(domid, id, 0, 0, 3, 0);
    dm.setIoreqServerState(domid, id, false);
    dm.destroyIoreqServer(domid, id);
    expect(hv.domain(domid).ioreqServers.size).toBe(0);
    dm.shutdown(domid, SHUTDOWN_reboot);
    expect(hv.domain(domid).shutdownReason).toBe(SHUTDOWN_reboot);
    expect(sim.counts).toEqual({ allowed: 19, denied: 0 });
  });

  it('model: one denied request per profile rule, none reaching the simulated Xen', () => {
    const { hv, domid, sim, dm } = setup();
    const id = dm.createIoreqServer(domid, HVM_IOREQSRV_BUFIOREQ_ATOMIC);
    const before = JSON.stringify(hv.domain(domid), (_k, v) =>
      typeof v === 'bigint'
        ? v.toString()
        : v instanceof Map
          ? [...v]
          : v instanceof Set
            ? [...v]
            : v,
    );
    const denied: [string, () => unknown, string][] = [
      [
        'kernel: another domid',
        () => dm.setIsaIrqLevel(domid + 1, 4, 1),
        'fd is restricted to domid',
      ],
      [
        'limits.maxBufs',
        () => sim.dmOp(domid, [new Uint8Array(32), new Uint8Array(8), new Uint8Array(8)]),
        'at most 2 buffers',
      ],
      [
        'op not listed: inject_event',
        () => dm.injectEvent(domid, 0, 0x20, 0, 0xffffffff, 0, 0n),
        'XEN_DMOP_inject_event is not allowed',
      ],
      ['op not listed: nr_vcpus', () => dm.nrVcpus(domid), 'XEN_DMOP_nr_vcpus is not allowed'],
      [
        'op not listed: map_mem_type_to_ioreq_server',
        () => dm.mapMemTypeToIoreqServer(domid, id, 4, 2),
        'is not allowed',
      ],
      [
        'op not listed: set_irq_level',
        () => dm.setIrqLevel(domid, 5, 1),
        'XEN_DMOP_set_irq_level is not allowed',
      ],
      ['inject_msi.msiAddress', () => dm.injectMsi(domid, 0xfed00000n, 1), 'rule msiAddress'],
      [
        'set_mem_type.memTypes',
        () => dm.setMemType(domid, HVMMEM_mmio_dm, 0x100n, 1),
        'rule memTypes',
      ],
      [
        'set_mem_type.maxPages',
        () => dm.setMemType(domid, HVMMEM_ram_ro, 0x100n, 40000),
        'rule maxPages',
      ],
      [
        'set_mem_type.withinGuestMemory',
        () => dm.setMemType(domid, HVMMEM_ram_ro, 0x3ffffn, 2),
        'rule withinGuestMemory',
      ],
      [
        'track_dirty_vram.maxPages', // Through DeviceModel the bitmap of 32769 pages is 4097 bytes, which the kernel's
        // dm_op_buf_max_size refuses first; a caller of its own choosing sends a smaller buffer.
        () => sim.dmOp(domid, [dmOp(OP.track_dirty_vram, [[0, 4, 32769]]), new Uint8Array(64)]),
        'rule maxPages',
      ],
      [
        'track_dirty_vram.withinGuestMemory',
        () => dm.trackDirtyVram(domid, 0x3fff0n, 32),
        'rule withinGuestMemory',
      ],
      [
        'modified_memory.maxExtents',
        () =>
          dm.modifiedMemoryBulk(domid, [
            { firstPfn: 1n, nr: 1 },
            { firstPfn: 2n, nr: 1 },
          ]),
        'rule maxExtents',
      ],
      ['modified_memory.maxPages', () => dm.modifiedMemory(domid, 0n, 262145), 'rule maxPages'],
      [
        'modified_memory.withinGuestMemory',
        () => dm.modifiedMemory(domid, 0x3ffffn, 2),
        'rule withinGuestMemory',
      ],
      [
        'relocate_memory.maxPages',
        () => dm.relocateMemory(domid, 40000, 0x100n, 0x200n),
        'rule maxPages',
      ],
      [
        'relocate_memory.withinGuestMemory',
        () => dm.relocateMemory(domid, 16, 0x100n, 0x3fff8n),
        'rule withinGuestMemory',
      ],
      [
        'pin_memory_cacheattr.cacheAttrs',
        () => dm.pinMemoryCacheattr(domid, 0xf000n, 0xf0ffn, 0),
        'rule cacheAttrs',
      ],
      [
        'pin_memory_cacheattr.withinGuestMemory',
        () => dm.pinMemoryCacheattr(domid, 0x3f000n, 0x40000n, 6),
        'rule withinGuestMemory',
      ],
      [
        'map_io_range.withinDeclaredIoRanges',
        () => dm.mapIoRangeToIoreqServer(domid, id, false, 0x60n, 0x64n),
        'rule withinDeclaredIoRanges',
      ],
      [
        'map_pcidev.withinDeclaredIoRanges',
        () => dm.mapPcidevToIoreqServer(domid, id, 0, 0, 4, 0),
        'rule withinDeclaredIoRanges',
      ],
      [
        'unmap_io_range.withinDeclaredIoRanges',
        () => dm.unmapIoRangeFromIoreqServer(domid, id, true, 0xe0000000n, 0xe0000fffn),
        'rule withinDeclaredIoRanges',
      ],
      ['set_isa_irq_level.isaIrqMax', () => dm.setIsaIrqLevel(domid, 16, 1), 'rule isaIrqMax'],
      ['set_pci_link_route.linkMax', () => dm.setPciLinkRoute(domid, 4, 5), 'rule linkMax'],
      ['set_pci_link_route.isaIrqMax', () => dm.setPciLinkRoute(domid, 1, 16), 'rule isaIrqMax'],
      [
        'set_pci_intx_level.linkMax',
        () => dm.setPciIntxLevel(domid, 0, 0, 3, 4, 1),
        'rule linkMax',
      ],
      ['remote_shutdown.shutdownReasons', () => dm.shutdown(domid, 2), 'rule shutdownReasons'],
    ];
    const outcomes = denied.map(([rule, call, text]) => {
      try {
        call();
        return [rule, 'allowed'];
      } catch (e) {
        const ok =
          e instanceof PrivcmdDeniedError &&
          e instanceof XenError &&
          e.decision.reason.includes(text);
        return [rule, ok ? 'denied' : String(e)];
      }
    });
    expect(outcomes).toEqual(denied.map(([rule]) => [rule, 'denied']));
    expect(sim.counts).toEqual({ allowed: 1, denied: denied.length });
    const after = JSON.stringify(hv.domain(domid), (_k, v) =>
      typeof v === 'bigint'
        ? v.toString()
        : v instanceof Map
          ? [...v]
          : v instanceof Set
            ? [...v]
            : v,
    );
    expect(after).toBe(before);
  });
});
