import { describe, expect, it } from 'vitest';
import {
  DeviceModel,
  type DmOp,
  decodeDmOpResult,
  Errno,
  encodeDmOp,
  HVM_IOREQSRV_BUFIOREQ_ATOMIC,
  HVM_IOREQSRV_BUFIOREQ_OFF,
  HVMMEM_ioreq_server,
  HVMMEM_mmio_dm,
  HVMMEM_ram_ro,
  HVMMEM_ram_rw,
  HVMMEM_unused,
  XEN_DMOP_DELETE_MEM_CACHEATTR,
  XEN_DMOP_IO_RANGE_MEMORY,
  XEN_DMOP_IO_RANGE_PORT,
  XEN_DMOP_IOREQ_MEM_ACCESS_WRITE,
  XEN_DMOP_MEM_CACHEATTR_WB,
  XenError,
} from '../src/index.js';
import { MAX_NR_IO_RANGES, MAX_NR_IOREQ_SERVERS, SimHypervisor } from '../src/sim.js';

function setup(options: Parameters<SimHypervisor['createHvmDomain']>[0] = {}) {
  const hv = new SimHypervisor();
  const domid = hv.createHvmDomain({ memoryPages: 0x100, ...options });
  const call = (op: DmOp) => {
    const { bufs } = encodeDmOp(op);
    return hv.dmOp(domid, bufs);
  };
  /** Encodes `op`, lets `poke` alter the bytes (or return other buffers), and sends them. */
  const raw = (op: DmOp, poke: (bufs: Uint8Array[]) => unknown) => {
    const { bufs } = encodeDmOp(op);
    const replaced = poke(bufs);
    return hv.dmOp(domid, Array.isArray(replaced) ? (replaced as Uint8Array[]) : bufs);
  };
  const create = (handleBufioreq = HVM_IOREQSRV_BUFIOREQ_ATOMIC) => {
    const { bufs } = encodeDmOp({ op: 'create_ioreq_server', handleBufioreq });
    expect(hv.dmOp(domid, bufs)).toBe(0);
    return decodeDmOpResult('create_ioreq_server', bufs).id;
  };
  return { hv, domid, call, raw, create };
}

const mmio = (
  id: number,
  start: bigint,
  end: bigint,
  op:
    | 'map_io_range_to_ioreq_server'
    | 'unmap_io_range_from_ioreq_server' = 'map_io_range_to_ioreq_server',
): DmOp => ({ op, id, type: XEN_DMOP_IO_RANGE_MEMORY, start, end });

