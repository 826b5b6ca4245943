// Bytes only: constants, struct sizes and field offsets of Xen 4.17's public/hvm/dm_op.h and of the
// Linux privcmd/evtchn uapi, little-endian x86_64. test/layout.test.ts compares every number here
// with what gcc computes from Debian's headers (test/vectors/layout.json).

export const XEN_DMOP_create_ioreq_server = 1;
export const XEN_DMOP_get_ioreq_server_info = 2;
export const XEN_DMOP_map_io_range_to_ioreq_server = 3;
export const XEN_DMOP_unmap_io_range_from_ioreq_server = 4;
export const XEN_DMOP_set_ioreq_server_state = 5;
export const XEN_DMOP_destroy_ioreq_server = 6;
export const XEN_DMOP_track_dirty_vram = 7;
export const XEN_DMOP_set_pci_intx_level = 8;
export const XEN_DMOP_set_isa_irq_level = 9;
export const XEN_DMOP_set_pci_link_route = 10;
export const XEN_DMOP_modified_memory = 11;
export const XEN_DMOP_set_mem_type = 12;
export const XEN_DMOP_inject_event = 13;
export const XEN_DMOP_inject_msi = 14;
export const XEN_DMOP_map_mem_type_to_ioreq_server = 15;
export const XEN_DMOP_remote_shutdown = 16;
export const XEN_DMOP_relocate_memory = 17;
export const XEN_DMOP_pin_memory_cacheattr = 18;
export const XEN_DMOP_set_irq_level = 19;
export const XEN_DMOP_nr_vcpus = 20;

export const XEN_DMOP_no_gfns = 1;
export const XEN_DMOP_IO_RANGE_PORT = 0;
export const XEN_DMOP_IO_RANGE_MEMORY = 1;
export const XEN_DMOP_IO_RANGE_PCI = 2;
export const XEN_DMOP_EVENT_ext_int = 0;
export const XEN_DMOP_EVENT_nmi = 2;
export const XEN_DMOP_EVENT_hw_exc = 3;
export const XEN_DMOP_EVENT_sw_int = 4;
export const XEN_DMOP_EVENT_pri_sw_exc = 5;
export const XEN_DMOP_EVENT_sw_exc = 6;
export const XEN_DMOP_IOREQ_MEM_ACCESS_READ = 1;
export const XEN_DMOP_IOREQ_MEM_ACCESS_WRITE = 2;
export const XEN_DMOP_MEM_CACHEATTR_UC = 0;
export const XEN_DMOP_MEM_CACHEATTR_WC = 1;
export const XEN_DMOP_MEM_CACHEATTR_WT = 4;
export const XEN_DMOP_MEM_CACHEATTR_WP = 5;
export const XEN_DMOP_MEM_CACHEATTR_WB = 6;
export const XEN_DMOP_MEM_CACHEATTR_UCM = 7;
export const XEN_DMOP_DELETE_MEM_CACHEATTR = 0xffffffff;

/** hvmmem_type_t as Xen >= 4.7 numbers it (value 3 was HVMMEM_mmio_write_dm before). */
export const HVMMEM_ram_rw = 0;
export const HVMMEM_ram_ro = 1;
export const HVMMEM_mmio_dm = 2;
export const HVMMEM_unused = 3;
export const HVMMEM_ioreq_server = 4;

/** handle_bufioreq values of create_ioreq_server (public/hvm/hvm_op.h). */
export const HVM_IOREQSRV_BUFIOREQ_OFF = 0;
export const HVM_IOREQSRV_BUFIOREQ_LEGACY = 1;
export const HVM_IOREQSRV_BUFIOREQ_ATOMIC = 2;
export const IOREQ_TYPE_PIO = 0;
export const IOREQ_TYPE_COPY = 1;
export const IOREQ_TYPE_PCI_CONFIG = 2;

/** public/sched.h SHUTDOWN_poweroff / SHUTDOWN_reboot: the reasons QEMU's destroy_hvm_domain() passes. */
export const SHUTDOWN_poweroff = 0;
export const SHUTDOWN_reboot = 1;

/** public/hvm/params.h: the legacy ioreq pages and the ioreq server page pool. */
export const HVM_PARAM_IOREQ_PFN = 5;
export const HVM_PARAM_BUFIOREQ_PFN = 6;
export const HVM_PARAM_IOREQ_SERVER_PFN = 32;
export const HVM_PARAM_NR_IOREQ_SERVER_PAGES = 33;

