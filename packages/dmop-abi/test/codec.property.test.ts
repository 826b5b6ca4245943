import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type DmOp,
  type DmOpName,
  decodeDmOp,
  decodeDmOpResult,
  encodeDmOp,
  encodeDmOpInto,
} from '../src/index.js';
import { CTYPE_MAX, DM_OPS, type FieldLayout, SIZEOF } from '../src/layout.js';

const fieldArb = (f: FieldLayout): fc.Arbitrary<number | bigint> =>
  f.type === 'u64'
    ? fc.bigInt({ min: 0n, max: CTYPE_MAX.u64 })
    : fc.integer({ min: 0, max: CTYPE_MAX[f.type] });

function opArb(name: DmOpName): fc.Arbitrary<DmOp> {
  const layout = DM_OPS[name];
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of layout.inputs) fields[f.name] = fieldArb(f);
  if (name === 'modified_memory') {
    fields.extents = fc.array(
      fc.record({
        firstPfn: fc.bigInt({ min: 0n, max: CTYPE_MAX.u64 }),
        nr: fc.integer({ min: 0, max: CTYPE_MAX.u32 }),
      }),
      { maxLength: 8 },
    );
  }
  if (name === 'track_dirty_vram') fields.nr = fc.integer({ min: 0, max: 4096 });
  return fc.record(fields).map((r) => ({ op: name, ...r }) as DmOp);
}

const names = Object.keys(DM_OPS) as DmOpName[];

describe('codec properties (fast-check)', () => {
  it.each(names)(
    '%s: decodeDmOp(encodeDmOp(op)) is op, and encodeDmOpInto writes the same bytes',
    (name) => {
      fc.assert(
        fc.property(opArb(name), (op) => {
          const { bufs } = encodeDmOp(op);
          expect(decodeDmOp(bufs)).toEqual(op);
          const reused = [
            new Uint8Array(SIZEOF.xen_dm_op).fill(0xee),
            new Uint8Array(bufs[1]?.byteLength ?? 0),
          ];
          const used = encodeDmOpInto(op, reused);
          expect(used).toBe(bufs.length);
          expect(reused[0]).toEqual(bufs[0]);
          if (name === 'modified_memory') expect(reused[1]).toEqual(bufs[1]);
        }),
        { numRuns: 60 },
      );
    },
  );

  it.each(names.filter((n) => DM_OPS[n].outputs.length > 0))(
    '%s: decodeDmOpResult reads back every output field written at its offset',
    (name) => {
      const layout = DM_OPS[name];
      const outputs: Record<string, fc.Arbitrary<unknown>> = {};
      for (const f of layout.outputs) outputs[f.name] = fieldArb(f);
      fc.assert(
        fc.property(fc.record(outputs), (values) => {
          const head = new Uint8Array(SIZEOF.xen_dm_op);
          const v = new DataView(head.buffer);
          for (const f of layout.outputs) {
            const at = 8 + f.offset;
            const x = values[f.name];
            if (f.type === 'u8') v.setUint8(at, x as number);
            else if (f.type === 'u16') v.setUint16(at, x as number, true);
            else if (f.type === 'u32') v.setUint32(at, x as number, true);
            else v.setBigUint64(at, x as bigint, true);
          }
          expect(decodeDmOpResult(name, [head, new Uint8Array(0)])).toEqual(values);
        }),
        { numRuns: 40 },
      );
    },
  );

  /** Values outside a C type: one past the maximum, negative, fractional, the wrong JS type. */
  const outOfRange = (f: FieldLayout): fc.Arbitrary<unknown> =>
    f.type === 'u64'
      ? fc.oneof(
          fc.bigInt({ min: CTYPE_MAX.u64 + 1n, max: CTYPE_MAX.u64 * 4n }),
          fc.bigInt({ min: -(2n ** 70n), max: -1n }),
          fc.integer(),
        )
      : fc.oneof(
          fc.integer({ min: CTYPE_MAX[f.type] + 1, max: Number.MAX_SAFE_INTEGER }),
          fc.integer({ min: Number.MIN_SAFE_INTEGER, max: -1 }),
          fc.double({ noInteger: true }),
          fc.bigInt({ min: 0n, max: 10n }),
        );

  const fieldsOf = names.flatMap((name) => DM_OPS[name].inputs.map((f) => [name, f] as const));
  it.each(fieldsOf.map(([n, f]) => [`${n}.${f.name}`, n, f] as const))(
    '%s out of its C type range is a RangeError naming the field',
    (label, name, field) => {
      fc.assert(
        fc.property(opArb(name), outOfRange(field), (op, bad) => {
          const broken = { ...op, [field.name]: bad } as DmOp;
          expect(() => encodeDmOp(broken)).toThrow(RangeError);
          expect(() => encodeDmOp(broken)).toThrow(`${label}: expected`);
        }),
        { numRuns: 25 },
      );
    },
  );

  it('modified_memory extent fields out of range are RangeErrors naming the extent', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2 ** 32, max: 2 ** 40 }),
        fc.bigInt({ min: 2n ** 64n, max: 2n ** 66n }),
        (nr, pfn) => {
          expect(() =>
            encodeDmOp({ op: 'modified_memory', extents: [{ firstPfn: 0n, nr }] }),
          ).toThrow('modified_memory.extents[0].nr: expected');
          expect(() =>
            encodeDmOp({
              op: 'modified_memory',
              extents: [
                { firstPfn: 1n, nr: 1 },
                { firstPfn: pfn, nr: 1 },
              ],
            }),
          ).toThrow('modified_memory.extents[1].firstPfn: expected');
        },
      ),
    );
  });

  it('an unknown op is a TypeError listing the valid names', () => {
    expect(() => encodeDmOp({ op: 'no_such_op' } as unknown as DmOp)).toThrow(
      /expected op to be one of create_ioreq_server/,
    );
  });

  it('a buffer too small for the op is a RangeError saying what was expected and seen', () => {
    expect(() => encodeDmOpInto({ op: 'nr_vcpus' }, [new Uint8Array(31)])).toThrow(
      'nr_vcpus: expected bufs[0] of at least 32 bytes, saw 31',
    );
    expect(() =>
      encodeDmOpInto({ op: 'track_dirty_vram', firstPfn: 0n, nr: 70 }, [
        new Uint8Array(32),
        new Uint8Array(8),
      ]),
    ).toThrow('track_dirty_vram: expected bufs[1] of at least 9 bytes for 70 frames, saw 8');
  });

  it('64-bit values above 2^53 survive exactly', () => {
    const addr = 2n ** 64n - 3n;
    const { bufs } = encodeDmOp({ op: 'inject_msi', addr, data: 1 });
    expect(decodeDmOp(bufs)).toEqual({ op: 'inject_msi', addr, data: 1 });
  });
});