describe('DM_OP entry checks (model: dmop-abi/sim, after xen/common/dm.c and arch/x86/hvm/dm.c)', () => {
  it('model: more than two buffers is E2BIG (do_dm_op)', () => {
    const { hv, domid } = setup();
    const { bufs } = encodeDmOp({ op: 'nr_vcpus' });
    expect(hv.dmOp(domid, [bufs[0] as Uint8Array, new Uint8Array(8), new Uint8Array(8)])).toBe(
      -Errno.E2BIG,
    );
  });
  it('model: an unknown domid is ESRCH (rcu_lock_remote_domain_by_id)', () => {
    const { hv } = setup();
    expect(hv.dmOp(999, encodeDmOp({ op: 'nr_vcpus' }).bufs)).toBe(-Errno.ESRCH);
  });
  it('model: a domain targeting itself is EPERM (rcu_lock_remote_domain_by_id)', () => {
    const { hv, domid } = setup();
    expect(hv.dmOpAs(domid, domid, encodeDmOp({ op: 'nr_vcpus' }).bufs)).toBe(-Errno.EPERM);
  });
  it('model: a PV domain is EINVAL (dm_op: !is_hvm_domain)', () => {
    const hv = new SimHypervisor();
    const pv = hv.createPvDomain();
    expect(hv.dmOp(pv, encodeDmOp({ op: 'nr_vcpus' }).bufs)).toBe(-Errno.EINVAL);
  });
  it('model: buf[0] shorter than the 8-byte header is EFAULT', () => {
    const { hv, domid } = setup();
    expect(hv.dmOp(domid, [new Uint8Array(7)])).toBe(-Errno.EFAULT);
  });
  it('model: an op number past nr_vcpus is EOPNOTSUPP', () => {
    const { raw } = setup();
    expect(
      raw({ op: 'nr_vcpus' }, (b) => {
        b[0]?.set([21], 0);
      }),
    ).toBe(-Errno.EOPNOTSUPP);
  });
  it('model: op 0 and set_irq_level (Arm only) are EOPNOTSUPP on x86', () => {
    const { raw, call } = setup();
    expect(
      raw({ op: 'nr_vcpus' }, (b) => {
        b[0]?.set([0], 0);
      }),
    ).toBe(-Errno.EOPNOTSUPP);
    expect(call({ op: 'set_irq_level', irq: 5, level: 1 })).toBe(-Errno.EOPNOTSUPP);
  });
  it('model: buf[0] too short for the op struct is EFAULT', () => {
    const { raw } = setup();
    expect(raw(mmio(0, 0n, 1n), (b) => [(b[0] as Uint8Array).subarray(0, 8 + 23)])).toBe(
      -Errno.EFAULT,
    );
  });
  it('model: a non-zero xen_dm_op.pad is EINVAL', () => {
    const { raw } = setup();
    expect(
      raw({ op: 'nr_vcpus' }, (b) => {
        b[0]?.set([1], 4);
      }),
    ).toBe(-Errno.EINVAL);
  });
  it.each([
    ['create_ioreq_server', { op: 'create_ioreq_server', handleBufioreq: 0 }, 8 + 2],
    ['map_io_range_to_ioreq_server', mmio(0, 0n, 1n), 8 + 2],
    ['set_ioreq_server_state', { op: 'set_ioreq_server_state', id: 0, enabled: 1 }, 8 + 3],
    ['destroy_ioreq_server', { op: 'destroy_ioreq_server', id: 0 }, 8 + 3],
    ['track_dirty_vram', { op: 'track_dirty_vram', firstPfn: 0n, nr: 8 }, 8 + 4],
    ['set_mem_type', { op: 'set_mem_type', memType: 0, firstPfn: 0n, nr: 1 }, 8 + 7],
    [
      'inject_event',
      { op: 'inject_event', vcpuid: 0, vector: 1, type: 0, insnLen: 0, errorCode: 0, cr2: 0n },
      8 + 7,
    ],
    [
      'inject_event pad1',
      { op: 'inject_event', vcpuid: 0, vector: 1, type: 0, insnLen: 0, errorCode: 0, cr2: 0n },
      8 + 13,
    ],
    ['inject_msi', { op: 'inject_msi', addr: 0xfee00000n, data: 0 }, 8 + 5],
    ['relocate_memory', { op: 'relocate_memory', size: 1, srcGfn: 0n, dstGfn: 1n }, 8 + 6],
    ['pin_memory_cacheattr', { op: 'pin_memory_cacheattr', start: 0n, end: 1n, type: 6 }, 8 + 22],
  ] as [string, DmOp, number][])('model: %s with non-zero padding is EINVAL', (_, op, at) => {
    const { raw } = setup();
    expect(
      raw(op, (b) => {
        b[0]?.set([0x5a], at);
      }),
    ).toBe(-Errno.EINVAL);
  });
});

