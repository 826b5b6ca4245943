import { errnoName } from './errors.js';
import {
  CTYPE_MAX,
  type CType,
  DM_OP_NAMES,
  DM_OPS,
  type DmOpName,
  type FieldLayout,
  MODIFIED_MEMORY_EXTENT,
  SIZEOF,
  XEN_DM_OP_UNION_OFFSET,
} from './layout.js';

/** One contiguous run of modified guest frames (struct xen_dm_op_modified_memory_extent). */
export interface ModifiedMemoryExtent {
  firstPfn: bigint;
  nr: number;
}

/**
 * A DM_OP request: `op` is the suffix of the XEN_DMOP_* name, the other fields are the C struct
 * fields in camelCase. 64-bit fields are bigint. Padding and Xen's continuation cursors are not
 * fields: they are always encoded as zero.
 */
export type DmOp =
  | { op: 'create_ioreq_server'; handleBufioreq: number }
  | { op: 'get_ioreq_server_info'; id: number; flags?: number }
  | { op: 'map_io_range_to_ioreq_server'; id: number; type: number; start: bigint; end: bigint }
  | { op: 'unmap_io_range_from_ioreq_server'; id: number; type: number; start: bigint; end: bigint }
  | { op: 'set_ioreq_server_state'; id: number; enabled: number }
  | { op: 'destroy_ioreq_server'; id: number }
  | { op: 'track_dirty_vram'; firstPfn: bigint; nr: number }
  | {
      op: 'set_pci_intx_level';
      domain: number;
      bus: number;
      device: number;
      intx: number;
      level: number;
    }
  | { op: 'set_isa_irq_level'; isaIrq: number; level: number }
  | { op: 'set_pci_link_route'; link: number; isaIrq: number }
  | { op: 'modified_memory'; extents: readonly ModifiedMemoryExtent[] }
  | { op: 'set_mem_type'; memType: number; firstPfn: bigint; nr: number }
  | {
      op: 'inject_event';
      vcpuid: number;
      vector: number;
      type: number;
      insnLen: number;
      errorCode: number;
      cr2: bigint;
    }
  | { op: 'inject_msi'; addr: bigint; data: number }
  | { op: 'map_mem_type_to_ioreq_server'; id: number; type: number; flags: number }
  | { op: 'remote_shutdown'; reason: number }
  | { op: 'relocate_memory'; size: number; srcGfn: bigint; dstGfn: bigint }
  | { op: 'pin_memory_cacheattr'; start: bigint; end: bigint; type: number }
  | { op: 'set_irq_level'; irq: number; level: number }
  | { op: 'nr_vcpus' };

/** What Xen writes back, per op. */
export interface DmOpResults {
  create_ioreq_server: { id: number };
  get_ioreq_server_info: { bufioreqPort: number; ioreqGfn: bigint; bufioreqGfn: bigint };
  track_dirty_vram: { dirtyBitmap: Uint8Array };
  modified_memory: { nrExtents: number; opaque: number };
  nr_vcpus: { vcpus: number };
}
export type DmOpResult<N extends DmOpName> = N extends keyof DmOpResults
  ? DmOpResults[N]
  : Record<string, never>;

/** The buffers of one DM_OP: `bufs[0]` is struct xen_dm_op, further buffers as the op needs. */
export interface EncodedDmOp {
  bufs: Uint8Array[];
}

/** Bytes of the dirty-VRAM bitmap for `nr` frames, as libxendevicemodel sizes it: (nr + 7) / 8. */
export function dirtyBitmapSize(nr: number): number {
  return Math.floor((nr + 7) / 8);
}

const views = new WeakMap<Uint8Array, DataView>();
function viewOf(buf: Uint8Array): DataView {
  let v = views.get(buf);
  if (v === undefined) {
    v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    views.set(buf, v);
  }
  return v;
}

// The field's name is passed in pieces and joined only on error: the hot path allocates nothing.
function fieldName(scope: string, index: number, field: string): string {
  return index < 0 ? `${scope}.${field}` : `${scope}[${index}].${field}`;
}

