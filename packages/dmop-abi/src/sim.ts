// A hypervisor-side model of DM_OP (Xen 4.17, x86 HVM) for tests: it decodes the same bytes the
// real hypercall receives and applies the checks Xen applies, in Xen's order, returning Xen's
// errno. Each rule cites the function of xen/arch/x86/hvm/dm.c, xen/common/ioreq.c,
// xen/common/dm.c, xen/common/rangeset.c, xen/arch/x86/hvm/irq.c or hvm/mtrr.c it comes from.
import { Errno } from './errors.js';
import {
  __HYPERVISOR_hvm_op,
  __HYPERVISOR_memory_op,
  __HYPERVISOR_xen_version,
  DM_OP_NAMES,
  DM_OPS,
  type DmOpName,
  DOMID_SELF,
  HVM_IOREQSRV_BUFIOREQ_ATOMIC,
  HVM_IOREQSRV_BUFIOREQ_OFF,
  HVM_NR_PARAMS,
  HVM_PARAM_BUFIOREQ_PFN,
  HVM_PARAM_IOREQ_PFN,
  HVM_PARAM_IOREQ_SERVER_PFN,
  HVM_PARAM_NR_IOREQ_SERVER_PAGES,
  HVMMEM_ioreq_server,
  HVMMEM_unused,
  HVMOP_get_param,
  MEMOP_CMD_MASK as MEMOP_CMD_MASK_,
  MODIFIED_MEMORY_EXTENT,
  NR_VIRQS,
  XEN_DM_OP_UNION_OFFSET,
  XEN_DMOP_DELETE_MEM_CACHEATTR,
  XEN_DMOP_IOREQ_MEM_ACCESS_WRITE,
  XEN_DMOP_no_gfns,
  XENMEM_populate_physmap,
  XENMEM_resource_grant_table,
  XENMEM_resource_ioreq_server,
  XENMEM_resource_ioreq_server_frame_bufioreq,
  XENMEM_resource_ioreq_server_frame_ioreq,
  XENVER_extraversion,
  XENVER_version,
} from './layout.js';

/** include/xen/sched.h MAX_NR_IOREQ_SERVERS. */
export const MAX_NR_IOREQ_SERVERS = 8;
/** include/xen/ioreq.h MAX_NR_IO_RANGES: the rangeset_limit of each server's rangesets. */
export const MAX_NR_IO_RANGES = 256;
/** track_dirty_vram() refuses more than 1 GiB of 4 KiB frames. */
export const MAX_DIRTY_VRAM_FRAMES = (1 << 30) >> 12;
/** hvm_set_mem_pinned_cacheattr(): at most 64 pinned ranges ("the limit is arbitrary"). */
export const MAX_PINNED_CACHEATTR_RANGES = 64;

/** p2m types the model tracks per gfn (the HVMMEM_* types map onto the first five). */
export type P2mType = 'ram_rw' | 'ram_ro' | 'mmio_dm' | 'invalid' | 'ioreq_server';
const HVMMEM_TO_P2M: readonly P2mType[] = [
  'ram_rw',
  'ram_ro',
  'mmio_dm',
  'invalid',
  'ioreq_server',
];

export interface HvmDomainOptions {
  /** The domid to give it (a toolstack's choice); default the next free one from 1. */
  domid?: number;
  /** d->max_vcpus; default 2. */
  vcpus?: number;
  /** Frames of RAM from gfn 0; the highest is domain_get_maximum_gpfn(). Default 0x1000. */
  memoryPages?: number;
  /** d->max_pages (XEN_DOMCTL_max_mem); populate_physmap stops there. Default unlimited. */
  maxPages?: number;
  /** XEN_DOMCTL_createdomain's max_grant_frames, the grant table resource's size; default 32. */
  maxGrantFrames?: number;
  /** Hardware-assisted paging (hap_enabled()); default true. */
  hap?: boolean;
  /**
   * Log-dirty mode (paging_mode_log_dirty()) for modified_memory. Default false: a new domain
   * is not in it until the toolstack enables it (live migration); modified_memory is then a no-op.
   */
  logDirty?: boolean;
  /**
   * HVM_PARAM_IOREQ_SERVER_PFN and HVM_PARAM_NR_IOREQ_SERVER_PAGES: the gfns ioreq servers'
   * pages are taken from. Default: 8 pages right after RAM, like a toolstack-built guest; 0
   * pages for a domain as bare xc_domain_create() leaves it (only the legacy params remain).
   */
  ioreqServerPfn?: bigint;
  nrIoreqServerPages?: number;
  /** HVM_PARAM_IOREQ_PFN and HVM_PARAM_BUFIOREQ_PFN, the legacy pages; default 0 (unset). */
  legacyIoreqPfns?: readonly [bigint, bigint];
}

export interface SimIoreqServer {
  readonly id: number;
  /** The domain that created it (s->emulator); only it may use the server. */
  readonly emulator: number;
  readonly bufioreqHandling: number;
  enabled: boolean;
  /**
   * How its pages exist: not yet, mapped at guest frames on demand by get_ioreq_server_info
   * (ioreq_server_map_pages), or allocated for XENMEM_acquire_resource
   * (ioreq_server_alloc_pages); each refuses the other with EPERM.
   */
  pages: 'none' | 'gfn' | 'resource';
  ioreqGfn: bigint;
  bufioreqGfn: bigint;
  /** Ports allocated in the guest for the emulator: one per vCPU (ioreq_server_add_vcpu). */
  readonly vcpuPorts: readonly number[];
  readonly bufioreqPort: number;
  /** Inclusive ranges per XEN_DMOP_IO_RANGE_* type (port, memory, pci), sorted, merged like a rangeset. */
  readonly ranges: readonly [bigint, bigint][][];
}

/** One event channel of a domain, as struct evtchn's state (ECS_*) and its binding. */
export type SimEvtchn =
  | { state: 'free' }
  | { state: 'reserved' }
  | { state: 'unbound'; remoteDomid: number; xen: boolean }
  | { state: 'interdomain'; remoteDomid: number; remotePort: number }
  | { state: 'virq'; virq: number };

export interface SimHypervisorOptions {
  /**
   * dom0's event-channel ports already in use (its own VIRQs, xenstored's, consoles): what a
   * recording of a real dom0 saw. Default none besides the reserved port 0.
   */
  dom0PortsInUse?: readonly number[];
}