describe('ioreq servers (model: dmop-abi/sim, after xen/common/ioreq.c)', () => {
  it('model: handle_bufioreq above ATOMIC is EINVAL (ioreq_server_create)', () => {
    expect(setup().call({ op: 'create_ioreq_server', handleBufioreq: 3 })).toBe(-Errno.EINVAL);
  });
  it('model: the ninth server is ENOSPC and ids are the lowest free slot (ioreq_server_create)', () => {
    const { create, call } = setup();
    const ids = Array.from({ length: MAX_NR_IOREQ_SERVERS }, () => create());
    expect(ids).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(call({ op: 'create_ioreq_server', handleBufioreq: 0 })).toBe(-Errno.ENOSPC);
    expect(call({ op: 'destroy_ioreq_server', id: 3 })).toBe(0);
    expect(create()).toBe(3);
  });
  it('model: unknown flags in get_ioreq_server_info are EINVAL', () => {
    const { create, call } = setup();
    expect(call({ op: 'get_ioreq_server_info', id: create(), flags: 2 })).toBe(-Errno.EINVAL);
  });
  it('model: an unknown server id is ENOENT (get_ioreq_server)', () => {
    const { call } = setup();
    expect(call({ op: 'destroy_ioreq_server', id: 5 })).toBe(-Errno.ENOENT);
    expect(call({ op: 'set_ioreq_server_state', id: 5, enabled: 1 })).toBe(-Errno.ENOENT);
  });
  it('model: a server used by a domain other than its emulator is EPERM', () => {
    const { hv, domid, create } = setup();
    const id = create();
    const stub = hv.createHvmDomain();
    expect(hv.dmOpAs(stub, domid, encodeDmOp({ op: 'destroy_ioreq_server', id }).bufs)).toBe(
      -Errno.EPERM,
    );
  });
  it('model: XEN_DMOP_no_gfns leaves the gfns unwritten; without bufioreq there is no port', () => {
    const { hv, domid, create } = setup();
    const off = create(HVM_IOREQSRV_BUFIOREQ_OFF);
    const { bufs } = encodeDmOp({ op: 'get_ioreq_server_info', id: off, flags: 0 });
    expect(hv.dmOp(domid, bufs)).toBe(0);
    const r = decodeDmOpResult('get_ioreq_server_info', bufs);
    expect(r.bufioreqPort).toBe(0);
    expect(r.bufioreqGfn).toBe(0n);
    expect(r.ioreqGfn).toBe(hv.domain(domid).ioreqServers.get(off)?.ioreqGfn);
    const atomic = create();
    const q = encodeDmOp({ op: 'get_ioreq_server_info', id: atomic, flags: 1 });
    expect(hv.dmOp(domid, q.bufs)).toBe(0);
    expect(decodeDmOpResult('get_ioreq_server_info', q.bufs)).toEqual({
      bufioreqPort: hv.domain(domid).ioreqServers.get(atomic)?.bufioreqPort,
      ioreqGfn: 0n,
      bufioreqGfn: 0n,
    });
  });
  it('model: the gfns are mapped on first request, from IOREQ_SERVER_PFN pages, then the legacy params, then ENOMEM (hvm_alloc_ioreq_gfn)', () => {
    const info = (hv: SimHypervisor, domid: number, id: number) => {
      const { bufs } = encodeDmOp({ op: 'get_ioreq_server_info', id, flags: 0 });
      const rc = hv.dmOp(domid, bufs);
      return rc === 0 ? decodeDmOpResult('get_ioreq_server_info', bufs).ioreqGfn : rc;
    };
    // As xc_domain_create() leaves a domain (what the real-Xen tier saw): no server pages,
    // legacy params unset, so the first two pages are gfn 0 and the third request fails.
    const bare = setup({ nrIoreqServerPages: 0 });
    const [a, b, c] = [bare.create(0), bare.create(0), bare.create(0)];
    expect(info(bare.hv, bare.domid, a)).toBe(0n);
    expect(info(bare.hv, bare.domid, b)).toBe(0n);
    expect(info(bare.hv, bare.domid, c)).toBe(-Errno.ENOMEM);
    // A destroyed server gives its page back.
    expect(bare.call({ op: 'destroy_ioreq_server', id: a })).toBe(0);
    expect(info(bare.hv, bare.domid, c)).toBe(0n);
    // A toolstack-built domain: the pages after RAM, in order.
    const built = setup({ ioreqServerPfn: 0xff000n, nrIoreqServerPages: 2 });
    const x = built.create(0);
    const y = built.create(0);
    expect(info(built.hv, built.domid, y)).toBe(0xff000n);
    expect(info(built.hv, built.domid, x)).toBe(0xff001n);
    expect(info(built.hv, built.domid, x)).toBe(0xff001n);
  });
  it('model: start > end is EINVAL (ioreq_server_map_io_range)', () => {
    const { call, create } = setup();
    expect(call(mmio(create(), 2n, 1n))).toBe(-Errno.EINVAL);
  });
  it('model: an unknown range type is EINVAL', () => {
    const { call, create } = setup();
    expect(
      call({ op: 'map_io_range_to_ioreq_server', id: create(), type: 3, start: 0n, end: 1n }),
    ).toBe(-Errno.EINVAL);
  });
  it('model: an overlapping range is EEXIST; adjacent ranges merge', () => {
    const { hv, domid, call, create } = setup();
    const id = create();
    expect(call(mmio(id, 0x1000n, 0x1fffn))).toBe(0);
    expect(call(mmio(id, 0x1fffn, 0x2fffn))).toBe(-Errno.EEXIST);
    expect(call(mmio(id, 0x2000n, 0x2fffn))).toBe(0);
    expect(hv.domain(domid).ioreqServers.get(id)?.ranges[XEN_DMOP_IO_RANGE_MEMORY]).toEqual([
      [0x1000n, 0x2fffn],
    ]);
  });
  it('model: the 257th disjoint range is ENOMEM (rangeset limit MAX_NR_IO_RANGES)', () => {
    const { call, create } = setup();
    const id = create();
    for (let i = 0; i < MAX_NR_IO_RANGES; i++)
      expect(call(mmio(id, BigInt(i * 4), BigInt(i * 4)))).toBe(0);
    expect(call(mmio(id, 0x10000n, 0x10000n))).toBe(-Errno.ENOMEM);
    // Splitting a range needs one more: also ENOMEM at the limit.
    expect(call(mmio(id, 1n, 2n))).toBe(0);
    expect(call(mmio(id, 1n, 1n, 'unmap_io_range_from_ioreq_server'))).toBe(-Errno.ENOMEM);
  });
  it('model: unmapping a range not wholly mapped is ENOENT (ioreq_server_unmap_io_range)', () => {
    const { call, create } = setup();
    const id = create();
    expect(call(mmio(id, 0x1000n, 0x1fffn))).toBe(0);
    expect(call(mmio(id, 0x1800n, 0x27ffn, 'unmap_io_range_from_ioreq_server'))).toBe(
      -Errno.ENOENT,
    );
  });
  it('model: map_mem_type_to_ioreq_server refuses other types and read forwarding with EINVAL', () => {
    const { call, create } = setup();
    const id = create();
    expect(call({ op: 'map_mem_type_to_ioreq_server', id, type: HVMMEM_mmio_dm, flags: 2 })).toBe(
      -Errno.EINVAL,
    );
    expect(
      call({ op: 'map_mem_type_to_ioreq_server', id, type: HVMMEM_ioreq_server, flags: 3 }),
    ).toBe(-Errno.EINVAL);
  });
  it('model: map_mem_type_to_ioreq_server without HAP is EOPNOTSUPP', () => {
    const { call } = setup({ hap: false });
    expect(
      call({ op: 'map_mem_type_to_ioreq_server', id: 0, type: HVMMEM_ioreq_server, flags: 2 }),
    ).toBe(-Errno.EOPNOTSUPP);
  });
});

