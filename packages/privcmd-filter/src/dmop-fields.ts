/** XEN_DMOP_* op numbers 1..20 (xen/include/public/hvm/dm_op.h), by name. */
export const DM_OP_NAMES = [
  'create_ioreq_server',
  'get_ioreq_server_info',
  'map_io_range_to_ioreq_server',
  'unmap_io_range_from_ioreq_server',
  'set_ioreq_server_state',
  'destroy_ioreq_server',
  'track_dirty_vram',
  'set_pci_intx_level',
  'set_isa_irq_level',
  'set_pci_link_route',
  'modified_memory',
  'set_mem_type',
  'inject_event',
  'inject_msi',
  'map_mem_type_to_ioreq_server',
  'remote_shutdown',
  'relocate_memory',
  'pin_memory_cacheattr',
  'set_irq_level',
  'nr_vcpus',
] as const;

export type DmOpName = (typeof DM_OP_NAMES)[number];

/** sizeof(struct xen_dm_op): op, pad and a 24-byte union of uint64_aligned_t members. */
export const XEN_DM_OP_SIZE = 32;
/** sizeof(struct xen_dm_op_modified_memory_extent). */
export const MODIFIED_MEMORY_EXTENT_SIZE = 16;

/** Name of op number `op`, or undefined outside 1..20. */
export function dmOpName(op: number): DmOpName | undefined {
  return DM_OP_NAMES[op - 1];
}

/** Little-endian reads with plain byte arithmetic: a DataView per request costs more than the whole policy. */
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