/** public/xen.h: domids 0x7ff0 and up are special (DOMID_SELF, DOMID_IO, ...), never a guest. */
export const DOMID_FIRST_RESERVED = 0x7ff0;
export const DOMID_SELF = 0x7ff0;
/** Also the Linux drivers' "not restricted" marker in privcmd_data.domid. */
export const DOMID_INVALID = 0x7ff4;

/** Whether `domid` can name a guest a device model serves: 1..DOMID_FIRST_RESERVED-1 (dom0 never). */
export function isGuestDomid(domid: number): boolean {
  return Number.isInteger(domid) && domid >= 1 && domid < DOMID_FIRST_RESERVED;
}
export const __HYPERVISOR_dm_op = 41;
/** public/xen.h: the other hypercalls Xen's QEMU reaches through IOCTL_PRIVCMD_HYPERCALL. */
export const __HYPERVISOR_memory_op = 12;
export const __HYPERVISOR_multicall = 13;
export const __HYPERVISOR_xen_version = 17;
export const __HYPERVISOR_event_channel_op = 32;
export const __HYPERVISOR_hvm_op = 34;
/** public/version.h, public/hvm/hvm_op.h, public/memory.h sub-ops. */
export const XENVER_version = 0;
export const XENVER_extraversion = 1;
export const HVMOP_set_param = 0;
export const HVMOP_get_param = 1;
export const XENMEM_populate_physmap = 6;
export const XENMEM_acquire_resource = 28;
/** public/memory.h: a memory_op's command is its low 6 bits (MEMOP_EXTENT_SHIFT 6). */
export const MEMOP_CMD_MASK = 0x3f;
export const XENMEM_resource_grant_table = 1;
/** XENMEM_resource_ioreq_server_frame_ioreq(n): the synchronous ioreq pages after the buffered one. */
export function XENMEM_resource_ioreq_server_frame_ioreq(n: number): number {
  return 1 + n;
}
/** HVM_NR_PARAMS (public/hvm/params.h, Xen 4.17) and NR_VIRQS (public/xen.h). */
export const HVM_NR_PARAMS = 39;
export const NR_VIRQS = 24;
export const XENMEM_resource_ioreq_server = 0;
export const XENMEM_resource_ioreq_server_frame_bufioreq = 0;
export const PRIVCMD_MMAPBATCH_MFN_ERROR = 0xf0000000;
export const PRIVCMD_MMAPBATCH_PAGED_ERROR = 0x80000000;

/** XEN_DMOP_PCI_SBDF(s, b, d, f): the value of a XEN_DMOP_IO_RANGE_PCI range, as an unsigned 32-bit number. */
export function XEN_DMOP_PCI_SBDF(
  segment: number,
  bus: number,
  device: number,
  fn: number,
): number {
  return (
    (((segment & 0xffff) << 16) | ((bus & 0xff) << 8) | ((device & 0x1f) << 3) | (fn & 0x07)) >>> 0
  );
}

/** Linux _IOC(dir, type, nr, size) with the generic (x86) bit layout of asm-generic/ioctl.h. */
function ioc(dir: number, type: string, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type.charCodeAt(0) << 8) | nr) >>> 0;
}

/** Sizes of the C structs, in bytes. */
export const SIZEOF = {
  xen_dm_op: 32,
  xen_dm_op_buf: 16,
  xen_dm_op_modified_memory_extent: 16,
  privcmd_hypercall: 48,
  privcmd_mmap_entry: 24,
  privcmd_mmap: 16,
  privcmd_mmapbatch: 24,
  privcmd_mmapbatch_v2: 32,
  privcmd_dm_op_buf: 16,
  privcmd_dm_op: 16,
  privcmd_mmap_resource: 32,
  ioctl_evtchn_bind_virq: 4,
  ioctl_evtchn_bind_interdomain: 8,
  ioctl_evtchn_bind_unbound_port: 4,
  ioctl_evtchn_unbind: 4,
  ioctl_evtchn_notify: 4,
  ioctl_evtchn_restrict_domid: 2,
} as const;

/** Offset of the op union inside struct xen_dm_op: op (u32) and pad (u32) come first. */
export const XEN_DM_OP_UNION_OFFSET = 8;