describe('interrupts, memory and vcpus (model: dmop-abi/sim, after arch/x86/hvm/dm.c)', () => {
  it('model: set_pci_intx_level outside segment 0 bus 0, device > 0x1f, intx > 3 or level > 1 is EINVAL', () => {
    const { hv, domid, call } = setup();
    const ok = {
      op: 'set_pci_intx_level',
      domain: 0,
      bus: 0,
      device: 3,
      intx: 1,
      level: 1,
    } as const;
    expect(call(ok)).toBe(0);
    for (const bad of [{ domain: 1 }, { bus: 1 }, { device: 0x20 }, { intx: 4 }, { level: 2 }]) {
      expect(call({ ...ok, ...bad }), JSON.stringify(bad)).toBe(-Errno.EINVAL);
    }
    expect(hv.domain(domid).interrupts).toEqual([
      { kind: 'pci_intx', device: 3, intx: 1, level: 1 },
    ]);
  });
  it('model: set_isa_irq_level with irq > 15 or level > 1 is EINVAL', () => {
    const { call } = setup();
    expect(call({ op: 'set_isa_irq_level', isaIrq: 16, level: 1 })).toBe(-Errno.EINVAL);
    expect(call({ op: 'set_isa_irq_level', isaIrq: 15, level: 2 })).toBe(-Errno.EINVAL);
    expect(call({ op: 'set_isa_irq_level', isaIrq: 15, level: 0 })).toBe(0);
  });
  it('model: set_pci_link_route with link > 3 or irq > 15 is EINVAL (hvm_set_pci_link_route)', () => {
    const { hv, domid, call } = setup();
    expect(call({ op: 'set_pci_link_route', link: 4, isaIrq: 5 })).toBe(-Errno.EINVAL);
    expect(call({ op: 'set_pci_link_route', link: 3, isaIrq: 16 })).toBe(-Errno.EINVAL);
    expect(call({ op: 'set_pci_link_route', link: 3, isaIrq: 11 })).toBe(0);
    expect(hv.domain(domid).pciLinkRoute).toEqual([0, 0, 0, 11]);
  });
  it('model: inject_msi is logged', () => {
    const { hv, domid, call } = setup();
    expect(call({ op: 'inject_msi', addr: 0xfee01000n, data: 0x4041 })).toBe(0);
    expect(hv.domain(domid).interrupts).toEqual([{ kind: 'msi', addr: 0xfee01000n, data: 0x4041 }]);
  });
  it('model: inject_event to an absent vcpu is EINVAL, to one with an event pending EBUSY', () => {
    const { call } = setup({ vcpus: 2 });
    const ev = {
      op: 'inject_event',
      vcpuid: 1,
      vector: 14,
      type: 3,
      insnLen: 0,
      errorCode: 2,
      cr2: 0x1000n,
    } as const;
    expect(call({ ...ev, vcpuid: 2 })).toBe(-Errno.EINVAL);
    expect(call(ev)).toBe(0);
    expect(call(ev)).toBe(-Errno.EBUSY);
  });
  it('model: track_dirty_vram without the bitmap buffer, over 1 GiB, or with a short bitmap is EINVAL', () => {
    const { hv, domid, call } = setup();
    const { bufs } = encodeDmOp({ op: 'track_dirty_vram', firstPfn: 0n, nr: 16 });
    expect(hv.dmOp(domid, [bufs[0] as Uint8Array])).toBe(-Errno.EINVAL);
    expect(hv.dmOp(domid, [bufs[0] as Uint8Array, new Uint8Array(1)])).toBe(-Errno.EINVAL);
    expect(call({ op: 'track_dirty_vram', firstPfn: 0n, nr: 262145 })).toBe(-Errno.EINVAL);
  });
  it('model: track_dirty_vram reports a new range all dirty once, then the frames the guest wrote', () => {
    const { hv, domid } = setup();
    const dm = new DeviceModel(hv);
    // Recorded on Xen 4.17 (tools/xen-matrix): the first call on a range is all ones.
    expect([...dm.trackDirtyVram(domid, 0xa0n, 12)]).toEqual([0xff, 0x0f]);
    hv.guestWrite(domid, 0xa1n);
    hv.guestWrite(domid, 0xa8n);
    expect([...dm.trackDirtyVram(domid, 0xa0n, 12)]).toEqual([0x02, 0x01]);
    expect([...dm.trackDirtyVram(domid, 0xa0n, 12)]).toEqual([0, 0]);
  });
  it('model: modified_memory with a short extents buffer, a non-zero pad, or past the last gfn is EINVAL', () => {
    const { hv, domid, call, raw } = setup({ logDirty: true });
    const op: DmOp = { op: 'modified_memory', extents: [{ firstPfn: 0x10n, nr: 4 }] };
    expect(raw(op, (b) => [b[0] as Uint8Array, (b[1] as Uint8Array).subarray(0, 15)])).toBe(
      -Errno.EINVAL,
    );
    expect(
      raw(op, (b) => {
        b[1]?.set([1], 4);
      }),
    ).toBe(-Errno.EINVAL);
    // The toolstack's 8 ioreq server pages after RAM are populated: the last gfn is 0x107.
    expect(call({ op: 'modified_memory', extents: [{ firstPfn: 0x106n, nr: 2 }] })).toBe(
      -Errno.EINVAL,
    );
    expect(call({ op: 'modified_memory', extents: [{ firstPfn: 0x10n, nr: 0 }] })).toBe(
      -Errno.EINVAL,
    );
    expect(call(op)).toBe(0);
    expect([...hv.domain(domid).dirty]).toEqual([0x10n, 0x11n, 0x12n, 0x13n]);
  });
  it('model: modified_memory outside log-dirty mode does nothing and succeeds', () => {
    const { hv, domid, call } = setup({ logDirty: false });
    expect(call({ op: 'modified_memory', extents: [{ firstPfn: 0xffffn, nr: 0 }] })).toBe(0);
    expect(hv.domain(domid).dirty.size).toBe(0);
  });
  it('model: set_mem_type past the last gfn, of an unknown type, or of HVMMEM_unused is EINVAL', () => {
    const { call } = setup({ memoryPages: 0x100 });
    expect(call({ op: 'set_mem_type', memType: HVMMEM_ram_ro, firstPfn: 0xffn, nr: 2 })).toBe(
      -Errno.EINVAL,
    );
    expect(call({ op: 'set_mem_type', memType: 5, firstPfn: 0n, nr: 1 })).toBe(-Errno.EINVAL);
    expect(call({ op: 'set_mem_type', memType: HVMMEM_unused, firstPfn: 0n, nr: 1 })).toBe(
      -Errno.EINVAL,
    );
  });
  it('model: set_mem_type to HVMMEM_ioreq_server needs a server that claimed the type, and ram_rw pages', () => {
    const { hv, domid, call, create } = setup();
    const toIoreq = {
      op: 'set_mem_type',
      memType: HVMMEM_ioreq_server,
      firstPfn: 0x20n,
      nr: 2,
    } as const;
    expect(call(toIoreq)).toBe(-Errno.EINVAL);
    const id = create();
    const claim = { op: 'map_mem_type_to_ioreq_server', id, type: HVMMEM_ioreq_server } as const;
    expect(call({ ...claim, flags: XEN_DMOP_IOREQ_MEM_ACCESS_WRITE })).toBe(0);
    expect(call({ op: 'set_mem_type', memType: HVMMEM_ram_ro, firstPfn: 0x21n, nr: 1 })).toBe(0);
    // allow_p2m_type_change(): only ram_rw may become ioreq_server; the loop stops at 0x21.
    expect(call(toIoreq)).toBe(-Errno.EINVAL);
    expect(hv.p2mType(domid, 0x20n)).toBe('ioreq_server');
    // ...and ioreq_server may only go back to ram_rw.
    expect(call({ op: 'set_mem_type', memType: HVMMEM_ram_ro, firstPfn: 0x20n, nr: 1 })).toBe(
      -Errno.EINVAL,
    );
    expect(call({ op: 'set_mem_type', memType: HVMMEM_ram_rw, firstPfn: 0x20n, nr: 1 })).toBe(0);
    expect(hv.p2mType(domid, 0x20n)).toBe('ram_rw');
  });
  it('model: pin_memory_cacheattr with an invalid type or end < start is EINVAL, overlap EBUSY, unknown delete ENOENT', () => {
    const { call } = setup();
    const pin = (start: bigint, end: bigint, type: number) =>
      call({ op: 'pin_memory_cacheattr', start, end, type });
    expect(pin(0x10n, 0x1fn, 2)).toBe(-Errno.EINVAL);
    expect(pin(0x1fn, 0x10n, XEN_DMOP_MEM_CACHEATTR_WB)).toBe(-Errno.EINVAL);
    expect(pin(0x10n, 0x1fn, XEN_DMOP_MEM_CACHEATTR_WB)).toBe(0);
    expect(pin(0x18n, 0x2fn, XEN_DMOP_MEM_CACHEATTR_WB)).toBe(-Errno.EBUSY);
    expect(pin(0x30n, 0x3fn, XEN_DMOP_DELETE_MEM_CACHEATTR)).toBe(-Errno.ENOENT);
    expect(pin(0x10n, 0x1fn, XEN_DMOP_DELETE_MEM_CACHEATTR)).toBe(0);
  });
  it('model: relocate_memory moves RAM frames and refuses non-RAM sources with EINVAL', () => {
    const { hv, domid, call } = setup({ memoryPages: 0x100 });
    expect(call({ op: 'relocate_memory', size: 2, srcGfn: 0x200n, dstGfn: 0x10n })).toBe(
      -Errno.EINVAL,
    );
    expect(call({ op: 'relocate_memory', size: 2, srcGfn: 0x10n, dstGfn: 0x300n })).toBe(0);
    expect(hv.p2mType(domid, 0x301n)).toBe('ram_rw');
    expect(hv.p2mType(domid, 0x11n)).toBe('invalid');
  });
  it('model: remote_shutdown records the reason; nr_vcpus reports max_vcpus', () => {
    const { hv, domid } = setup({ vcpus: 5 });
    const dm = new DeviceModel(hv);
    expect(dm.nrVcpus(domid)).toBe(5);
    dm.shutdown(domid, 4);
    expect(hv.domain(domid).shutdownReason).toBe(4);
  });
});