function checkNumber(
  scope: string,
  index: number,
  field: string,
  type: Exclude<CType, 'u64'>,
  value: unknown,
): asserts value is number {
  if (
    typeof value !== 'number' ||
    !Number.isInteger(value) ||
    value < 0 ||
    value > CTYPE_MAX[type]
  ) {
    throw new RangeError(
      `${fieldName(scope, index, field)}: expected an integer in [0, ${CTYPE_MAX[type]}] (${cTypeName(type)}), saw ${describe(value)}`,
    );
  }
}

// Assertions rather than returning the value: a number above 2^30 returned from a call that is not
// inlined is boxed into a fresh HeapNumber, one allocation per field.
function checkBigint(
  scope: string,
  index: number,
  field: string,
  value: unknown,
): asserts value is bigint {
  if (typeof value !== 'bigint' || value < 0n || value > CTYPE_MAX.u64) {
    throw new RangeError(
      `${fieldName(scope, index, field)}: expected a bigint in [0, 2^64-1] (uint64_t), saw ${describe(value)}`,
    );
  }
}

function cTypeName(type: CType): string {
  return type === 'u8'
    ? 'uint8_t'
    : type === 'u16'
      ? 'uint16_t'
      : type === 'u32'
        ? 'uint32_t'
        : 'uint64_t';
}

function describe(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}

function writeField(
  v: DataView,
  at: number,
  field: FieldLayout,
  value: unknown,
  scope: string,
): void {
  switch (field.type) {
    case 'u8':
      checkNumber(scope, -1, field.name, 'u8', value);
      v.setUint8(at, value);
      break;
    case 'u16':
      checkNumber(scope, -1, field.name, 'u16', value);
      v.setUint16(at, value, true);
      break;
    case 'u32':
      checkNumber(scope, -1, field.name, 'u32', value);
      v.setUint32(at, value, true);
      break;
    case 'u64':
      checkBigint(scope, -1, field.name, value);
      v.setBigUint64(at, value, true);
      break;
  }
}

/** Reads one field of a little-endian struct. */
export function readField(v: DataView, at: number, type: CType): number | bigint {
  switch (type) {
    case 'u8':
      return v.getUint8(at);
    case 'u16':
      return v.getUint16(at, true);
    case 'u32':
      return v.getUint32(at, true);
    case 'u64':
      return v.getBigUint64(at, true);
  }
}

function layoutOf(op: unknown): (typeof DM_OPS)[DmOpName] {
  const name = (op as { op?: unknown } | null)?.op;
  if (typeof name !== 'string' || !Object.hasOwn(DM_OPS, name)) {
    throw new TypeError(
      `encodeDmOp: expected op to be one of ${Object.keys(DM_OPS).join(', ')}, saw ${describe(name)}`,
    );
  }
  return DM_OPS[name as DmOpName];
}

/** How many buffers `op` needs and the size of the second one (0 if none). */
export function dmOpBufferSizes(op: DmOp): readonly [first: number, second?: number] {
  if (op.op === 'modified_memory') {
    const n = Array.isArray(op.extents) ? op.extents.length : 0;
    return [SIZEOF.xen_dm_op, n * MODIFIED_MEMORY_EXTENT.size];
  }
  if (op.op === 'track_dirty_vram') {
    // An invalid nr gets an empty bitmap here so that encodeDmOpInto reports the field by name.
    const valid = Number.isInteger(op.nr) && op.nr >= 0 && op.nr <= CTYPE_MAX.u32;
    return [SIZEOF.xen_dm_op, valid ? dirtyBitmapSize(op.nr) : 0];
  }
  return [SIZEOF.xen_dm_op];
}

/**
 * Encodes `op` into caller-provided buffers and returns how many of them the op uses. `bufs[0]`
 * needs 32 bytes; modified_memory needs `bufs[1]` of at least 16 bytes per extent; track_dirty_vram
 * needs `bufs[1]` of at least (nr + 7) / 8 bytes (left untouched: Xen writes the bitmap there).
 * Allocates nothing once each buffer has been seen.
 */