// privcmd ioctls use _IOC_NONE: the kernel copies the argument itself.
export const IOCTL_PRIVCMD_HYPERCALL = ioc(0, 'P', 0, SIZEOF.privcmd_hypercall);
export const IOCTL_PRIVCMD_MMAP = ioc(0, 'P', 2, SIZEOF.privcmd_mmap);
export const IOCTL_PRIVCMD_MMAPBATCH = ioc(0, 'P', 3, SIZEOF.privcmd_mmapbatch);
export const IOCTL_PRIVCMD_MMAPBATCH_V2 = ioc(0, 'P', 4, SIZEOF.privcmd_mmapbatch_v2);
export const IOCTL_PRIVCMD_DM_OP = ioc(0, 'P', 5, SIZEOF.privcmd_dm_op);
export const IOCTL_PRIVCMD_RESTRICT = ioc(0, 'P', 6, 2);
export const IOCTL_PRIVCMD_MMAP_RESOURCE = ioc(0, 'P', 7, SIZEOF.privcmd_mmap_resource);
export const IOCTL_PRIVCMD_UNIMPLEMENTED = ioc(0, 'P', 0xff, 0);
export const IOCTL_EVTCHN_BIND_VIRQ = ioc(0, 'E', 0, SIZEOF.ioctl_evtchn_bind_virq);
export const IOCTL_EVTCHN_BIND_INTERDOMAIN = ioc(0, 'E', 1, SIZEOF.ioctl_evtchn_bind_interdomain);
export const IOCTL_EVTCHN_BIND_UNBOUND_PORT = ioc(0, 'E', 2, SIZEOF.ioctl_evtchn_bind_unbound_port);
export const IOCTL_EVTCHN_UNBIND = ioc(0, 'E', 3, SIZEOF.ioctl_evtchn_unbind);
export const IOCTL_EVTCHN_NOTIFY = ioc(0, 'E', 4, SIZEOF.ioctl_evtchn_notify);
export const IOCTL_EVTCHN_RESET = ioc(0, 'E', 5, 0);
export const IOCTL_EVTCHN_RESTRICT_DOMID = ioc(0, 'E', 6, SIZEOF.ioctl_evtchn_restrict_domid);

/**
 * Linux >= 6.7's IRQFD and IOEVENTFD (`_IOW('P', 8|9, ...)`), which Debian's Xen 4.17 headers do
 * not have: numbers, sizes and offsets from include/uapi/xen/privcmd.h of Linux 6.7
 * (struct privcmd_irqfd {u64 dm_op; u32 size; u32 fd; u32 flags; domid_t dom; u8 pad[2]} and
 * struct privcmd_ioeventfd {u64 ioreq; u64 ports; u64 addr; u32 addr_len; u32 event_fd;
 * u32 vcpus; u32 vq; u32 flags; domid_t dom; u8 pad[2]}).
 */
export const IOCTL_PRIVCMD_IRQFD = 0x40185008;
export const IOCTL_PRIVCMD_IOEVENTFD = 0x40305009;
export const PRIVCMD_IRQFD_LAYOUT = {
  privcmd_irqfd: { size: 24, flags: 16, dom: 20 },
  privcmd_ioeventfd: { size: 48, flags: 40, dom: 44 },
} as const;
/** `PRIVCMD_IRQFD_FLAG_DEASSIGN` / `PRIVCMD_IOEVENTFD_FLAG_DEASSIGN`: the only flag either takes. */
export const PRIVCMD_FLAG_DEASSIGN = 1;

/** /dev/xen/gntdev (include/uapi/xen/gntdev.h): `_IOC(_IOC_NONE, 'G', nr, sizeof(struct))`. */
export const IOCTL_GNTDEV_MAP_GRANT_REF = 0x00184700;
export const IOCTL_GNTDEV_UNMAP_GRANT_REF = 0x00104701;
export const IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR = 0x00184702;
export const IOCTL_GNTDEV_SET_MAX_GRANTS = 0x00044703;
export const IOCTL_GNTDEV_SET_UNMAP_NOTIFY = 0x00104707;
export const IOCTL_GNTDEV_GRANT_COPY = 0x00104708;