describe('DeviceModel over the model (dmop-abi/sim)', () => {
  it('model: runs an ioreq-server lifecycle end to end', () => {
    const hv = new SimHypervisor();
    const domid = hv.createHvmDomain({ vcpus: 4, memoryPages: 0x40000 });
    const dm = new DeviceModel(hv);

    const id = dm.createIoreqServer(domid, HVM_IOREQSRV_BUFIOREQ_ATOMIC);
    dm.mapIoRangeToIoreqServer(domid, id, true, 0xf0000000n, 0xf0ffffffn);
    dm.mapIoRangeToIoreqServer(domid, id, false, 0x3f8n, 0x3ffn);
    dm.mapPcidevToIoreqServer(domid, id, 0, 0, 3, 0);
    dm.setIoreqServerState(domid, id, true);
    const info = dm.getIoreqServerInfo(domid, id);
    const server = hv.domain(domid).ioreqServers.get(id);
    expect(server?.enabled).toBe(true);
    expect(info).toEqual({
      ioreqGfn: server?.ioreqGfn,
      bufioreqGfn: server?.bufioreqGfn,
      bufioreqPort: server?.bufioreqPort,
    });
    expect(server?.ranges).toEqual([
      [[0x3f8n, 0x3ffn]],
      [[0xf0000000n, 0xf0ffffffn]],
      [[0x18n, 0x18n]],
    ]);

    dm.unmapIoRangeFromIoreqServer(domid, id, false, 0x3f8n, 0x3ffn);
    dm.unmapPcidevFromIoreqServer(domid, id, 0, 0, 3, 0);
    dm.setIoreqServerState(domid, id, false);
    dm.destroyIoreqServer(domid, id);
    expect(hv.domain(domid).ioreqServers.size).toBe(0);

    // Gone: Xen's ENOENT comes back as a typed XenError.
    let caught: unknown;
    try {
      dm.getIoreqServerInfo(domid, id);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(XenError);
    expect(caught).toMatchObject({
      errno: Errno.ENOENT,
      code: 'ENOENT',
      syscall: 'xendevicemodel_get_ioreq_server_info',
    });
    expect(() => dm.unmapIoRangeFromIoreqServer(domid, id, true, 0xf0000000n, 0xf0ffffffn)).toThrow(
      'xendevicemodel_unmap_io_range_from_ioreq_server: ENOENT (errno 2)',
    );
  });

  it('model: restrict without a transport restrict() is EOPNOTSUPP, like the library without privcmd', () => {
    const hv = new SimHypervisor();
    expect(() => new DeviceModel(hv).restrict(1)).toThrow(XenError);
    expect(() => new DeviceModel(hv).restrict(1)).toThrow(/EOPNOTSUPP \(errno 95\)/);
  });

  it('model: uses the port range type constant the header defines', () => {
    const hv = new SimHypervisor();
    const domid = hv.createHvmDomain();
    const dm = new DeviceModel(hv);
    const id = dm.createIoreqServer(domid, 0);
    dm.mapIoRangeToIoreqServer(domid, id, false, 0x60n, 0x64n);
    expect(hv.domain(domid).ioreqServers.get(id)?.ranges[XEN_DMOP_IO_RANGE_PORT]).toEqual([
      [0x60n, 0x64n],
    ]);
  });
});
