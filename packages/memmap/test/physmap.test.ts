import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { Physmap, PhysmapError, physmapXenstorePath, type Relocation } from '../src/index.js';

// The harness's limits on a busy 2-core CI machine (property runs, gcc, child processes), not
// performance bounds: no assertion here depends on time.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const MiB = 0x10_0000;
const GiB = 0x4000_0000;

function err(fn: () => unknown): PhysmapError {
  try {
    fn();
  } catch (e) {
    if (e instanceof PhysmapError) return e;
    throw e;
  }
  throw new Error('expected a PhysmapError, nothing was thrown');
}

describe('Physmap layout', () => {
  it('splits RAM around the default 256 MiB hole as QEMU xen_ram_init does (HVM_BELOW_4G_RAM_END)', () => {
    const p = new Physmap({ ramBytes: 6 * GiB });
    expect(p.lowmemBytes).toBe(0xf000_0000);
    expect(p.highmemBytes).toBe(6 * GiB - 0xf000_0000);
    expect(p.end).toBe(4 * GiB + p.highmemBytes);
    expect(p.regions()).toEqual([
      { kind: 'ram', name: 'xen.ram.640k', start: 0, size: 0xa0000 },
      { kind: 'vga', name: 'vga.window', start: 0xa0000, size: 0x20000 },
      { kind: 'ram', name: 'xen.ram.lo', start: 0xc0000, size: 0xf000_0000 - 0xc0000 },
      { kind: 'mmio', name: 'mmio.hole', start: 0xf000_0000, size: 0x1000_0000 },
      { kind: 'ram', name: 'xen.ram.hi', start: 4 * GiB, size: 6 * GiB - 0xf000_0000 },
    ]);
  });

  it('keeps all RAM low when it fits below the hole, and honours a larger mmio hole', () => {
    const small = new Physmap({ ramBytes: 512 * MiB });
    expect([small.lowmemBytes, small.highmemBytes]).toEqual([512 * MiB, 0]);
    expect(small.regions().map((r) => r.name)).toEqual([
      'xen.ram.640k',
      'vga.window',
      'xen.ram.lo',
      'mmio.hole',
    ]);
    const big = new Physmap({ ramBytes: 4 * GiB, mmioHoleBytes: 1 * GiB });
    expect([big.lowmemBytes, big.highmemBytes]).toEqual([3 * GiB, 1 * GiB]);
    expect(big.lookup(3 * GiB)?.kind).toBe('mmio');
    expect(big.lookup(4 * GiB)?.name).toBe('xen.ram.hi');
  });

  it('rejects bad layouts with typed errors naming what was expected and seen', () => {
    expect(err(() => new Physmap({ ramBytes: 1000 }))).toMatchObject({
      code: 'MISALIGNED',
      message: expect.stringContaining('0x3e8'),
    });
    expect(err(() => new Physmap({ ramBytes: 0 })).code).toBe('INVALID_ARGUMENT');
    expect(err(() => new Physmap({ ramBytes: -4096 })).code).toBe('INVALID_ARGUMENT');
    expect(err(() => new Physmap({ ramBytes: 4096 })).code).toBe('OUT_OF_RANGE');
    expect(err(() => new Physmap({ ramBytes: GiB, mmioHoleBytes: 64 * MiB }))).toMatchObject({
      code: 'OUT_OF_RANGE',
      message: 'mmioHoleBytes: expected 0x10000000..0xfff40000, got 0x4000000',
    });
    expect(err(() => new Physmap({ ramBytes: 2 ** 52 })).code).toBe('OUT_OF_RANGE');
  });
});

