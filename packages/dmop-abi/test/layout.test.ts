import { describe, expect, it } from 'vitest';
import * as abi from '../src/index.js';
import {
  DM_OPS,
  MODIFIED_MEMORY_EXTENT,
  PRIVCMD_LAYOUT,
  SIZEOF,
  XEN_DM_OP_UNION_OFFSET,
} from '../src/layout.js';
import { loadLayout } from './helpers.js';

const gcc = loadLayout();
const struct = (name: string) => {
  const s = gcc.structs[`struct ${name}`];
  if (s === undefined) throw new Error(`gcc layout has no struct ${name}`);
  return s;
};

describe('layout module equals gcc sizeof/offsetof over Debian libxen-dev headers', () => {
  it('struct xen_dm_op is 32 bytes with the union at offset 8', () => {
    expect(struct('xen_dm_op').size).toBe(SIZEOF.xen_dm_op);
    expect(struct('xen_dm_op').fields.u).toEqual([XEN_DM_OP_UNION_OFFSET, 24]);
  });

  it.each(Object.entries(DM_OPS))(
    '%s: size, every field offset and width, every pad',
    (_, layout) => {
      const s = struct(layout.struct);
      expect(layout.size).toBe(s.size);
      const width = { u8: 1, u16: 2, u32: 4, u64: 8 } as const;
      const mine: Record<string, [number, number]> = {};
      for (const f of [...layout.inputs, ...layout.outputs])
        mine[f.cName] = [f.offset, width[f.type]];
      for (const [cName, [offset, size]] of Object.entries(s.fields)) {
        if (cName.startsWith('pad') || cName === 'opaque') continue;
        expect(mine[cName], `${layout.struct}.${cName}`).toEqual([offset, size]);
      }
      // Pads: every byte gcc assigns to a pad* field is covered by the layout's pads, and nothing else.
      const gccPad = Object.entries(s.fields)
        .filter(([n]) => n.startsWith('pad'))
        .flatMap(([, [o, n]]) => Array.from({ length: n }, (_x, i) => o + i));
      const myPad = layout.pads.flatMap(([o, n]) => Array.from({ length: n }, (_x, i) => o + i));
      expect(myPad.sort((a, b) => a - b)).toEqual(gccPad.sort((a, b) => a - b));
    },
  );

  it('covers every struct of dm_op.h that the union holds', () => {
    const mine = new Set(Object.values(DM_OPS).map((l) => `struct ${l.struct}`));
    const gccOps = Object.keys(gcc.structs).filter(
      (n) =>
        n.startsWith('struct xen_dm_op_') &&
        n !== 'struct xen_dm_op_buf' &&
        n !== 'struct xen_dm_op_modified_memory_extent',
    );
    expect([...mine].sort()).toEqual(gccOps.sort());
  });

  it('struct xen_dm_op_modified_memory_extent', () => {
    const s = struct('xen_dm_op_modified_memory_extent');
    expect(MODIFIED_MEMORY_EXTENT.size).toBe(s.size);
    expect(MODIFIED_MEMORY_EXTENT.fields.map((f) => [f.cName, f.offset])).toEqual([
      ['nr', s.fields.nr?.[0]],
      ['first_pfn', s.fields.first_pfn?.[0]],
    ]);
  });

  it.each(Object.entries(PRIVCMD_LAYOUT))('%s: size and field offsets', (name, fields) => {
    const s = struct(name);
    expect(SIZEOF[name as keyof typeof SIZEOF]).toBe(s.size);
    expect(fields).toEqual(Object.fromEntries(Object.entries(s.fields).map(([k, [o]]) => [k, o])));
  });

  it('every IOCTL_PRIVCMD_* and IOCTL_EVTCHN_* number equals what gcc computes', () => {
    const mine = abi as unknown as Record<string, unknown>;
    for (const [name, value] of Object.entries(gcc.ioctls)) expect(mine[name], name).toBe(value);
  });

  it('every constant equals the header value', () => {
    const mine = abi as unknown as Record<string, unknown>;
    for (const [name, value] of Object.entries(gcc.constants)) expect(mine[name], name).toBe(value);
  });

  it('XEN_DMOP_PCI_SBDF packs like the C macro, unsigned', () => {
    expect(abi.XEN_DMOP_PCI_SBDF(0xabcd, 0xef, 0x1f, 7)).toBe(0xabcdefff);
    expect(abi.XEN_DMOP_PCI_SBDF(0, 0, 1, 2)).toBe(0x0a);
  });
});
