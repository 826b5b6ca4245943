import {
  type DmOp,
  decodeDmOpResult,
  dirtyBitmapSize,
  encodeDmOpInto,
  type ModifiedMemoryExtent,
} from './codec.js';
import { Errno, XenError } from './errors.js';
import {
  HVMMEM_ioreq_server,
  SIZEOF,
  XEN_DMOP_IO_RANGE_MEMORY,
  XEN_DMOP_IO_RANGE_PCI,
  XEN_DMOP_IO_RANGE_PORT,
  XEN_DMOP_IOREQ_MEM_ACCESS_WRITE,
  XEN_DMOP_no_gfns,
  XEN_DMOP_PCI_SBDF,
} from './layout.js';

/**
 * Where DeviceModel sends a DM_OP. Synchronous, like the ioctl it stands for: `dmOp` returns 0
 * (or a non-negative value) on success or a negative errno, and writes Xen's outputs back into
 * `bufs` before returning. A transport must not keep `bufs` after it returns: DeviceModel reuses
 * them for the next call.
 */
export interface DmOpTransport {
  dmOp(domid: number, bufs: Uint8Array[]): number;
  /** IOCTL_PRIVCMD_RESTRICT; without it DeviceModel#restrict fails with EOPNOTSUPP, as the library does without privcmd. */
  restrict?(domid: number): number;
}

/** Outputs of getIoreqServerInfo; the gfns are absent when they were not requested. */
export interface IoreqServerInfo {
  ioreqGfn?: bigint;
  bufioreqGfn?: bigint;
  bufioreqPort: number;
}

function checkDomid(fn: string, domid: number): void {
  if (!Number.isInteger(domid) || domid < 0 || domid > 0xffff) {
    throw new RangeError(
      `${fn}: domid: expected an integer in [0, 65535] (domid_t), saw ${String(domid)}`,
    );
  }
}

/**
 * A typed client with one method per libxendevicemodel function (Xen 4.17), building the same
 * bytes the library builds (checked against captured golden vectors) and throwing XenError where
 * the library returns -1 with errno.
 */
export class DeviceModel {
  readonly #transport: DmOpTransport;
  readonly #head = new Uint8Array(SIZEOF.xen_dm_op);
  readonly #one: Uint8Array[] = [this.#head];

  constructor(transport: DmOpTransport) {
    this.#transport = transport;
  }