describe('Physmap relocations, lookup and translate', () => {
  const vram: Relocation = {
    startAddr: 0xf000_0000,
    size: 16 * MiB,
    physOffset: 0x1_4000_0000,
    name: 'vga.vram',
  };

  it('translates RAM to itself, a relocation to its RAM address, and the hole to nothing', () => {
    const p = new Physmap({ ramBytes: 5 * GiB });
    p.addRelocation(vram);
    expect(p.translate(0x1234)).toMatchObject({ offset: 0x1234, ramAddr: 0x1234 });
    expect(p.translate(0xf000_1008)).toEqual({
      region: { kind: 'relocated', name: 'vga.vram', start: 0xf000_0000, size: 16 * MiB },
      offset: 0x1008,
      ramAddr: 0x1_4000_1008,
    });
    expect(p.translate(0xf800_0000)).toMatchObject({
      region: { kind: 'mmio' },
      ramAddr: undefined,
    });
    expect(p.translate(0xa0000)).toMatchObject({ region: { kind: 'vga' }, ramAddr: undefined });
    expect(p.physOffsetToGaddr(0x1_4000_0010)).toBe(0xf000_0010);
    expect(p.physOffsetToGaddr(0x5000)).toBe(0x5000);
    expect(p.regionOfGfn(0xf0000).kind).toBe('relocated');
    expect(p.isPopulated(0xf0000)).toBe(true);
    expect(p.isPopulated(0xf1000)).toBe(false);
    expect(p.isPopulated(0xa0)).toBe(false);
    expect(p.gfnsOf(p.regionOfGfn(0x100000))).toEqual({
      first: 0x100000,
      count: (5 * GiB - 0xf000_0000) / 4096,
    });
    expect(p.regions().filter((r) => r.kind === 'mmio')).toEqual([
      { kind: 'mmio', name: 'mmio.hole', start: 0xf100_0000, size: 0x0f00_0000 },
    ]);
  });

  it('refuses overlaps with RAM, with another relocation and shared RAM addresses', () => {
    const p = new Physmap({ ramBytes: 2 * GiB });
    p.addRelocation(vram);
    expect(
      err(() => p.addRelocation({ ...vram, startAddr: GiB, physOffset: 0x2_0000_0000 })),
    ).toMatchObject({
      code: 'OVERLAP',
      message: expect.stringContaining('xen.ram.lo'),
    });
    expect(
      err(() => p.addRelocation({ ...vram, startAddr: 0xf080_0000, physOffset: 0x2_0000_0000 })),
    ).toMatchObject({
      code: 'OVERLAP',
      message: expect.stringContaining('vga.vram [0xf0000000, 0xf1000000)'),
    });
    expect(err(() => p.addRelocation({ ...vram, startAddr: 0xf800_0000 })).code).toBe('OVERLAP');
    expect(err(() => p.addRelocation({ ...vram, startAddr: 0xf800_0001 })).code).toBe('MISALIGNED');
    expect(err(() => p.addRelocation({ ...vram, startAddr: 2 ** 52 - 4096 })).code).toBe(
      'OUT_OF_RANGE',
    );
    expect(p.relocations).toEqual([vram]);
  });

  it('removes the relocation covering an address, and a missing one is NOT_FOUND', () => {
    const p = new Physmap({ ramBytes: 2 * GiB });
    p.addRelocation(vram);
    expect(p.removeRelocation(0xf000_2000)).toEqual(vram);
    expect(p.relocations).toEqual([]);
    expect(err(() => p.removeRelocation(0xf000_0000))).toMatchObject({ code: 'NOT_FOUND' });
    expect(err(() => p.translate(4 * GiB))).toMatchObject({
      code: 'OUT_OF_RANGE',
      message:
        'translate: expected an address below 0x100000000 or in a relocation, got 0x100000000',
    });
    expect(err(() => p.translate(-1)).code).toBe('INVALID_ARGUMENT');
    expect(p.lookup(Number.NaN)).toBeUndefined();
  });

  it('property: regions() tiles [0, end) without gaps or overlaps, and lookup agrees with it', () => {
    fc.assert(
      fc.property(
        arbPhysmapSpec(),
        fc.array(fc.nat({ max: 2 ** 30 }), { maxLength: 20 }),
        (spec, probes) => {
          const p = build(spec);
          const regions = p.regions();
          let cursor = 0;
          for (const r of regions) {
            if (r.start >= p.end) break;
            expect(r.start).toBe(cursor);
            cursor = r.start + r.size;
          }
          expect(cursor).toBe(p.end);
          for (const probe of probes) {
            const gpa = (probe * 4099) % (p.end + 64 * MiB);
            const hit = regions.find((r) => gpa >= r.start && gpa < r.start + r.size);
            expect(p.lookup(gpa)).toEqual(hit);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

interface Spec {
  ramBytes: number;
  mmioHoleBytes: number;
  relocations: Relocation[];
}

/** Physmaps with relocations in the hole, the VGA window and above RAM (some candidates rejected as overlaps). */
function arbPhysmapSpec(): fc.Arbitrary<Spec> {
  const name = fc.option(fc.string({ maxLength: 12 }), { nil: undefined });
  const reloc = fc.record({
    slot: fc.integer({ min: 0, max: 40 }),
    pages: fc.integer({ min: 1, max: 64 }),
    physOffsetPage: fc.integer({ min: 0, max: 2 ** 20 }),
    name,
  });
  return fc
    .record({
      ramMiB: fc.integer({ min: 1, max: 8192 }),
      holeMiB: fc.integer({ min: 256, max: 2048 }),
      relocs: fc.array(reloc, { maxLength: 6 }),
    })
    .map(({ ramMiB, holeMiB, relocs }) => {
      const ramBytes = ramMiB * MiB;
      const mmioHoleBytes = holeMiB * MiB;
      const lowmem = Math.min(ramBytes, 4 * GiB - mmioHoleBytes);
      const top = 4 * GiB + (ramBytes - lowmem);
      const relocations: Relocation[] = relocs.map((r) => {
        const startAddr =
          r.slot === 0 ? 0xa0000 : r.slot % 2 === 0 ? lowmem + r.slot * MiB : top + r.slot * MiB;
        const out = {
          startAddr,
          size: r.pages * 4096,
          physOffset: 2 ** 36 + r.physOffsetPage * 4096,
        };
        return r.name === undefined ? out : { ...out, name: r.name };
      });
      return { ramBytes, mmioHoleBytes, relocations };
    });
}

function build(spec: Spec): Physmap {
  const p = new Physmap({ ramBytes: spec.ramBytes, mmioHoleBytes: spec.mmioHoleBytes });
  for (const r of spec.relocations) {
    try {
      p.addRelocation(r);
    } catch (e) {
      if (!(e instanceof PhysmapError) || e.code !== 'OVERLAP') throw e;
    }
  }
  return p;
}

describe('Physmap JSON', () => {
  it('property: toJSON -> JSON text -> fromJSON is lossless', () => {
    fc.assert(
      fc.property(arbPhysmapSpec(), (spec) => {
        const p = build(spec);
        const back = Physmap.fromJSON(JSON.stringify(p));
        expect(back.toJSON()).toEqual(p.toJSON());
        expect(back.regions()).toEqual(p.regions());
        expect(JSON.stringify(back)).toBe(JSON.stringify(p));
      }),
      { numRuns: 200 },
    );
  });

  it('writes the documented shape', () => {
    const p = new Physmap({ ramBytes: GiB });
    p.addRelocation({
      startAddr: 0xf000_0000,
      size: 0x80_0000,
      physOffset: 0x1_0000_0000,
      name: 'vga.vram',
    });
    expect(JSON.stringify(p)).toBe(
      '{"version":1,"ramBytes":1073741824,"mmioHoleBytes":268435456,"relocations":[{"startAddr":4026531840,"size":8388608,"physOffset":4294967296,"name":"vga.vram"}]}',
    );
  });

  it('rejects bad JSON with BAD_JSON and the reason', () => {
    const good = { version: 1, ramBytes: GiB, mmioHoleBytes: 256 * MiB, relocations: [] };
    expect(err(() => Physmap.fromJSON('{')).code).toBe('BAD_JSON');
    expect(err(() => Physmap.fromJSON(null)).message).toBe(
      'fromJSON: expected an object, got null',
    );
    expect(err(() => Physmap.fromJSON({ ...good, version: 2 })).message).toBe(
      'fromJSON: expected version 1, got 0x2',
    );
    expect(err(() => Physmap.fromJSON({ ...good, extra: 1 })).message).toBe(
      'fromJSON: expected no key "extra"',
    );
    expect(err(() => Physmap.fromJSON({ ...good, relocations: {} })).code).toBe('BAD_JSON');
    expect(err(() => Physmap.fromJSON({ ...good, ramBytes: '1G' }))).toMatchObject({
      code: 'BAD_JSON',
      message: 'fromJSON: ramBytes: expected a non-negative safe integer, got "1G"',
    });
    const overlap = { startAddr: 0xf000_0000, size: 4096, physOffset: 2 ** 33 };
    expect(
      err(() =>
        Physmap.fromJSON({ ...good, relocations: [overlap, { ...overlap, physOffset: 2 ** 34 }] }),
      ).code,
    ).toBe('BAD_JSON');
    expect(
      err(() => Physmap.fromJSON({ ...good, relocations: [{ ...overlap, colour: 'red' }] }))
        .message,
    ).toBe('relocations[0]: expected no key "colour"');
  });
});

describe('Physmap legacy xenstore layout', () => {
  it('writes the keys and %PRIx64 values of QEMU 7.2 xen_save_physmap', () => {
    const p = new Physmap({ ramBytes: GiB });
    p.addRelocation({
      startAddr: 0xf000_0000,
      size: 0x100_0000,
      physOffset: 0x4080_0000,
      name: 'vga.vram',
    });
    p.addRelocation({ startAddr: 0xf100_0000, size: 0x1000, physOffset: 0x4180_0000 });
    expect(p.toXenstore(7)).toEqual([
      { path: '/local/domain/0/device-model/7/physmap/40800000/start_addr', value: 'f0000000' },
      { path: '/local/domain/0/device-model/7/physmap/40800000/size', value: '1000000' },
      { path: '/local/domain/0/device-model/7/physmap/40800000/name', value: 'vga.vram' },
      { path: '/local/domain/0/device-model/7/physmap/41800000/start_addr', value: 'f1000000' },
      { path: '/local/domain/0/device-model/7/physmap/41800000/size', value: '1000' },
    ]);
    expect(physmapXenstorePath(32751)).toBe('/local/domain/0/device-model/32751/physmap');
    expect(err(() => physmapXenstorePath(32752)).code).toBe('INVALID_ARGUMENT');
  });

  it('property: toXenstore -> fromXenstore is lossless, in any entry order', () => {
    fc.assert(
      fc.property(
        arbPhysmapSpec(),
        fc.integer({ min: 1, max: 32751 }),
        fc.integer(),
        (spec, domid, seed) => {
          const p = build(spec);
          const entries = p.toXenstore(domid);
          const shuffled = entries
            .map((e, i) => ({ e, k: Math.imul(i + 1, seed | 1) >>> 7 }))
            .sort((a, b) => a.k - b.k)
            .map((x) => x.e);
          const back = Physmap.fromXenstore(
            { ramBytes: spec.ramBytes, mmioHoleBytes: spec.mmioHoleBytes },
            domid,
            shuffled,
          );
          expect(back.toJSON()).toEqual(p.toJSON());
        },
      ),
      { numRuns: 200 },
    );
  });

  it('accepts upper-case hex as strtoull does, rejects what QEMU would silently skip or misparse', () => {
    const base = '/local/domain/0/device-model/3/physmap';
    const layout = { ramBytes: GiB };
    const ok = Physmap.fromXenstore(layout, 3, [
      { path: `${base}/40800000/start_addr`, value: 'F0000000' },
      { path: `${base}/40800000/size`, value: '1000' },
    ]);
    expect(ok.relocations).toEqual([
      { startAddr: 0xf000_0000, size: 0x1000, physOffset: 0x4080_0000 },
    ]);
    const cases: [string, { path: string; value: string }[], string][] = [
      [
        'missing size',
        [{ path: `${base}/1000/start_addr`, value: 'f0000000' }],
        `${base}/1000: expected size, found only start_addr`,
      ],
      [
        '0x prefix',
        [
          { path: `${base}/1000/start_addr`, value: '0xf0000000' },
          { path: `${base}/1000/size`, value: '1000' },
        ],
        `${base}/1000/start_addr: expected hexadecimal digits (%PRIx64), got "0xf0000000"`,
      ],
      [
        'other domid',
        [{ path: '/local/domain/0/device-model/4/physmap/1000/size', value: '1000' }],
        `entries[0]: expected a path under ${base}/, got "/local/domain/0/device-model/4/physmap/1000/size"`,
      ],
      [
        'unknown key',
        [{ path: `${base}/1000/colour`, value: 'red' }],
        'entries[0]: expected key start_addr, size or name, got "colour"',
      ],
      [
        'bad offset',
        [{ path: `${base}/zz/size`, value: '1000' }],
        `entries[0]: expected ${base}/<hex phys_offset>/{start_addr,size,name}, got "${base}/zz/size"`,
      ],
      [
        'twice',
        [
          { path: `${base}/1000/size`, value: '1000' },
          { path: `${base}/1000/size`, value: '2000' },
        ],
        `entries[1]: ${base}/1000/size given twice`,
      ],
      [
        'misaligned',
        [
          { path: `${base}/1000/start_addr`, value: 'f0000001' },
          { path: `${base}/1000/size`, value: '1000' },
        ],
        'fromXenstore: startAddr: expected a multiple of 4096 (4 KiB frames), got 0xf0000001',
      ],
    ];
    for (const [what, entries, message] of cases) {
      const e = err(() => Physmap.fromXenstore(layout, 3, entries));
      expect({ what, code: e.code, message: e.message }).toEqual({
        what,
        code: 'BAD_XENSTORE',
        message,
      });
    }
  });
});
