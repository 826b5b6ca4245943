import { PRIVCMD_LAYOUT, SIZEOF } from './layout.js';

// Encoders and decoders of the Linux privcmd ioctl arguments (include/uapi/xen/privcmd.h, x86_64).
// Pointer fields are bigint addresses: the caller (a native ioctl binding) knows where its
// buffers live. Every field is range-checked against its C type before it is written.

type Width = 'u16' | 'u32' | 'u64' | 'i32';
type StructSpec = Readonly<Record<string, readonly [offset: number, width: Width]>>;
type Fields<S extends StructSpec> = {
  [K in keyof S]: S[K][1] extends 'u64' ? bigint : number;
};

const LIMITS = { u16: [0, 0xffff], u32: [0, 0xffffffff], i32: [-0x80000000, 0x7fffffff] } as const;

function encodeStruct<S extends StructSpec>(
  struct: string,
  size: number,
  spec: S,
  value: Fields<S>,
): Uint8Array {
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  for (const key of Object.keys(spec)) {
    const [offset, width] = spec[key] as readonly [number, Width];
    const x = (value as Record<string, unknown>)[key];
    if (width === 'u64') {
      if (typeof x !== 'bigint' || x < 0n || x > 0xffffffffffffffffn) {
        throw new RangeError(
          `${struct}.${key}: expected a bigint in [0, 2^64-1], saw ${String(x)}`,
        );
      }
      v.setBigUint64(offset, x, true);
      continue;
    }
    const [lo, hi] = LIMITS[width];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < lo || x > hi) {
      throw new RangeError(
        `${struct}.${key}: expected an integer in [${lo}, ${hi}], saw ${String(x)}`,
      );
    }
    if (width === 'u16') v.setUint16(offset, x, true);
    else if (width === 'u32') v.setUint32(offset, x, true);
    else v.setInt32(offset, x, true);
  }
  return out;
}

