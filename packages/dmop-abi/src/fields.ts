// Reading fields out of DM_OP and privcmd argument bytes for code that must not copy them
// (a policy on the hot path, a trace decoder): little-endian reads with plain byte arithmetic (a
// DataView per request costs more than a whole policy decision), at offsets taken once, at load
// time, from the gcc-checked tables of layout.ts. Nothing here knows an offset of its own.
import { DM_OPS, type DmOpName, MODIFIED_MEMORY_EXTENT, XEN_DM_OP_UNION_OFFSET } from './layout.js';

export function readU8(b: Uint8Array, at: number): number {
  return b[at] as number;
}

export function readU16(b: Uint8Array, at: number): number {
  return (b[at] as number) | ((b[at + 1] as number) << 8);
}

export function readU32(b: Uint8Array, at: number): number {
  return (
    ((b[at] as number) |
      ((b[at + 1] as number) << 8) |
      ((b[at + 2] as number) << 16) |
      ((b[at + 3] as number) << 24)) >>>
    0
  );
}

export function readU64(b: Uint8Array, at: number): bigint {
  const lo = readU32(b, at);
  const hi = readU32(b, at + 4);
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

/**
 * Offset of `field` (its camelCase name in DM_OPS, e.g. `addr` of `inject_msi`) from the start of
 * `struct xen_dm_op`, i.e. in bufs[0]. Throws for a field the op does not have, so a typo fails
 * when the module that asks is loaded.
 */
export function dmOpFieldOffset(op: DmOpName, field: string): number {
  const layout = DM_OPS[op];
  const f = [...layout.inputs, ...layout.outputs].find((x) => x.name === field);
  if (f === undefined) {
    throw new RangeError(
      `dmOpFieldOffset: expected a field of ${layout.struct} (${[...layout.inputs, ...layout.outputs].map((x) => x.name).join(', ')}), got ${field}`,
    );
  }
  return XEN_DM_OP_UNION_OFFSET + f.offset;
}

/** Offset of `field` (`nr` or `firstPfn`) inside one xen_dm_op_modified_memory_extent. */
export function modifiedMemoryExtentOffset(field: 'nr' | 'firstPfn'): number {
  return (MODIFIED_MEMORY_EXTENT.fields.find((x) => x.name === field) as { offset: number }).offset;
}

/** The XEN_DMOP_* number in bufs[0], or undefined when the buffer is shorter than the field. */
export function dmOpNumber(head: Uint8Array | undefined): number | undefined {
  return head !== undefined && head.byteLength >= 4 ? readU32(head, 0) : undefined;
}