  #call(fn: string, domid: number, op: DmOp, extra?: Uint8Array): Uint8Array[] {
    checkDomid(fn, domid);
    const bufs = extra === undefined ? this.#one : [this.#head, extra];
    encodeDmOpInto(op, bufs);
    const rc = this.#transport.dmOp(domid, bufs);
    if (rc < 0) throw new XenError(fn, -rc);
    return bufs;
  }

  /** xendevicemodel_create_ioreq_server: returns the new server's id. */
  createIoreqServer(domid: number, handleBufioreq: number): number {
    const bufs = this.#call('xendevicemodel_create_ioreq_server', domid, {
      op: 'create_ioreq_server',
      handleBufioreq,
    });
    return decodeDmOpResult('create_ioreq_server', bufs).id;
  }

  /**
   * xendevicemodel_get_ioreq_server_info. With `gfns: false` the library sets XEN_DMOP_no_gfns so
   * Xen does not map the ioreq pages; only the port comes back.
   */
  getIoreqServerInfo(domid: number, id: number, options: { gfns?: boolean } = {}): IoreqServerInfo {
    const gfns = options.gfns ?? true;
    const bufs = this.#call('xendevicemodel_get_ioreq_server_info', domid, {
      op: 'get_ioreq_server_info',
      id,
      flags: gfns ? 0 : XEN_DMOP_no_gfns,
    });
    const r = decodeDmOpResult('get_ioreq_server_info', bufs);
    return gfns
      ? { ioreqGfn: r.ioreqGfn, bufioreqGfn: r.bufioreqGfn, bufioreqPort: r.bufioreqPort }
      : { bufioreqPort: r.bufioreqPort };
  }

  #ioRange(
    fn: string,
    domid: number,
    id: number,
    isMmio: boolean,
    start: bigint,
    end: bigint,
    map: boolean,
  ): void {
    const type = isMmio ? XEN_DMOP_IO_RANGE_MEMORY : XEN_DMOP_IO_RANGE_PORT;
    this.#call(fn, domid, {
      op: map ? 'map_io_range_to_ioreq_server' : 'unmap_io_range_from_ioreq_server',
      id,
      type,
      start,
      end,
    });
  }

  /** xendevicemodel_map_io_range_to_ioreq_server: an MMIO (`isMmio`) or port range, inclusive. */
  mapIoRangeToIoreqServer(
    domid: number,
    id: number,
    isMmio: boolean,
    start: bigint,
    end: bigint,
  ): void {
    this.#ioRange(
      'xendevicemodel_map_io_range_to_ioreq_server',
      domid,
      id,
      isMmio,
      start,
      end,
      true,
    );
  }

  /** xendevicemodel_unmap_io_range_from_ioreq_server. */
  unmapIoRangeFromIoreqServer(
    domid: number,
    id: number,
    isMmio: boolean,
    start: bigint,
    end: bigint,
  ): void {
    this.#ioRange(
      'xendevicemodel_unmap_io_range_from_ioreq_server',
      domid,
      id,
      isMmio,
      start,
      end,
      false,
    );
  }

  /**
   * xendevicemodel_map_mem_type_to_ioreq_server. The library itself refuses any type but
   * HVMMEM_ioreq_server and any flag but XEN_DMOP_IOREQ_MEM_ACCESS_WRITE with EINVAL.
   */
  mapMemTypeToIoreqServer(domid: number, id: number, type: number, flags: number): void {
    const fn = 'xendevicemodel_map_mem_type_to_ioreq_server';
    if (type !== HVMMEM_ioreq_server || (flags & ~XEN_DMOP_IOREQ_MEM_ACCESS_WRITE) !== 0) {
      throw new XenError(
        fn,
        Errno.EINVAL,
        `expected type ${HVMMEM_ioreq_server} and flags 0 or 2, saw ${type}, ${flags}`,
      );
    }
    this.#call(fn, domid, { op: 'map_mem_type_to_ioreq_server', id, type, flags });
  }

  #pcidev(
    fn: string,
    domid: number,
    id: number,
    segment: number,
    bus: number,
    device: number,
    func: number,
    map: boolean,
  ): void {
    // The library refuses these with EINVAL; the u16/u8 parameters are range-checked as C would not.
    if (device > 0x1f || func > 0x7) {
      throw new XenError(
        fn,
        Errno.EINVAL,
        `expected device <= 0x1f and function <= 7, saw ${device}, ${func}`,
      );
    }
    for (const [name, value, max] of [
      ['segment', segment, 0xffff],
      ['bus', bus, 0xff],
      ['device', device, 0xff],
      ['function', func, 0xff],
    ] as const) {
      if (!Number.isInteger(value) || value < 0 || value > max) {
        throw new RangeError(
          `${fn}: ${name}: expected an integer in [0, ${max}], saw ${String(value)}`,
        );
      }
    }
    const sbdf = BigInt(XEN_DMOP_PCI_SBDF(segment, bus, device, func));
    this.#call(fn, domid, {
      op: map ? 'map_io_range_to_ioreq_server' : 'unmap_io_range_from_ioreq_server',
      id,
      type: XEN_DMOP_IO_RANGE_PCI,
      start: sbdf,
      end: sbdf,
    });
  }

  /** xendevicemodel_map_pcidev_to_ioreq_server: one PCI function, as a XEN_DMOP_IO_RANGE_PCI singleton. */
  mapPcidevToIoreqServer(
    domid: number,
    id: number,
    segment: number,
    bus: number,
    device: number,
    func: number,
  ): void {
    this.#pcidev(
      'xendevicemodel_map_pcidev_to_ioreq_server',
      domid,
      id,
      segment,
      bus,
      device,
      func,
      true,
    );
  }

  /** xendevicemodel_unmap_pcidev_from_ioreq_server. */
  unmapPcidevFromIoreqServer(
    domid: number,
    id: number,
    segment: number,
    bus: number,
    device: number,
    func: number,
  ): void {
    this.#pcidev(
      'xendevicemodel_unmap_pcidev_from_ioreq_server',
      domid,
      id,
      segment,
      bus,
      device,
      func,
      false,
    );
  }

  /** xendevicemodel_destroy_ioreq_server. */
  destroyIoreqServer(domid: number, id: number): void {
    this.#call('xendevicemodel_destroy_ioreq_server', domid, { op: 'destroy_ioreq_server', id });
  }

  /** xendevicemodel_set_ioreq_server_state. */
  setIoreqServerState(domid: number, id: number, enabled: boolean): void {
    this.#call('xendevicemodel_set_ioreq_server_state', domid, {
      op: 'set_ioreq_server_state',
      id,
      enabled: enabled ? 1 : 0,
    });
  }

  /** xendevicemodel_set_pci_intx_level. */
  setPciIntxLevel(
    domid: number,
    segment: number,
    bus: number,
    device: number,
    intx: number,
    level: number,
  ): void {
    this.#call('xendevicemodel_set_pci_intx_level', domid, {
      op: 'set_pci_intx_level',
      domain: segment,
      bus,
      device,
      intx,
      level,
    });
  }

  /** xendevicemodel_set_isa_irq_level. */
  setIsaIrqLevel(domid: number, irq: number, level: number): void {
    this.#call('xendevicemodel_set_isa_irq_level', domid, {
      op: 'set_isa_irq_level',
      isaIrq: irq,
      level,
    });
  }

  /** xendevicemodel_set_irq_level (an Arm op: x86 Xen answers EOPNOTSUPP). */
  setIrqLevel(domid: number, irq: number, level: number): void {
    this.#call('xendevicemodel_set_irq_level', domid, { op: 'set_irq_level', irq, level });
  }

  /** xendevicemodel_set_pci_link_route. */
  setPciLinkRoute(domid: number, link: number, irq: number): void {
    this.#call('xendevicemodel_set_pci_link_route', domid, {
      op: 'set_pci_link_route',
      link,
      isaIrq: irq,
    });
  }

  /** xendevicemodel_inject_msi. */
  injectMsi(domid: number, msiAddr: bigint, msiData: number): void {
    this.#call('xendevicemodel_inject_msi', domid, {
      op: 'inject_msi',
      addr: msiAddr,
      data: msiData,
    });
  }

  /** xendevicemodel_track_dirty_vram: returns the (nr + 7) / 8-byte bitmap Xen filled. */
  trackDirtyVram(domid: number, firstPfn: bigint, nr: number): Uint8Array {
    const bitmap = new Uint8Array(Number.isInteger(nr) && nr >= 0 ? dirtyBitmapSize(nr) : 0);
    this.#call(
      'xendevicemodel_track_dirty_vram',
      domid,
      { op: 'track_dirty_vram', firstPfn, nr },
      bitmap,
    );
    return bitmap;
  }

  /** xendevicemodel_modified_memory: one extent. */
  modifiedMemory(domid: number, firstPfn: bigint, nr: number): void {
    this.#modified('xendevicemodel_modified_memory', domid, [{ firstPfn, nr }]);
  }

  /** xendevicemodel_modified_memory_bulk. */
  modifiedMemoryBulk(domid: number, extents: readonly ModifiedMemoryExtent[]): void {
    this.#modified('xendevicemodel_modified_memory_bulk', domid, extents);
  }

  #modified(fn: string, domid: number, extents: readonly ModifiedMemoryExtent[]): void {
    const size = Array.isArray(extents) ? extents.length * 16 : 0;
    this.#call(fn, domid, { op: 'modified_memory', extents }, new Uint8Array(size));
  }

  /** xendevicemodel_set_mem_type. */
  setMemType(domid: number, memType: number, firstPfn: bigint, nr: number): void {
    this.#call('xendevicemodel_set_mem_type', domid, { op: 'set_mem_type', memType, firstPfn, nr });
  }

  /** xendevicemodel_inject_event: `extra` is cr2 for #PF, pending_dbg for #DB. */
  injectEvent(
    domid: number,
    vcpu: number,
    vector: number,
    type: number,
    errorCode: number,
    insnLen: number,
    extra: bigint,
  ): void {
    this.#call('xendevicemodel_inject_event', domid, {
      op: 'inject_event',
      vcpuid: vcpu,
      vector,
      type,
      insnLen,
      errorCode,
      cr2: extra,
    });
  }

  /** xendevicemodel_shutdown: XEN_DMOP_remote_shutdown with a SHUTDOWN_* reason. */
  shutdown(domid: number, reason: number): void {
    this.#call('xendevicemodel_shutdown', domid, { op: 'remote_shutdown', reason });
  }

  /** xendevicemodel_relocate_memory. */
  relocateMemory(domid: number, size: number, srcGfn: bigint, dstGfn: bigint): void {
    this.#call('xendevicemodel_relocate_memory', domid, {
      op: 'relocate_memory',
      size,
      srcGfn,
      dstGfn,
    });
  }

  /** xendevicemodel_pin_memory_cacheattr. */
  pinMemoryCacheattr(domid: number, start: bigint, end: bigint, type: number): void {
    this.#call('xendevicemodel_pin_memory_cacheattr', domid, {
      op: 'pin_memory_cacheattr',
      start,
      end,
      type,
    });
  }

  /** xendevicemodel_nr_vcpus. */
  nrVcpus(domid: number): number {
    const bufs = this.#call('xendevicemodel_nr_vcpus', domid, { op: 'nr_vcpus' });
    return decodeDmOpResult('nr_vcpus', bufs).vcpus;
  }

  /** xendevicemodel_restrict: from now on the handle can only target `domid`. */
  restrict(domid: number): void {
    const fn = 'xendevicemodel_restrict';
    checkDomid(fn, domid);
    if (this.#transport.restrict === undefined) throw new XenError(fn, Errno.EOPNOTSUPP);
    const rc = this.#transport.restrict(domid);
    if (rc < 0) throw new XenError(fn, -rc);
  }
}
