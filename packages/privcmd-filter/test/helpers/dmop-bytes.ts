// Builds `struct xen_dm_op` bytes at the offsets of /usr/include/xen/hvm/dm_op.h (checked against
// gcc's offsetof in policy.test.ts), for tests only: the ABI codec is dmop-abi's.
type Field = readonly [offset: number, width: 1 | 2 | 4 | 8, value: number | bigint];

export function dmOp(op: number, fields: readonly Field[] = []): Uint8Array {
  const buf = new Uint8Array(32);
  const v = new DataView(buf.buffer);
  v.setUint32(0, op, true);
  for (const [off, width, value] of fields) {
    const at = 8 + off;
    if (width === 1) v.setUint8(at, Number(value));
    else if (width === 2) v.setUint16(at, Number(value), true);
    else if (width === 4) v.setUint32(at, Number(value), true);
    else v.setBigUint64(at, BigInt(value), true);
  }
  return buf;
}

export function extents(list: readonly (readonly [nr: number, firstPfn: bigint])[]): Uint8Array {
  const buf = new Uint8Array(16 * list.length);
  const v = new DataView(buf.buffer);
  list.forEach(([nr, pfn], i) => {
    v.setUint32(i * 16, nr, true);
    v.setBigUint64(i * 16 + 8, pfn, true);
  });
  return buf;
}

export const OP = {
  create_ioreq_server: 1,
  get_ioreq_server_info: 2,
  map_io_range_to_ioreq_server: 3,
  unmap_io_range_from_ioreq_server: 4,
  set_ioreq_server_state: 5,
  destroy_ioreq_server: 6,
  track_dirty_vram: 7,
  set_pci_intx_level: 8,
  set_isa_irq_level: 9,
  set_pci_link_route: 10,
  modified_memory: 11,
  set_mem_type: 12,
  inject_event: 13,
  inject_msi: 14,
  map_mem_type_to_ioreq_server: 15,
  remote_shutdown: 16,
  relocate_memory: 17,
  pin_memory_cacheattr: 18,
  set_irq_level: 19,
  nr_vcpus: 20,
} as const;