/** Name of every privcmd, evtchn and gntdev ioctl above by number, for traces and audits. */
export const XEN_IOCTL_NAMES: ReadonlyMap<number, string> = new Map([
  [IOCTL_PRIVCMD_HYPERCALL, 'IOCTL_PRIVCMD_HYPERCALL'],
  [IOCTL_PRIVCMD_MMAP, 'IOCTL_PRIVCMD_MMAP'],
  [IOCTL_PRIVCMD_MMAPBATCH, 'IOCTL_PRIVCMD_MMAPBATCH'],
  [IOCTL_PRIVCMD_MMAPBATCH_V2, 'IOCTL_PRIVCMD_MMAPBATCH_V2'],
  [IOCTL_PRIVCMD_DM_OP, 'IOCTL_PRIVCMD_DM_OP'],
  [IOCTL_PRIVCMD_RESTRICT, 'IOCTL_PRIVCMD_RESTRICT'],
  [IOCTL_PRIVCMD_MMAP_RESOURCE, 'IOCTL_PRIVCMD_MMAP_RESOURCE'],
  [IOCTL_PRIVCMD_IRQFD, 'IOCTL_PRIVCMD_IRQFD'],
  [IOCTL_PRIVCMD_IOEVENTFD, 'IOCTL_PRIVCMD_IOEVENTFD'],
  [IOCTL_PRIVCMD_UNIMPLEMENTED, 'IOCTL_PRIVCMD_UNIMPLEMENTED'],
  [IOCTL_EVTCHN_BIND_VIRQ, 'IOCTL_EVTCHN_BIND_VIRQ'],
  [IOCTL_EVTCHN_BIND_INTERDOMAIN, 'IOCTL_EVTCHN_BIND_INTERDOMAIN'],
  [IOCTL_EVTCHN_BIND_UNBOUND_PORT, 'IOCTL_EVTCHN_BIND_UNBOUND_PORT'],
  [IOCTL_EVTCHN_UNBIND, 'IOCTL_EVTCHN_UNBIND'],
  [IOCTL_EVTCHN_NOTIFY, 'IOCTL_EVTCHN_NOTIFY'],
  [IOCTL_EVTCHN_RESET, 'IOCTL_EVTCHN_RESET'],
  [IOCTL_EVTCHN_RESTRICT_DOMID, 'IOCTL_EVTCHN_RESTRICT_DOMID'],
  [IOCTL_GNTDEV_MAP_GRANT_REF, 'IOCTL_GNTDEV_MAP_GRANT_REF'],
  [IOCTL_GNTDEV_UNMAP_GRANT_REF, 'IOCTL_GNTDEV_UNMAP_GRANT_REF'],
  [IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR, 'IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR'],
  [IOCTL_GNTDEV_SET_MAX_GRANTS, 'IOCTL_GNTDEV_SET_MAX_GRANTS'],
  [IOCTL_GNTDEV_SET_UNMAP_NOTIFY, 'IOCTL_GNTDEV_SET_UNMAP_NOTIFY'],
  [IOCTL_GNTDEV_GRANT_COPY, 'IOCTL_GNTDEV_GRANT_COPY'],
]);

/** The C type of a struct field, which fixes its width and range. */
export type CType = 'u8' | 'u16' | 'u32' | 'u64';

export interface FieldLayout {
  /** camelCase name used by DmOp objects. */
  readonly name: string;
  /** The C field name in dm_op.h. */
  readonly cName: string;
  readonly type: CType;
  /** Offset inside the op struct (add XEN_DM_OP_UNION_OFFSET for struct xen_dm_op). */
  readonly offset: number;
}

export interface OpLayout {
  readonly number: number;
  /** The C struct of the union member. */
  readonly struct: string;
  readonly size: number;
  /** Fields the caller sets. */
  readonly inputs: readonly FieldLayout[];
  /** Fields Xen writes back into the union. */
  readonly outputs: readonly FieldLayout[];
  /** Padding Xen requires to be zero (offset, width). */
  readonly pads: readonly (readonly [offset: number, width: number])[];
}

const f = (name: string, cName: string, type: CType, offset: number): FieldLayout => ({
  name,
  cName,
  type,
  offset,
});
const range: OpLayout['inputs'] = [
  f('id', 'id', 'u16', 0),
  f('type', 'type', 'u32', 4),
  f('start', 'start', 'u64', 8),
  f('end', 'end', 'u64', 16),
];