/**
 * User memory of the calling process as a hypercall sees it: `read` returns null where
 * copy_from_guest() would fault, `write` returns false where copy_to_guest() would.
 */
export interface GuestMemory {
  read(addr: bigint, length: number): Uint8Array | null;
  write(addr: bigint, bytes: Uint8Array): boolean;
}

/** The highest XENVER_* command Xen 4.17 knows (XENVER_build_id). */
const XENVER_MAX_KNOWN = 10;
const MEMOP_CMD_MASK = BigInt(MEMOP_CMD_MASK_);
const XENMEM_resource_ioreq_server_frame_ioreq0 = XENMEM_resource_ioreq_server_frame_ioreq(0);

/** The version XENVER_version reports: major << 16 | minor. */
export const XEN_VERSION = (4 << 16) | 17;
/** Ports a fresh domain can use before its event-channel array grows: d->valid_evtchns. */
export const EVTCHNS_PER_BUCKET = 64;

export type SimInterrupt =
  | { kind: 'pci_intx'; device: number; intx: number; level: number }
  | { kind: 'isa_irq'; isaIrq: number; level: number }
  | { kind: 'msi'; addr: bigint; data: number };

export interface SimEvent {
  vector: number;
  type: number;
  insnLen: number;
  errorCode: number;
  cr2: bigint;
}

export interface SimDomain {
  readonly domid: number;
  readonly hvm: boolean;
  readonly vcpus: number;
  /** domain_get_maximum_gpfn(): p2m->max_mapped_pfn, which only grows. */
  maxGpfn: bigint;
  /** Frames of RAM from gfn 0 the domain was built with (the p2m default below it is ram_rw). */
  readonly ramPages: bigint;
  /** d->tot_pages and d->max_pages. */
  totPages: number;
  readonly maxPages: number;
  readonly maxGrantFrames: number;
  /** d->arch.hvm.params[], HVM_NR_PARAMS of them (0 for a PV domain). */
  readonly params: bigint[];
  /** Event channels by port (port 0 is reserved, as evtchn_init() leaves it). */
  readonly evtchns: SimEvtchn[];
  readonly hap: boolean;
  readonly logDirty: boolean;
  readonly ioreqServers: Map<number, SimIoreqServer>;
  /** d->arch.hvm.ioreq_gfn: base, free-page mask bits, legacy params and which are in use. */
  readonly ioreqGfnPool: {
    base: bigint;
    free: boolean[];
    legacy: readonly [bigint, bigint];
    legacyUsed: [boolean, boolean];
  };
  /** The ioreq server p2m_ioreq_server pages are forwarded to (map_mem_type_to_ioreq_server). */
  ioreqMemType: { id: number; flags: number } | null;
  /** Overrides of the default p2m type (ram_rw below memoryPages, invalid above). */
  readonly p2m: Map<bigint, P2mType>;
  readonly dirty: Set<bigint>;
  /** Frames reported dirty to track_dirty_vram since it last read them. */
  readonly vramDirty: Set<bigint>;
  /** The range track_dirty_vram tracks (d->arch.hvm.dirty_vram), or null. */
  vramRange: { first: bigint; nr: number } | null;
  readonly interrupts: SimInterrupt[];
  /** Pending injected event per vcpu (inject_event). */
  readonly pendingEvents: (SimEvent | null)[];
  readonly pciLinkRoute: number[];
  readonly pinnedCacheattr: { start: bigint; end: bigint; type: number }[];
  shutdownReason: number | null;
}

const E = Errno;

/** The p2m type of a gfn nobody changed: RAM the domain was built with, else nothing. */
function defaultType(d: SimDomain, gfn: bigint): P2mType {
  return gfn < d.ramPages ? 'ram_rw' : 'invalid';
}

/** alloc_unbound_xen_event_channel(): a port of `d` bound by Xen, waiting for `remote`. */
function allocXenPort(d: SimDomain, remote: number): number {
  const port = freePort(d);
  d.evtchns[port] = { state: 'unbound', remoteDomid: remote, xen: true };
  return port;
}

/** evtchn_allocate_port(): the array grows a bucket at a time up to the port asked for. */
function grow(d: SimDomain, port: number): void {
  while (d.evtchns.length <= port) {
    for (let i = 0; i < EVTCHNS_PER_BUCKET; i++) d.evtchns.push({ state: 'free' });
  }
}

/** get_free_port(): the lowest free port, growing the array when every valid port is taken. */
function freePort(d: SimDomain): number {
  let port = d.evtchns.findIndex((c) => c.state === 'free');
  if (port < 0) {
    port = d.evtchns.length;
    grow(d, port);
  }
  return port;
}

function p2mIsRam(t: P2mType): boolean {
  return t === 'ram_rw' || t === 'ram_ro';
}
function p2mIsHole(t: P2mType): boolean {
  return t === 'mmio_dm' || t === 'invalid';
}

/**
 * The simulated hypervisor. `dmOp(domid, bufs)` is a DmOpTransport: it answers as dom0 would be
 * answered. `dmOpAs(caller, domid, bufs)` answers a call made from another domain (a stub domain
 * emulator), which matters for ioreq servers owned by their creator.
 */
export class SimHypervisor {
  readonly domains = new Map<number, SimDomain>();
  #nextDomid = 1;

  constructor(options: SimHypervisorOptions = {}) {
    // dom0: a PV domain (is_hvm_domain() false), the caller of every request without dmOpAs.
    const d0 = this.#domain(0, false, {});
    for (const port of options.dom0PortsInUse ?? []) {
      grow(d0, port);
      if (port !== 0) d0.evtchns[port] = { state: 'unbound', remoteDomid: 0, xen: false };
    }
    this.domains.set(0, d0);
  }

  /** Creates an HVM guest and returns its domid. */
  createHvmDomain(options: HvmDomainOptions = {}): number {
    return this.#create(true, options);
  }

  /** Creates a PV guest: DM_OP refuses it (is_hvm_domain() is false). */
  createPvDomain(): number {
    return this.#create(false, {});
  }