export function encodeDmOpInto(op: DmOp, bufs: readonly Uint8Array[]): number {
  return encodeWith(op, bufs, viewOf);
}

// Fresh buffers get a fresh view instead of an entry in the cache of reused ones.
const freshView = (buf: Uint8Array): DataView =>
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength);

function encodeWith(
  op: DmOp,
  bufs: readonly Uint8Array[],
  view: (buf: Uint8Array) => DataView,
): number {
  const layout = layoutOf(op);
  const name = op.op;
  const head = bufs[0];
  if (head === undefined || head.byteLength < SIZEOF.xen_dm_op) {
    throw new RangeError(
      `${name}: expected bufs[0] of at least ${SIZEOF.xen_dm_op} bytes, saw ${head?.byteLength ?? 'none'}`,
    );
  }
  const v = view(head);
  head.fill(0, 0, SIZEOF.xen_dm_op);
  v.setUint32(0, layout.number, true);
  const record = op as unknown as Readonly<Record<string, unknown>>;
  for (const field of layout.inputs) {
    const value = field.name === 'flags' && record.flags === undefined ? 0 : record[field.name];
    writeField(v, XEN_DM_OP_UNION_OFFSET + field.offset, field, value, name);
  }
  if (op.op === 'modified_memory') {
    const extents = op.extents;
    if (!Array.isArray(extents)) {
      throw new TypeError(`modified_memory.extents: expected an array, saw ${describe(extents)}`);
    }
    checkNumber('modified_memory', -1, 'extents.length', 'u32', extents.length);
    v.setUint32(XEN_DM_OP_UNION_OFFSET, extents.length, true);
    const need = extents.length * MODIFIED_MEMORY_EXTENT.size;
    const body = bufs[1];
    if (body === undefined || body.byteLength < need) {
      throw new RangeError(
        `modified_memory: expected bufs[1] of at least ${need} bytes, saw ${body?.byteLength ?? 'none'}`,
      );
    }
    const ev = view(body);
    for (let i = 0; i < extents.length; i++) {
      const e = extents[i] as ModifiedMemoryExtent;
      const at = i * MODIFIED_MEMORY_EXTENT.size;
      const nr: unknown = e.nr;
      const firstPfn: unknown = e.firstPfn;
      checkNumber('modified_memory.extents', i, 'nr', 'u32', nr);
      checkBigint('modified_memory.extents', i, 'firstPfn', firstPfn);
      ev.setUint32(at, nr, true);
      ev.setUint32(at + 4, 0, true);
      ev.setBigUint64(at + 8, firstPfn, true);
    }
    return 2;
  }
  if (op.op === 'track_dirty_vram') {
    const need = dirtyBitmapSize(op.nr);
    const bitmap = bufs[1];
    if (bitmap === undefined || bitmap.byteLength < need) {
      throw new RangeError(
        `track_dirty_vram: expected bufs[1] of at least ${need} bytes for ${op.nr} frames, saw ${bitmap?.byteLength ?? 'none'}`,
      );
    }
    return 2;
  }
  return 1;
}

/** Encodes `op` into fresh buffers sized exactly as libxendevicemodel sizes them. */
export function encodeDmOp(op: DmOp): EncodedDmOp {
  layoutOf(op);
  const [first, second] = dmOpBufferSizes(op);
  const bufs =
    second === undefined
      ? [new Uint8Array(first)]
      : [new Uint8Array(first), new Uint8Array(second)];
  encodeWith(op, bufs, freshView);
  return { bufs };
}

/**
 * A malformed DM_OP buffer, as seen by a decoder: `errno` is what Xen returns for it and `code`
 * its name, the convention of every error of this package and privcmd-filter.
 */
export class DmOpDecodeError extends Error {
  override readonly name = 'DmOpDecodeError';
  readonly code: string;
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
    this.code = errnoName(errno);
  }
}

/**
 * Decodes the request in `bufs` (the inverse of encodeDmOp). Throws DmOpDecodeError for a buffer
 * too short for its op or an unknown op number. Padding is not checked here (the model does).
 */