/** Every op of the union, keyed by the suffix of its XEN_DMOP_* name. */
export const DM_OPS = {
  create_ioreq_server: {
    number: 1,
    struct: 'xen_dm_op_create_ioreq_server',
    size: 6,
    inputs: [f('handleBufioreq', 'handle_bufioreq', 'u8', 0)],
    outputs: [f('id', 'id', 'u16', 4)],
    pads: [
      [1, 1],
      [2, 1],
      [3, 1],
    ],
  },
  get_ioreq_server_info: {
    number: 2,
    struct: 'xen_dm_op_get_ioreq_server_info',
    size: 24,
    inputs: [f('id', 'id', 'u16', 0), f('flags', 'flags', 'u16', 2)],
    outputs: [
      f('bufioreqPort', 'bufioreq_port', 'u32', 4),
      f('ioreqGfn', 'ioreq_gfn', 'u64', 8),
      f('bufioreqGfn', 'bufioreq_gfn', 'u64', 16),
    ],
    pads: [],
  },
  map_io_range_to_ioreq_server: {
    number: 3,
    struct: 'xen_dm_op_ioreq_server_range',
    size: 24,
    inputs: range,
    outputs: [],
    pads: [[2, 2]],
  },
  unmap_io_range_from_ioreq_server: {
    number: 4,
    struct: 'xen_dm_op_ioreq_server_range',
    size: 24,
    inputs: range,
    outputs: [],
    pads: [[2, 2]],
  },
  set_ioreq_server_state: {
    number: 5,
    struct: 'xen_dm_op_set_ioreq_server_state',
    size: 4,
    inputs: [f('id', 'id', 'u16', 0), f('enabled', 'enabled', 'u8', 2)],
    outputs: [],
    pads: [[3, 1]],
  },
  destroy_ioreq_server: {
    number: 6,
    struct: 'xen_dm_op_destroy_ioreq_server',
    size: 4,
    inputs: [f('id', 'id', 'u16', 0)],
    outputs: [],
    pads: [[2, 2]],
  },
  track_dirty_vram: {
    number: 7,
    struct: 'xen_dm_op_track_dirty_vram',
    size: 16,
    inputs: [f('nr', 'nr', 'u32', 0), f('firstPfn', 'first_pfn', 'u64', 8)],
    outputs: [],
    pads: [[4, 4]],
  },
  set_pci_intx_level: {
    number: 8,
    struct: 'xen_dm_op_set_pci_intx_level',
    size: 6,
    inputs: [
      f('domain', 'domain', 'u16', 0),
      f('bus', 'bus', 'u8', 2),
      f('device', 'device', 'u8', 3),
      f('intx', 'intx', 'u8', 4),
      f('level', 'level', 'u8', 5),
    ],
    outputs: [],
    pads: [],
  },
  set_isa_irq_level: {
    number: 9,
    struct: 'xen_dm_op_set_isa_irq_level',
    size: 2,
    inputs: [f('isaIrq', 'isa_irq', 'u8', 0), f('level', 'level', 'u8', 1)],
    outputs: [],
    pads: [],
  },
  set_pci_link_route: {
    number: 10,
    struct: 'xen_dm_op_set_pci_link_route',
    size: 2,
    inputs: [f('link', 'link', 'u8', 0), f('isaIrq', 'isa_irq', 'u8', 1)],
    outputs: [],
    pads: [],
  },
  modified_memory: {
    number: 11,
    struct: 'xen_dm_op_modified_memory',
    size: 8,
    // nr_extents is derived from the extents buffer; opaque is Xen's continuation cursor.
    inputs: [],
    outputs: [f('nrExtents', 'nr_extents', 'u32', 0), f('opaque', 'opaque', 'u32', 4)],
    pads: [],
  },
  set_mem_type: {
    number: 12,
    struct: 'xen_dm_op_set_mem_type',
    size: 16,
    inputs: [
      f('nr', 'nr', 'u32', 0),
      f('memType', 'mem_type', 'u16', 4),
      f('firstPfn', 'first_pfn', 'u64', 8),
    ],
    outputs: [],
    pads: [[6, 2]],
  },
  inject_event: {
    number: 13,
    struct: 'xen_dm_op_inject_event',
    size: 24,
    inputs: [
      f('vcpuid', 'vcpuid', 'u32', 0),
      f('vector', 'vector', 'u8', 4),
      f('type', 'type', 'u8', 5),
      f('insnLen', 'insn_len', 'u8', 6),
      f('errorCode', 'error_code', 'u32', 8),
      f('cr2', 'cr2', 'u64', 16),
    ],
    outputs: [],
    pads: [
      [7, 1],
      [12, 4],
    ],
  },
  inject_msi: {
    number: 14,
    struct: 'xen_dm_op_inject_msi',
    size: 16,
    inputs: [f('data', 'data', 'u32', 0), f('addr', 'addr', 'u64', 8)],
    outputs: [],
    pads: [[4, 4]],
  },
  map_mem_type_to_ioreq_server: {
    number: 15,
    struct: 'xen_dm_op_map_mem_type_to_ioreq_server',
    size: 16,
    // opaque (u64 at 8) is Xen's continuation cursor and must be zero on the first call.
    inputs: [f('id', 'id', 'u16', 0), f('type', 'type', 'u16', 2), f('flags', 'flags', 'u32', 4)],
    outputs: [],
    pads: [],
  },
  remote_shutdown: {
    number: 16,
    struct: 'xen_dm_op_remote_shutdown',
    size: 4,
    inputs: [f('reason', 'reason', 'u32', 0)],
    outputs: [],
    pads: [],
  },
  relocate_memory: {
    number: 17,
    struct: 'xen_dm_op_relocate_memory',
    size: 24,
    inputs: [
      f('size', 'size', 'u32', 0),
      f('srcGfn', 'src_gfn', 'u64', 8),
      f('dstGfn', 'dst_gfn', 'u64', 16),
    ],
    outputs: [],
    pads: [[4, 4]],
  },
  pin_memory_cacheattr: {
    number: 18,
    struct: 'xen_dm_op_pin_memory_cacheattr',
    size: 24,
    inputs: [
      f('start', 'start', 'u64', 0),
      f('end', 'end', 'u64', 8),
      f('type', 'type', 'u32', 16),
    ],
    outputs: [],
    pads: [[20, 4]],
  },
  set_irq_level: {
    number: 19,
    struct: 'xen_dm_op_set_irq_level',
    size: 8,
    inputs: [f('irq', 'irq', 'u32', 0), f('level', 'level', 'u8', 4)],
    outputs: [],
    pads: [[5, 3]],
  },
  nr_vcpus: {
    number: 20,
    struct: 'xen_dm_op_nr_vcpus',
    size: 4,
    inputs: [],
    outputs: [f('vcpus', 'vcpus', 'u32', 0)],
    pads: [],
  },
} as const satisfies Record<string, OpLayout>;