  #create(hvm: boolean, o: HvmDomainOptions): number {
    const domid = o.domid ?? this.#nextDomid;
    if (this.domains.has(domid)) throw new RangeError(`SimHypervisor: domid ${domid} exists`);
    this.#nextDomid = Math.max(this.#nextDomid, domid + 1);
    this.domains.set(domid, this.#domain(domid, hvm, o));
    return domid;
  }

  #domain(domid: number, hvm: boolean, o: HvmDomainOptions): SimDomain {
    const vcpus = o.vcpus ?? 2;
    const pages = o.memoryPages ?? 0x1000;
    const ioreqPages = o.nrIoreqServerPages ?? 8;
    const ioreqBase = o.ioreqServerPfn ?? BigInt(pages);
    const params: bigint[] = hvm ? new Array<bigint>(HVM_NR_PARAMS).fill(0n) : [];
    if (hvm) {
      params[HVM_PARAM_IOREQ_SERVER_PFN] = ioreqPages > 0 ? ioreqBase : 0n;
      params[HVM_PARAM_NR_IOREQ_SERVER_PAGES] = BigInt(ioreqPages);
      params[HVM_PARAM_IOREQ_PFN] = o.legacyIoreqPfns?.[0] ?? 0n;
      params[HVM_PARAM_BUFIOREQ_PFN] = o.legacyIoreqPfns?.[1] ?? 0n;
    }
    // The toolstack populates the ioreq server pages as RAM right after the guest's own.
    const populated = hvm ? pages + (ioreqBase === BigInt(pages) ? ioreqPages : 0) : 0;
    const d: SimDomain = {
      domid,
      hvm,
      vcpus,
      maxGpfn: BigInt(Math.max(populated, pages) - 1),
      ramPages: BigInt(pages),
      totPages: populated,
      maxPages: o.maxPages ?? Number.MAX_SAFE_INTEGER,
      maxGrantFrames: o.maxGrantFrames ?? 32,
      params,
      evtchns: Array.from({ length: EVTCHNS_PER_BUCKET }, (_, i) =>
        i === 0 ? { state: 'reserved' as const } : { state: 'free' as const },
      ),
      hap: o.hap ?? true,
      logDirty: o.logDirty ?? false,
      ioreqServers: new Map(),
      ioreqGfnPool: {
        base: ioreqBase,
        free: Array.from({ length: ioreqPages }, () => true),
        legacy: o.legacyIoreqPfns ?? [0n, 0n],
        legacyUsed: [false, false],
      },
      ioreqMemType: null,
      p2m: new Map(),
      dirty: new Set(),
      vramDirty: new Set(),
      vramRange: null,
      interrupts: [],
      pendingEvents: Array.from({ length: vcpus }, () => null),
      pciLinkRoute: [0, 0, 0, 0],
      pinnedCacheattr: [],
      shutdownReason: null,
    };
    return d;
  }

  /**
   * arch_ioreq_server_map_pages(): the ioreq page, then the buffered one, each from
   * hvm_alloc_ioreq_gfn() (the IOREQ_SERVER_PFN pages, then the two legacy params); none left
   * is ENOMEM; prepare_ring_for_helper() on a gfn that is not RAM is EINVAL.
   */
  #mapIoreqPages(d: SimDomain, s: SimIoreqServer): number {
    const withBuf = s.bufioreqHandling !== HVM_IOREQSRV_BUFIOREQ_OFF;
    if (s.pages === 'gfn') return 0;
    // hvm_map_ioreq_gfn(): pages allocated for acquire_resource cannot be mapped at gfns.
    if (s.pages === 'resource') return -E.EPERM;
    const take = (): bigint | null => {
      const pool = d.ioreqGfnPool;
      const i = pool.free.indexOf(true);
      if (i >= 0) {
        pool.free[i] = false;
        return pool.base + BigInt(i);
      }
      for (const j of [0, 1] as const) {
        if (!pool.legacyUsed[j]) {
          pool.legacyUsed[j] = true;
          return pool.legacy[j];
        }
      }
      return null;
    };
    // The toolstack populates the IOREQ_SERVER_PFN pages (libxc's special pages) itself.
    const pool = d.ioreqGfnPool;
    const isRam = (gfn: bigint) =>
      (gfn >= pool.base && gfn < pool.base + BigInt(pool.free.length)) ||
      p2mIsRam(d.p2m.get(gfn) ?? defaultType(d, gfn));
    const ioreq = take();
    if (ioreq === null) return -E.ENOMEM;
    if (!isRam(ioreq)) {
      this.#unmapIoreqGfn(d, ioreq);
      return -E.EINVAL;
    }
    if (withBuf) {
      const buf = take();
      if (buf === null || !isRam(buf)) {
        this.#unmapIoreqGfn(d, ioreq);
        if (buf !== null) this.#unmapIoreqGfn(d, buf);
        return buf === null ? -E.ENOMEM : -E.EINVAL;
      }
      s.bufioreqGfn = buf;
    }
    s.ioreqGfn = ioreq;
    s.pages = 'gfn';
    return 0;
  }

  /** hvm_free_ioreq_gfn(): a legacy param's page back to the legacy set, else to the mask. */
  #unmapIoreqGfn(d: SimDomain, gfn: bigint): void {
    const pool = d.ioreqGfnPool;
    for (const j of [0, 1] as const) {
      if (pool.legacyUsed[j] && pool.legacy[j] === gfn) {
        pool.legacyUsed[j] = false;
        return;
      }
    }
    const i = gfn - pool.base;
    if (i >= 0n && i < BigInt(pool.free.length)) pool.free[Number(i)] = true;
  }

  /** The state of a domain, for assertions; throws if there is none. */
  domain(domid: number): SimDomain {
    const d = this.domains.get(domid);
    if (d === undefined) throw new RangeError(`SimHypervisor: no domain ${domid}`);
    return d;
  }

  /** The p2m type of `gfn` in `domid`. */
  p2mType(domid: number, gfn: bigint): P2mType {
    const d = this.domain(domid);
    return d.p2m.get(gfn) ?? defaultType(d, gfn);
  }

  /** Simulates a guest write to `gfn`, seen by track_dirty_vram. */
  guestWrite(domid: number, gfn: bigint): void {
    this.domain(domid).vramDirty.add(gfn);
  }

  // ---- event channels (xen/common/event_channel.c) -------------------------------------------

  /** EVTCHNOP_alloc_unbound for the caller itself: evtchn_alloc_unbound(). */
  evtchnAllocUnbound(caller: number, remoteDomid: number): number {
    const d = this.domain(caller);
    // evtchn_alloc_unbound(): DOMID_SELF means the caller; the remote domain need not exist.
    const remote = remoteDomid === DOMID_SELF ? caller : remoteDomid;
    const port = freePort(d);
    d.evtchns[port] = { state: 'unbound', remoteDomid: remote, xen: false };
    return port;
  }

  /** EVTCHNOP_bind_interdomain: evtchn_bind_interdomain(); the local port, or -errno. */
  evtchnBindInterdomain(caller: number, remoteDomid: number, remotePort: number): number {
    const rdom = remoteDomid === DOMID_SELF ? caller : remoteDomid;
    const rd = this.domains.get(rdom);
    // rcu_lock_domain_by_id() of the remote domain: ESRCH.
    if (rd === undefined) return -E.ESRCH;
    const ld = this.domain(caller);
    const lport = freePort(ld);
    const r = rd.evtchns[remotePort];
    // !port_is_valid(rd, rport), or a remote port that is not unbound for us: EINVAL.
    if (r === undefined || r.state !== 'unbound' || r.remoteDomid !== caller) return -E.EINVAL;
    ld.evtchns[lport] = { state: 'interdomain', remoteDomid: rdom, remotePort };
    rd.evtchns[remotePort] = { state: 'interdomain', remoteDomid: caller, remotePort: lport };
    return lport;
  }

  /** EVTCHNOP_bind_virq on vCPU 0: evtchn_bind_virq(). */
  evtchnBindVirq(caller: number, virq: number): number {
    // evtchn_bind_virq(): virq >= NR_VIRQS is EINVAL; a VIRQ bound already is EEXIST.
    if (virq >= NR_VIRQS) return -E.EINVAL;
    const d = this.domain(caller);
    if (d.evtchns.some((c) => c.state === 'virq' && c.virq === virq)) return -E.EEXIST;
    const port = freePort(d);
    d.evtchns[port] = { state: 'virq', virq };
    return port;
  }

  /** EVTCHNOP_close: evtchn_close(). */
  evtchnClose(caller: number, port: number): number {
    return this.#close(this.domain(caller), port);
  }

  #close(d: SimDomain, port: number): number {
    const c = d.evtchns[port];
    // evtchn_close(): an invalid, free or reserved port is EINVAL.
    if (c === undefined || c.state === 'free' || c.state === 'reserved') return -E.EINVAL;
    if (c.state === 'interdomain') {
      // The remote end goes back to unbound, waiting for us again.
      const rd = this.domains.get(c.remoteDomid);
      if (rd !== undefined) {
        rd.evtchns[c.remotePort] = { state: 'unbound', remoteDomid: d.domid, xen: false };
      }
    }
    d.evtchns[port] = { state: 'free' };
    return 0;
  }

  // ---- other hypercalls Xen's QEMU makes through IOCTL_PRIVCMD_HYPERCALL ----------------------

  /**
   * One hypercall from `caller`, as do_<op>() answers it: its return value or -errno. Pointer
   * arguments are addresses in `memory`. Only what a device model asks is modelled (xen_version,
   * hvm_op get_param, memory_op populate_physmap); anything else throws a RangeError rather than
   * guess.
   */
  hypercall(caller: number, op: number, args: readonly bigint[], memory: GuestMemory): number {
    const arg = (i: number) => args[i] ?? 0n;
    switch (op) {
      case __HYPERVISOR_xen_version: {
        const cmd = Number(arg(0));
        if (cmd === XENVER_version) return XEN_VERSION;
        if (cmd === XENVER_extraversion) {
          // do_xen_version(): copy_to_guest() of xen_extraversion_t (16 bytes): EFAULT.
          const out = new Uint8Array(16);
          return memory.write(arg(1), out) ? 0 : -E.EFAULT;
        }
        // do_xen_version(): an unknown command is ENOSYS.
        if (cmd > XENVER_MAX_KNOWN) return -E.ENOSYS;
        break;
      }
      case __HYPERVISOR_hvm_op:
        if (arg(0) === BigInt(HVMOP_get_param)) return this.#hvmGetParam(caller, arg(1), memory);
        break;
      case __HYPERVISOR_memory_op:
        if ((arg(0) & MEMOP_CMD_MASK) === BigInt(XENMEM_populate_physmap)) {
          return this.#populatePhysmap(Number(arg(0) >> 6n), arg(1), memory);
        }
        break;
    }
    throw new RangeError(
      `SimHypervisor.hypercall: op ${op} with arguments ${args.join(', ')} is not modelled`,
    );
  }

  /** hvmop_get_param(): struct xen_hvm_param {domid_t domid; uint32_t index; uint64_t value}. */
  #hvmGetParam(caller: number, at: bigint, memory: GuestMemory): number {
    const a = memory.read(at, 16);
    if (a === null) return -E.EFAULT;
    const v = new DataView(a.buffer, a.byteOffset, 16);
    const index = v.getUint32(4, true);
    // hvmop_get_param(): an index past HVM_NR_PARAMS is EINVAL, before the domain lookup.
    if (index >= HVM_NR_PARAMS) return -E.EINVAL;
    const domid = v.getUint16(0, true);
    // rcu_lock_domain_by_any_id(): DOMID_SELF is the caller; a missing domain is ESRCH.
    const d = this.domains.get(domid === DOMID_SELF ? caller : domid);
    if (d === undefined) return -E.ESRCH;
    // hvmop_get_param(): only HVM domains have params.
    if (!d.hvm) return -E.EINVAL;
    v.setBigUint64(8, d.params[index] ?? 0n, true);
    return memory.write(at, a) ? 0 : -E.EFAULT;
  }

  /**
   * XENMEM_populate_physmap (do_memory_op() + populate_physmap()), order-0 extents: struct
   * xen_memory_reservation {extent_start; nr_extents; extent_order; mem_flags; domid}. Returns the
   * number of extents done; a missing domain, a fault on the frame list or the domain's max_pages
   * stop it without an error, as Xen does.
   */
  #populatePhysmap(startExtent: number, at: bigint, memory: GuestMemory): number {
    const r = memory.read(at, 32);
    if (r === null) return -E.EFAULT;
    const v = new DataView(r.buffer, r.byteOffset, 32);
    const list = v.getBigUint64(0, true);
    const nrExtents = Number(v.getBigUint64(8, true));
    if (startExtent >= nrExtents) return startExtent;
    if (v.getUint32(16, true) !== 0 || v.getUint32(20, true) !== 0) {
      throw new RangeError(
        'SimHypervisor: populate_physmap with an order or flags is not modelled',
      );
    }
    const d = this.domains.get(v.getUint16(24, true));
    if (d === undefined || !d.hvm) return startExtent;
    let done = startExtent;
    for (; done < nrExtents; done++) {
      const entry = memory.read(list + BigInt(done * 8), 8);
      if (entry === null) break;
      // assign_pages(): past d->max_pages the allocation fails and the loop stops.
      if (d.totPages + 1 > d.maxPages) break;
      const gfn = new DataView(entry.buffer, entry.byteOffset, 8).getBigUint64(0, true);
      d.totPages++;
      d.p2m.set(gfn, 'ram_rw');
      if (gfn > d.maxGpfn) d.maxGpfn = gfn;
    }
    return done;
  }

  // ---- foreign memory ------------------------------------------------------------------------

  /**
   * Mapping guest frames into the caller (what privcmd's MMAPBATCH does through mmu_update on a
   * PV dom0): 0 or -errno per frame. A missing domain fails every frame with ESRCH
   * (get_pg_owner()); a frame that is not RAM is EINVAL (get_page_from_gfn() finds no page).
   */
  mapForeignFrames(caller: number, domid: number, gfns: readonly bigint[]): number[] {
    const d = this.domains.get(domid);
    return gfns.map((gfn) => {
      if (d === undefined) return -E.ESRCH;
      if (domid === caller) return 0;
      return p2mIsRam(d.p2m.get(gfn) ?? defaultType(d, gfn)) || d.p2m.get(gfn) === 'ioreq_server'
        ? 0
        : -E.EINVAL;
    });
  }

  /**
   * XENMEM_acquire_resource asked for its size (nr_frames 0, no frame list): the u32 Xen writes
   * back, or -errno. resource_max_frames() returns an int, so an unknown type comes back as
   * (uint32_t)-EOPNOTSUPP: a "size" of 4294967201, which the kernel passes on.
   */
  resourceMaxFrames(caller: number, domid: number, type: number, id: number): number {
    const d = this.#remote(caller, domid);
    if (typeof d === 'number') return d;
    switch (type) {
      case XENMEM_resource_ioreq_server:
        // ioreq_server_max_frames(): the buffered ring and one synchronous page.
        return 2;
      case XENMEM_resource_grant_table:
        // gnttab_resource_max_frames(): the shared frames (id 0); status frames are v2 only.
        return id === 0 ? d.maxGrantFrames : 0;
      default:
        return -E.EOPNOTSUPP >>> 0;
    }
  }

  /** XENMEM_acquire_resource of frames [frame, frame + nrFrames): 0 or -errno (_acquire_resource()). */
  acquireResource(
    caller: number,
    domid: number,
    type: number,
    id: number,
    frame: number,
    nrFrames: number,
  ): number {
    const d = this.#remote(caller, domid);
    if (typeof d === 'number') return d;
    if (type !== XENMEM_resource_ioreq_server) {
      throw new RangeError(`SimHypervisor: acquire_resource of type ${type} is not modelled`);
    }
    for (let i = frame; i < frame + nrFrames; i++) {
      // ioreq_server_get_frame(): a missing server is ENOENT, another emulator's EPERM.
      const s = this.#server(caller, d, id);
      if (typeof s === 'number') return s;
      // ioreq_server_alloc_pages(): pages already mapped at guest frames cannot be allocated.
      if (s.pages === 'gfn') return -E.EPERM;
      s.pages = 'resource';
      if (i === XENMEM_resource_ioreq_server_frame_bufioreq) {
        if (s.bufioreqHandling === HVM_IOREQSRV_BUFIOREQ_OFF) return -E.ENOENT;
      } else if (i !== XENMEM_resource_ioreq_server_frame_ioreq0) {
        return -E.EINVAL;
      }
    }
    return 0;
  }

  /** rcu_lock_remote_domain_by_id(): ESRCH for a missing domain, EPERM for the caller itself. */
  #remote(caller: number, domid: number): SimDomain | number {
    const d = this.domains.get(domid);
    if (d === undefined) return -E.ESRCH;
    if (domid === caller) return -E.EPERM;
    return d;
  }

  dmOp(domid: number, bufs: Uint8Array[]): number {
    return this.dmOpAs(0, domid, bufs);
  }

  dmOpAs(caller: number, domid: number, bufs: Uint8Array[]): number {
    // do_dm_op(): at most two buffers (struct dmop_args has buf[2]).
    if (bufs.length > 2) return -E.E2BIG;
    // dm_op(): rcu_lock_remote_domain_by_id() fails with ESRCH for a domain that does not exist.
    const d = this.domains.get(domid);
    if (d === undefined) return -E.ESRCH;
    // rcu_lock_remote_domain_by_id(): a domain may not target itself (EPERM).
    if (domid === caller) return -E.EPERM;
    // dm_op(): only HVM guests have device models.
    if (!d.hvm) return -E.EINVAL;
    const head = bufs[0];
    // dm_op(): the header (op, pad) must fit in buf[0], else EFAULT.
    if (head === undefined || head.byteLength < XEN_DM_OP_UNION_OFFSET) return -E.EFAULT;
    const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const number = v.getUint32(0, true);
    // dm_op(): op >= ARRAY_SIZE(op_size) is EOPNOTSUPP.
    if (number > 20) return -E.EOPNOTSUPP;
    const name = DM_OP_NAMES[number];
    // dm_op(): op_size[] has no entry for 0 or set_irq_level (an Arm op): after the pad check they
    // fall through to ioreq_server_dm_op(), whose default is EOPNOTSUPP.
    if (name === undefined || name === 'set_irq_level') {
      return v.getUint32(4, true) !== 0 ? -E.EINVAL : -E.EOPNOTSUPP;
    }
    const layout = DM_OPS[name];
    // dm_op(): the op's struct must fit in buf[0], else EFAULT.
    if (head.byteLength < XEN_DM_OP_UNION_OFFSET + layout.size) return -E.EFAULT;
    // dm_op(): a non-zero xen_dm_op.pad is EINVAL.
    if (v.getUint32(4, true) !== 0) return -E.EINVAL;
    // Each op handler (ioreq_server_dm_op() and dm_op()) refuses non-zero padding with EINVAL.
    for (const [offset, width] of layout.pads) {
      for (let i = 0; i < width; i++) {
        if (head[XEN_DM_OP_UNION_OFFSET + offset + i] !== 0) return -E.EINVAL;
      }
    }
    return this.#dispatch(caller, d, name, v, bufs);
  }

  #dispatch(caller: number, d: SimDomain, name: DmOpName, v: DataView, bufs: Uint8Array[]): number {
    const U = XEN_DM_OP_UNION_OFFSET;
    const u8 = (o: number) => v.getUint8(U + o);
    const u16 = (o: number) => v.getUint16(U + o, true);
    const u32 = (o: number) => v.getUint32(U + o, true);
    const u64 = (o: number) => v.getBigUint64(U + o, true);
    switch (name) {
      case 'create_ioreq_server': {
        // ioreq_server_create(): handle_bufioreq above HVM_IOREQSRV_BUFIOREQ_ATOMIC is EINVAL.
        const handling = u8(0);
        if (handling > HVM_IOREQSRV_BUFIOREQ_ATOMIC) return -E.EINVAL;
        let id = 0;
        while (id < MAX_NR_IOREQ_SERVERS && d.ioreqServers.has(id)) id++;
        // ioreq_server_create(): every slot taken is ENOSPC.
        if (id >= MAX_NR_IOREQ_SERVERS) return -E.ENOSPC;
        const withBuf = handling !== HVM_IOREQSRV_BUFIOREQ_OFF;
        // ioreq_server_add_vcpu(), vCPU by vCPU: an unbound port for the emulator, and right after
        // vCPU 0's the buffered ring's (alloc_unbound_xen_event_channel(), lowest free port).
        const vcpuPorts: number[] = [];
        let bufioreqPort = 0;
        for (let vcpu = 0; vcpu < d.vcpus; vcpu++) {
          vcpuPorts.push(allocXenPort(d, caller));
          if (vcpu === 0 && withBuf) bufioreqPort = allocXenPort(d, caller);
        }
        d.ioreqServers.set(id, {
          id,
          emulator: caller,
          bufioreqHandling: handling,
          enabled: false,
          pages: 'none',
          ioreqGfn: 0n,
          bufioreqGfn: 0n,
          vcpuPorts,
          bufioreqPort,
          ranges: [[], [], []],
        });
        v.setUint16(U + 4, id, true);
        return 0;
      }
      case 'get_ioreq_server_info': {
        // ioreq_server_dm_op(): flags other than XEN_DMOP_no_gfns are EINVAL.
        const flags = u16(2);
        if ((flags & ~XEN_DMOP_no_gfns) !== 0) return -E.EINVAL;
        const s = this.#server(caller, d, u16(0));
        if (typeof s === 'number') return s;
        if ((flags & XEN_DMOP_no_gfns) === 0) {
          // ioreq_server_get_info(): asking for the gfns maps the pages on first use.
          const rc = this.#mapIoreqPages(d, s);
          if (rc !== 0) return rc;
          v.setBigUint64(U + 8, s.ioreqGfn, true);
        }
        // ioreq_server_get_info(): the buffered page and port only exist with HANDLE_BUFIOREQ(s).
        if (s.bufioreqHandling !== HVM_IOREQSRV_BUFIOREQ_OFF) {
          if ((flags & XEN_DMOP_no_gfns) === 0) v.setBigUint64(U + 16, s.bufioreqGfn, true);
          v.setUint32(U + 4, s.bufioreqPort, true);
        }
        return 0;
      }
      case 'map_io_range_to_ioreq_server':
      case 'unmap_io_range_from_ioreq_server': {
        const start = u64(8);
        const end = u64(16);
        // ioreq_server_map_io_range()/unmap: start > end is EINVAL before the server lookup.
        if (start > end) return -E.EINVAL;
        const s = this.#server(caller, d, u16(0));
        if (typeof s === 'number') return s;
        const set = s.ranges[u32(4)];
        // ...an unknown XEN_DMOP_IO_RANGE_* type is EINVAL.
        if (set === undefined) return -E.EINVAL;
        return name === 'map_io_range_to_ioreq_server'
          ? rangeAdd(set, start, end)
          : rangeRemove(set, start, end);
      }
      case 'set_ioreq_server_state': {
        const s = this.#server(caller, d, u16(0));
        if (typeof s === 'number') return s;
        s.enabled = u8(2) !== 0;
        return 0;
      }
      case 'destroy_ioreq_server': {
        const s = this.#server(caller, d, u16(0));
        if (typeof s === 'number') return s;
        if (s.pages === 'gfn') {
          this.#unmapIoreqGfn(d, s.ioreqGfn);
          if (s.bufioreqHandling !== HVM_IOREQSRV_BUFIOREQ_OFF)
            this.#unmapIoreqGfn(d, s.bufioreqGfn);
        }
        // ioreq_server_remove_vcpu()/free_xen_event_channel(): the ports close.
        for (const port of [...s.vcpuPorts, ...(s.bufioreqPort ? [s.bufioreqPort] : [])]) {
          this.#close(d, port);
        }
        d.ioreqServers.delete(s.id);
        if (d.ioreqMemType?.id === s.id) d.ioreqMemType = null;
        return 0;
      }
      case 'track_dirty_vram': {
        const nr = u32(0);
        const first = u64(8);
        // dm_op(): track_dirty_vram needs the bitmap buffer.
        if (bufs.length < 2) return -E.EINVAL;
        // track_dirty_vram(): more than 1 GiB of frames, or a bitmap too small, is EINVAL.
        if (nr > MAX_DIRTY_VRAM_FRAMES) return -E.EINVAL;
        const bitmap = bufs[1] as Uint8Array;
        if (Math.ceil(nr / 8) > bitmap.byteLength) return -E.EINVAL;
        // hap_track_dirty_vram(): nr 0 stops tracking and writes nothing; a range other than the
        // one tracked starts tracking it and reports every frame dirty once (all ones).
        if (nr === 0) {
          d.vramRange = null;
          return 0;
        }
        if (d.vramRange?.first !== first || d.vramRange.nr !== nr) {
          d.vramRange = { first, nr };
          for (let i = 0; i < nr; i++) d.vramDirty.delete(first + BigInt(i));
          bitmap.fill(0, 0, Math.ceil(nr / 8));
          for (let i = 0; i < nr; i++) bitmap[i >> 3] = (bitmap[i >> 3] as number) | (1 << (i & 7));
          return 0;
        }
        bitmap.fill(0, 0, Math.ceil(nr / 8));
        for (let i = 0; i < nr; i++) {
          const gfn = first + BigInt(i);
          if (d.vramDirty.delete(gfn)) bitmap[i >> 3] = (bitmap[i >> 3] as number) | (1 << (i & 7));
        }
        return 0;
      }
      case 'set_pci_intx_level': {
        const [domain, bus, device, intx, level] = [u16(0), u8(2), u8(3), u8(4), u8(5)];
        // set_pci_intx_level(): only segment 0 bus 0, device <= 0x1f, INTA..INTD, level 0 or 1.
        if (domain !== 0 || bus !== 0 || device > 0x1f || intx > 3 || level > 1) return -E.EINVAL;
        d.interrupts.push({ kind: 'pci_intx', device, intx, level });
        return 0;
      }
      case 'set_isa_irq_level': {
        // set_isa_irq_level(): IRQ 0..15, level 0 or 1.
        const [isaIrq, level] = [u8(0), u8(1)];
        if (isaIrq > 15 || level > 1) return -E.EINVAL;
        d.interrupts.push({ kind: 'isa_irq', isaIrq, level });
        return 0;
      }
      case 'set_pci_link_route': {
        // hvm_set_pci_link_route(): link 0..3, ISA IRQ 0..15.
        const [link, isaIrq] = [u8(0), u8(1)];
        if (link > 3 || isaIrq > 15) return -E.EINVAL;
        d.pciLinkRoute[link] = isaIrq;
        return 0;
      }
      case 'modified_memory':
        // dm_op(): the extents travel in buf[1]; without it the op is EINVAL even when
        // modified_memory() would have nothing to do (recorded: tools/xen-matrix, n=386).
        if (bufs.length < 2) return -E.EINVAL;
        return this.#modifiedMemory(d, v, bufs);
      case 'set_mem_type':
        return this.#setMemType(d, u16(4), u64(8), u32(0));
      case 'inject_event': {
        const vcpuid = u32(0);
        // inject_event(): an absent vcpu is EINVAL; one with an event still pending is EBUSY.
        if (vcpuid >= d.vcpus) return -E.EINVAL;
        if (d.pendingEvents[vcpuid] !== null) return -E.EBUSY;
        d.pendingEvents[vcpuid] = {
          vector: u8(4),
          type: u8(5),
          insnLen: u8(6),
          errorCode: u32(8),
          cr2: u64(16),
        };
        return 0;
      }
      case 'inject_msi':
        // hvm_inject_msi() logs and drops what it cannot deliver: the hypercall succeeds.
        d.interrupts.push({ kind: 'msi', addr: u64(8), data: u32(0) });
        return 0;
      case 'map_mem_type_to_ioreq_server': {
        // dm_op(): without HAP there is no p2m_ioreq_server.
        if (!d.hap) return -E.EOPNOTSUPP;
        const [id, type, flags] = [u16(0), u16(2), u32(4)];
        // ioreq_server_map_mem_type(): only HVMMEM_ioreq_server, only write forwarding.
        if (type !== HVMMEM_ioreq_server) return -E.EINVAL;
        if ((flags & ~XEN_DMOP_IOREQ_MEM_ACCESS_WRITE) !== 0) return -E.EINVAL;
        const s = this.#server(caller, d, id);
        if (typeof s === 'number') return s;
        // p2m_set_ioreq_server(): claiming the type while any server holds it (itself included)
        // is EBUSY; releasing it from a server that does not hold it is EINVAL.
        if (flags !== 0 && d.ioreqMemType !== null) return -E.EBUSY;
        if (flags === 0 && d.ioreqMemType?.id !== id) return -E.EINVAL;
        if (flags === 0) {
          if (d.ioreqMemType?.id === id) d.ioreqMemType = null;
          // dm_op(): unmapping resets the remaining p2m_ioreq_server pages to ram_rw.
          for (const [gfn, t] of d.p2m) if (t === 'ioreq_server') d.p2m.delete(gfn);
        } else {
          d.ioreqMemType = { id, flags };
        }
        return 0;
      }
      case 'remote_shutdown':
        // domain_shutdown(): any reason is accepted.
        d.shutdownReason = u32(0);
        return 0;
      case 'relocate_memory':
        return this.#relocate(d, u32(0), u64(8), u64(16));
      case 'pin_memory_cacheattr':
        return pinCacheattr(d, u64(0), u64(8), u32(16));
      case 'nr_vcpus':
        v.setUint32(U, d.vcpus, true);
        return 0;
      default:
        return -E.EOPNOTSUPP;
    }
  }

  /** get_ioreq_server() then the s->emulator == current->domain check of every ioreq op. */
  #server(caller: number, d: SimDomain, id: number): SimIoreqServer | number {
    const s = d.ioreqServers.get(id);
    if (s === undefined) return -E.ENOENT;
    if (s.emulator !== caller) return -E.EPERM;
    return s;
  }

  #modifiedMemory(d: SimDomain, v: DataView, bufs: Uint8Array[]): number {
    // modified_memory(): nothing to record outside log-dirty mode.
    if (!d.logDirty) return 0;
    const nrExtents = v.getUint32(XEN_DM_OP_UNION_OFFSET, true);
    const body = bufs[1];
    // modified_memory(): an extents buffer shorter than nr_extents entries is EINVAL.
    if (
      body === undefined ||
      Math.floor(body.byteLength / MODIFIED_MEMORY_EXTENT.size) < nrExtents
    ) {
      return -E.EINVAL;
    }
    const ev = new DataView(body.buffer, body.byteOffset, body.byteLength);
    // Xen walks the extents from the last one down, checking each as it goes.
    for (let i = nrExtents - 1; i >= 0; i--) {
      const at = i * MODIFIED_MEMORY_EXTENT.size;
      const nr = ev.getUint32(at, true);
      // modified_memory(): extent.pad must be zero.
      if (ev.getUint32(at + 4, true) !== 0) return -E.EINVAL;
      const first = ev.getBigUint64(at + 8, true);
      const end = (first + BigInt(nr)) & 0xffffffffffffffffn;
      // modified_memory(): an empty or wrapping extent, or one past the highest gfn, is EINVAL.
      if (end <= first || end > d.maxGpfn) return -E.EINVAL;
      for (let g = first; g < end; g++) d.dirty.add(g);
      v.setUint32(XEN_DM_OP_UNION_OFFSET, i, true);
    }
    return 0;
  }

  #setMemType(d: SimDomain, memType: number, first: bigint, nr: number): number {
    const last = (first + BigInt(nr) - 1n) & 0xffffffffffffffffn;
    // set_mem_type(): a wrapping range or one past domain_get_maximum_gpfn() is EINVAL.
    if (first > last || last > d.maxGpfn) return -E.EINVAL;
    // set_mem_type(): unknown types and HVMMEM_unused are EINVAL.
    if (memType >= HVMMEM_TO_P2M.length || memType === HVMMEM_unused) return -E.EINVAL;
    const target = HVMMEM_TO_P2M[memType] as P2mType;
    if (memType === HVMMEM_ioreq_server) {
      // set_mem_type(): p2m_ioreq_server needs HAP, and a server that claimed the type.
      if (!d.hap) return -E.EOPNOTSUPP;
      if (d.ioreqMemType === null) return -E.EINVAL;
    }
    for (let g = first; g <= last; g++) {
      const old = d.p2m.get(g) ?? defaultType(d, g);
      // allow_p2m_type_change(): the transitions Xen permits; a refusal stops the loop with EINVAL.
      const allowed =
        target === 'ioreq_server'
          ? old === 'ram_rw'
          : old === 'ioreq_server'
            ? target === 'ram_rw'
            : p2mIsRam(old) || (p2mIsHole(old) && target === 'mmio_dm');
      if (!allowed) return -E.EINVAL;
      if (target === 'ram_rw' && g < d.ramPages) d.p2m.delete(g);
      else d.p2m.set(g, target);
    }
    return 0;
  }

  #relocate(d: SimDomain, size: number, src: bigint, dst: bigint): number {
    // xenmem_add_to_physmap() (XENMAPSPACE_gmfn_range): every source frame must be RAM.
    for (let i = 0n; i < BigInt(size); i++) {
      const t = d.p2m.get(src + i) ?? defaultType(d, src + i);
      if (!p2mIsRam(t)) return -E.EINVAL;
    }
    for (let i = 0n; i < BigInt(size); i++) {
      const t = d.p2m.get(src + i) ?? 'ram_rw';
      d.p2m.set(src + i, 'invalid');
      d.p2m.set(dst + i, t);
    }
    return 0;
  }
}