function decodeStruct<S extends StructSpec>(
  struct: string,
  size: number,
  spec: S,
  bytes: Uint8Array,
): Fields<S> {
  if (bytes.byteLength < size) {
    throw new RangeError(`${struct}: expected at least ${size} bytes, saw ${bytes.byteLength}`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Record<string, number | bigint> = {};
  for (const key of Object.keys(spec)) {
    const [offset, width] = spec[key] as readonly [number, Width];
    out[key] =
      width === 'u64'
        ? v.getBigUint64(offset, true)
        : width === 'u16'
          ? v.getUint16(offset, true)
          : width === 'u32'
            ? v.getUint32(offset, true)
            : v.getInt32(offset, true);
  }
  return out as Fields<S>;
}

const L = PRIVCMD_LAYOUT;
const DM_OP_SPEC = {
  dom: [L.privcmd_dm_op.dom, 'u16'],
  num: [L.privcmd_dm_op.num, 'u16'],
  ubufs: [L.privcmd_dm_op.ubufs, 'u64'],
} as const;
const DM_OP_BUF_SPEC = {
  uptr: [L.privcmd_dm_op_buf.uptr, 'u64'],
  size: [L.privcmd_dm_op_buf.size, 'u64'],
} as const;
const MMAPBATCH_V2_SPEC = {
  num: [L.privcmd_mmapbatch_v2.num, 'u32'],
  dom: [L.privcmd_mmapbatch_v2.dom, 'u16'],
  addr: [L.privcmd_mmapbatch_v2.addr, 'u64'],
  arr: [L.privcmd_mmapbatch_v2.arr, 'u64'],
  err: [L.privcmd_mmapbatch_v2.err, 'u64'],
} as const;
const MMAP_RESOURCE_SPEC = {
  dom: [L.privcmd_mmap_resource.dom, 'u16'],
  type: [L.privcmd_mmap_resource.type, 'u32'],
  id: [L.privcmd_mmap_resource.id, 'u32'],
  idx: [L.privcmd_mmap_resource.idx, 'u32'],
  num: [L.privcmd_mmap_resource.num, 'u64'],
  addr: [L.privcmd_mmap_resource.addr, 'u64'],
} as const;
const HYPERCALL_SPEC = {
  op: [0, 'u64'],
  arg0: [8, 'u64'],
  arg1: [16, 'u64'],
  arg2: [24, 'u64'],
  arg3: [32, 'u64'],
  arg4: [40, 'u64'],
} as const;

const MMAP_SPEC = {
  num: [L.privcmd_mmap.num, 'i32'],
  dom: [L.privcmd_mmap.dom, 'u16'],
  entry: [L.privcmd_mmap.entry, 'u64'],
} as const;
const MMAP_ENTRY_SPEC = {
  va: [L.privcmd_mmap_entry.va, 'u64'],
  mfn: [L.privcmd_mmap_entry.mfn, 'u64'],
  npages: [L.privcmd_mmap_entry.npages, 'u64'],
} as const;
const MMAPBATCH_SPEC = {
  num: [L.privcmd_mmapbatch.num, 'i32'],
  dom: [L.privcmd_mmapbatch.dom, 'u16'],
  addr: [L.privcmd_mmapbatch.addr, 'u64'],
  arr: [L.privcmd_mmapbatch.arr, 'u64'],
} as const;
const EVTCHN_BIND_INTERDOMAIN_SPEC = {
  remote_domain: [L.ioctl_evtchn_bind_interdomain.remote_domain, 'u32'],
  remote_port: [L.ioctl_evtchn_bind_interdomain.remote_port, 'u32'],
} as const;

/** struct privcmd_mmap: the argument of IOCTL_PRIVCMD_MMAP (`num` is a C int). */
export type PrivcmdMmap = Fields<typeof MMAP_SPEC>;
/** struct privcmd_mmap_entry. */
export type PrivcmdMmapEntry = Fields<typeof MMAP_ENTRY_SPEC>;
/** struct privcmd_mmapbatch: the argument of IOCTL_PRIVCMD_MMAPBATCH (`num` is a C int). */
export type PrivcmdMmapbatch = Fields<typeof MMAPBATCH_SPEC>;
/** struct ioctl_evtchn_bind_interdomain. */
export type EvtchnBindInterdomain = Fields<typeof EVTCHN_BIND_INTERDOMAIN_SPEC>;

export function encodePrivcmdMmap(value: PrivcmdMmap): Uint8Array {
  return encodeStruct('privcmd_mmap', SIZEOF.privcmd_mmap, MMAP_SPEC, value);
}
export function decodePrivcmdMmap(bytes: Uint8Array): PrivcmdMmap {
  return decodeStruct('privcmd_mmap', SIZEOF.privcmd_mmap, MMAP_SPEC, bytes);
}
export function encodePrivcmdMmapEntry(value: PrivcmdMmapEntry): Uint8Array {
  return encodeStruct('privcmd_mmap_entry', SIZEOF.privcmd_mmap_entry, MMAP_ENTRY_SPEC, value);
}
export function decodePrivcmdMmapEntry(bytes: Uint8Array): PrivcmdMmapEntry {
  return decodeStruct('privcmd_mmap_entry', SIZEOF.privcmd_mmap_entry, MMAP_ENTRY_SPEC, bytes);
}
export function encodePrivcmdMmapbatch(value: PrivcmdMmapbatch): Uint8Array {
  return encodeStruct('privcmd_mmapbatch', SIZEOF.privcmd_mmapbatch, MMAPBATCH_SPEC, value);
}
export function decodePrivcmdMmapbatch(bytes: Uint8Array): PrivcmdMmapbatch {
  return decodeStruct('privcmd_mmapbatch', SIZEOF.privcmd_mmapbatch, MMAPBATCH_SPEC, bytes);
}
export function encodeEvtchnBindInterdomain(value: EvtchnBindInterdomain): Uint8Array {
  return encodeStruct(
    'ioctl_evtchn_bind_interdomain',
    SIZEOF.ioctl_evtchn_bind_interdomain,
    EVTCHN_BIND_INTERDOMAIN_SPEC,
    value,
  );
}
export function decodeEvtchnBindInterdomain(bytes: Uint8Array): EvtchnBindInterdomain {
  return decodeStruct(
    'ioctl_evtchn_bind_interdomain',
    SIZEOF.ioctl_evtchn_bind_interdomain,
    EVTCHN_BIND_INTERDOMAIN_SPEC,
    bytes,
  );
}

/**
 * The one-`unsigned int` evtchn arguments (bind_virq's virq, bind_unbound_port's remote_domain,
 * unbind's and notify's port): 4 little-endian bytes.
 */
export function encodeEvtchnU32(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(
      `evtchn argument: expected an integer in [0, 4294967295], saw ${String(value)}`,
    );
  }
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, true);
  return out;
}

/** struct privcmd_dm_op: the argument of IOCTL_PRIVCMD_DM_OP. */
export type PrivcmdDmOp = Fields<typeof DM_OP_SPEC>;
/** struct privcmd_dm_op_buf: one entry of the `ubufs` array. */
export type PrivcmdDmOpBuf = Fields<typeof DM_OP_BUF_SPEC>;
/** struct privcmd_mmapbatch_v2: the argument of IOCTL_PRIVCMD_MMAPBATCH_V2. */
export type PrivcmdMmapbatchV2 = Fields<typeof MMAPBATCH_V2_SPEC>;
/** struct privcmd_mmap_resource: the argument of IOCTL_PRIVCMD_MMAP_RESOURCE. */
export type PrivcmdMmapResource = Fields<typeof MMAP_RESOURCE_SPEC>;
/** struct privcmd_hypercall: op and its five arguments. */
export interface PrivcmdHypercall {
  op: bigint;
  args: readonly [bigint, bigint, bigint, bigint, bigint];
}