export type DmOpName = keyof typeof DM_OPS;

/** Op names indexed by XEN_DMOP_* number (index 0 is unused). */
export const DM_OP_NAMES: readonly (DmOpName | undefined)[] = (() => {
  const names: (DmOpName | undefined)[] = [];
  for (const name of Object.keys(DM_OPS) as DmOpName[]) names[DM_OPS[name].number] = name;
  return names;
})();

/** struct xen_dm_op_modified_memory_extent: nr (u32), pad (u32), first_pfn (u64). */
export const MODIFIED_MEMORY_EXTENT = {
  size: 16,
  fields: [f('nr', 'nr', 'u32', 0), f('firstPfn', 'first_pfn', 'u64', 8)],
  pads: [[4, 4]],
} as const;

/** Field offsets of the privcmd and evtchn uapi structs (pointers are 8 bytes on x86_64). */
export const PRIVCMD_LAYOUT = {
  privcmd_hypercall: { op: 0, arg: 8 },
  privcmd_mmap_entry: { va: 0, mfn: 8, npages: 16 },
  privcmd_mmap: { num: 0, dom: 4, entry: 8 },
  privcmd_mmapbatch: { num: 0, dom: 4, addr: 8, arr: 16 },
  privcmd_mmapbatch_v2: { num: 0, dom: 4, addr: 8, arr: 16, err: 24 },
  privcmd_dm_op_buf: { uptr: 0, size: 8 },
  privcmd_dm_op: { dom: 0, num: 2, ubufs: 8 },
  privcmd_mmap_resource: { dom: 0, type: 4, id: 8, idx: 12, num: 16, addr: 24 },
  ioctl_evtchn_bind_virq: { virq: 0 },
  ioctl_evtchn_bind_interdomain: { remote_domain: 0, remote_port: 4 },
  ioctl_evtchn_bind_unbound_port: { remote_domain: 0 },
  ioctl_evtchn_unbind: { port: 0 },
  ioctl_evtchn_notify: { port: 0 },
  ioctl_evtchn_restrict_domid: { domid: 0 },
} as const;

/** Largest value of each C type. */
export const CTYPE_MAX = {
  u8: 0xff,
  u16: 0xffff,
  u32: 0xffffffff,
  u64: 0xffffffffffffffffn,
} as const;