/** rangeset_add_range() after ioreq_server_map_io_range()'s overlap check. */
function rangeAdd(set: [bigint, bigint][], start: bigint, end: bigint): number {
  // ioreq_server_map_io_range(): overlapping an existing range is EEXIST.
  if (set.some(([s, e]) => s <= end && start <= e)) return -E.EEXIST;
  const before = set.findIndex(([, e]) => e + 1n === start);
  const after = set.findIndex(([s]) => end + 1n === s);
  if (before >= 0 && after >= 0) {
    (set[before] as [bigint, bigint])[1] = (set[after] as [bigint, bigint])[1];
    set.splice(after, 1);
  } else if (before >= 0) {
    (set[before] as [bigint, bigint])[1] = end;
  } else if (after >= 0) {
    (set[after] as [bigint, bigint])[0] = start;
  } else {
    // alloc_range(): a rangeset at its limit (MAX_NR_IO_RANGES) cannot take a new range: ENOMEM.
    if (set.length >= MAX_NR_IO_RANGES) return -E.ENOMEM;
    set.push([start, end]);
    set.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }
  return 0;
}

/** rangeset_remove_range() after ioreq_server_unmap_io_range()'s containment check. */
function rangeRemove(set: [bigint, bigint][], start: bigint, end: bigint): number {
  const i = set.findIndex(([s, e]) => s <= start && end <= e);
  // ioreq_server_unmap_io_range(): a range not wholly mapped is ENOENT.
  if (i < 0) return -E.ENOENT;
  const [s, e] = set[i] as [bigint, bigint];
  if (s < start && end < e) {
    // rangeset_remove_range(): splitting needs a new range, which a full rangeset refuses.
    if (set.length >= MAX_NR_IO_RANGES) return -E.ENOMEM;
    set.splice(i, 1, [s, start - 1n], [end + 1n, e]);
  } else if (s < start) {
    set[i] = [s, start - 1n];
  } else if (end < e) {
    set[i] = [end + 1n, e];
  } else {
    set.splice(i, 1);
  }
  return 0;
}