export function encodePrivcmdDmOp(value: PrivcmdDmOp): Uint8Array {
  return encodeStruct('privcmd_dm_op', SIZEOF.privcmd_dm_op, DM_OP_SPEC, value);
}
export function decodePrivcmdDmOp(bytes: Uint8Array): PrivcmdDmOp {
  return decodeStruct('privcmd_dm_op', SIZEOF.privcmd_dm_op, DM_OP_SPEC, bytes);
}

/** The `ubufs` array: one 16-byte privcmd_dm_op_buf per buffer. */
export function encodePrivcmdDmOpBufs(bufs: readonly PrivcmdDmOpBuf[]): Uint8Array {
  const out = new Uint8Array(bufs.length * SIZEOF.privcmd_dm_op_buf);
  bufs.forEach((b, i) => {
    out.set(
      encodeStruct(`privcmd_dm_op_buf[${i}]`, SIZEOF.privcmd_dm_op_buf, DM_OP_BUF_SPEC, b),
      i * 16,
    );
  });
  return out;
}
export function decodePrivcmdDmOpBufs(bytes: Uint8Array, num: number): PrivcmdDmOpBuf[] {
  const out: PrivcmdDmOpBuf[] = [];
  for (let i = 0; i < num; i++) {
    out.push(decodeStruct(`privcmd_dm_op_buf[${i}]`, 16, DM_OP_BUF_SPEC, bytes.subarray(i * 16)));
  }
  return out;
}

export function encodePrivcmdMmapbatchV2(value: PrivcmdMmapbatchV2): Uint8Array {
  return encodeStruct(
    'privcmd_mmapbatch_v2',
    SIZEOF.privcmd_mmapbatch_v2,
    MMAPBATCH_V2_SPEC,
    value,
  );
}
export function decodePrivcmdMmapbatchV2(bytes: Uint8Array): PrivcmdMmapbatchV2 {
  return decodeStruct(
    'privcmd_mmapbatch_v2',
    SIZEOF.privcmd_mmapbatch_v2,
    MMAPBATCH_V2_SPEC,
    bytes,
  );
}

/** The xen_pfn_t array `arr` of MMAPBATCH(_V2): 8 bytes per gfn. */
export function encodeXenPfnArray(gfns: readonly bigint[]): Uint8Array {
  const out = new Uint8Array(gfns.length * 8);
  const v = new DataView(out.buffer);
  gfns.forEach((g, i) => {
    if (typeof g !== 'bigint' || g < 0n || g > 0xffffffffffffffffn) {
      throw new RangeError(`xen_pfn_t[${i}]: expected a bigint in [0, 2^64-1], saw ${String(g)}`);
    }
    v.setBigUint64(i * 8, g, true);
  });
  return out;
}

/** The int `err` array MMAPBATCH_V2 fills: 0 or a negative errno per frame. */
export function decodeMmapbatchErrors(bytes: Uint8Array, num: number): number[] {
  if (bytes.byteLength < num * 4) {
    throw new RangeError(
      `privcmd_mmapbatch_v2.err: expected ${num * 4} bytes, saw ${bytes.byteLength}`,
    );
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  for (let i = 0; i < num; i++) out.push(v.getInt32(i * 4, true));
  return out;
}

export function encodePrivcmdMmapResource(value: PrivcmdMmapResource): Uint8Array {
  return encodeStruct(
    'privcmd_mmap_resource',
    SIZEOF.privcmd_mmap_resource,
    MMAP_RESOURCE_SPEC,
    value,
  );
}
export function decodePrivcmdMmapResource(bytes: Uint8Array): PrivcmdMmapResource {
  return decodeStruct(
    'privcmd_mmap_resource',
    SIZEOF.privcmd_mmap_resource,
    MMAP_RESOURCE_SPEC,
    bytes,
  );
}

export function encodePrivcmdHypercall(value: PrivcmdHypercall): Uint8Array {
  const [arg0, arg1, arg2, arg3, arg4] = value.args;
  return encodeStruct('privcmd_hypercall', SIZEOF.privcmd_hypercall, HYPERCALL_SPEC, {
    op: value.op,
    arg0,
    arg1,
    arg2,
    arg3,
    arg4,
  });
}
export function decodePrivcmdHypercall(bytes: Uint8Array): PrivcmdHypercall {
  const h = decodeStruct('privcmd_hypercall', SIZEOF.privcmd_hypercall, HYPERCALL_SPEC, bytes);
  return { op: h.op, args: [h.arg0, h.arg1, h.arg2, h.arg3, h.arg4] };
}

/** The argument of IOCTL_PRIVCMD_RESTRICT and of IOCTL_EVTCHN_RESTRICT_DOMID: a domid_t. */
export function encodeDomid(domid: number): Uint8Array {
  if (!Number.isInteger(domid) || domid < 0 || domid > 0xffff) {
    throw new RangeError(
      `domid: expected an integer in [0, 65535] (domid_t), saw ${String(domid)}`,
    );
  }
  return new Uint8Array([domid & 0xff, domid >> 8]);
}