export function decodeDmOp(bufs: readonly Uint8Array[]): DmOp {
  const head = bufs[0];
  if (head === undefined || head.byteLength < XEN_DM_OP_UNION_OFFSET) {
    throw new DmOpDecodeError(
      `decodeDmOp: expected bufs[0] of at least ${XEN_DM_OP_UNION_OFFSET} bytes, saw ${head?.byteLength ?? 'none'}`,
      14,
    );
  }
  const v = viewOf(head);
  const number = v.getUint32(0, true);
  const name = DM_OP_NAMES[number];
  if (name === undefined) {
    throw new DmOpDecodeError(`decodeDmOp: expected an op number in 1..20, saw ${number}`, 95);
  }
  const layout = DM_OPS[name];
  if (head.byteLength < XEN_DM_OP_UNION_OFFSET + layout.size) {
    throw new DmOpDecodeError(
      `decodeDmOp: ${name} needs bufs[0] of at least ${XEN_DM_OP_UNION_OFFSET + layout.size} bytes, saw ${head.byteLength}`,
      14,
    );
  }
  const out: Record<string, unknown> = { op: name };
  for (const field of layout.inputs) {
    out[field.name] = readField(v, XEN_DM_OP_UNION_OFFSET + field.offset, field.type);
  }
  if (name === 'modified_memory') {
    const n = v.getUint32(XEN_DM_OP_UNION_OFFSET, true);
    const body = bufs[1];
    if (body === undefined || body.byteLength < n * MODIFIED_MEMORY_EXTENT.size) {
      throw new DmOpDecodeError(
        `decodeDmOp: modified_memory of ${n} extents needs bufs[1] of ${n * MODIFIED_MEMORY_EXTENT.size} bytes, saw ${body?.byteLength ?? 'none'}`,
        22,
      );
    }
    const ev = viewOf(body);
    const extents: ModifiedMemoryExtent[] = [];
    for (let i = 0; i < n; i++) {
      extents.push({ firstPfn: ev.getBigUint64(i * 16 + 8, true), nr: ev.getUint32(i * 16, true) });
    }
    out.extents = extents;
  }
  return out as DmOp;
}

/**
 * Reads what Xen wrote back into `bufs` after a successful DM_OP: the ioreq server id, its gfns
 * and event channel port, the vcpu count, the dirty bitmap (a copy), the modified_memory cursor.
 * Ops without outputs give `{}`.
 */
export function decodeDmOpResult<N extends DmOpName>(
  op: N | { op: N },
  bufs: readonly Uint8Array[],
): DmOpResult<N> {
  const name = (typeof op === 'string' ? op : op.op) as DmOpName;
  const layout = DM_OPS[name];
  if (layout === undefined) {
    throw new TypeError(`decodeDmOpResult: expected a DM_OP name, saw ${describe(name)}`);
  }
  const head = bufs[0];
  if (head === undefined || head.byteLength < SIZEOF.xen_dm_op) {
    throw new RangeError(
      `decodeDmOpResult: expected bufs[0] of at least ${SIZEOF.xen_dm_op} bytes, saw ${head?.byteLength ?? 'none'}`,
    );
  }
  const v = viewOf(head);
  const out: Record<string, unknown> = {};
  for (const field of layout.outputs) {
    out[field.name] = readField(v, XEN_DM_OP_UNION_OFFSET + field.offset, field.type);
  }
  if (name === 'track_dirty_vram') {
    const nr = v.getUint32(XEN_DM_OP_UNION_OFFSET, true);
    const bitmap = bufs[1];
    const size = dirtyBitmapSize(nr);
    if (bitmap === undefined || bitmap.byteLength < size) {
      throw new RangeError(
        `decodeDmOpResult: track_dirty_vram of ${nr} frames expected bufs[1] of ${size} bytes, saw ${bitmap?.byteLength ?? 'none'}`,
      );
    }
    out.dirtyBitmap = bitmap.slice(0, size);
  }
  return out as DmOpResult<N>;
}