const CACHEATTR_TYPES = new Set([0, 1, 4, 5, 6, 7]);
/** hvm_set_mem_pinned_cacheattr() with paddr_bits = 52. */
function pinCacheattr(d: SimDomain, start: bigint, end: bigint, type: number): number {
  // A range ending before it starts, or gfns beyond paddr_bits, is EINVAL.
  if (end < start || (start | end) >> 52n !== 0n) return -E.EINVAL;
  const list = d.pinnedCacheattr;
  if (type === XEN_DMOP_DELETE_MEM_CACHEATTR) {
    const i = list.findIndex((r) => r.start === start && r.end === end);
    // Deleting a range that was never pinned is ENOENT.
    if (i < 0) return -E.ENOENT;
    list.splice(i, 1);
    return 0;
  }
  // Only the PAT types UC, WC, WT, WP, WB and UC- are accepted.
  if (!CACHEATTR_TYPES.has(type)) return -E.EINVAL;
  const same = list.find((r) => r.start === start && r.end === end);
  if (same !== undefined) {
    same.type = type;
    return 0;
  }
  // Overlapping a different pinned range is EBUSY; more than 64 ranges is ENOSPC.
  if (list.some((r) => r.start <= end && start <= r.end)) return -E.EBUSY;
  if (list.length >= MAX_PINNED_CACHEATTR_RANGES) return -E.ENOSPC;
  list.push({ start, end, type });
  return 0;
}
