import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  ForeignMemoryError,
  InMemoryForeignMemory,
  MapCache,
  MapCacheError,
  Physmap,
  PhysmapError,
} from '../src/index.js';

// The harness's limits on a busy 2-core CI machine (property runs, gcc, child processes), not
// performance bounds: no assertion here depends on time.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const hexString = fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), maxLength: 18 });

/** Runs fn; anything thrown must be an instance of `type`. */
function onlyTyped(type: new (...a: never[]) => Error, fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof type)) throw new Error(`expected only ${type.name}, got ${String(e)}`);
    expect((e as Error).message.length).toBeGreaterThan(10);
  }
}

describe('bad input gets a typed error and loses nothing', () => {
  it('property: Physmap.fromJSON of anything returns a physmap or throws PhysmapError', () => {
    const near = fc.record({
      version: fc.oneof(fc.constant(1), fc.anything()),
      ramBytes: fc.oneof(fc.constant(0x4000_0000), fc.anything()),
      mmioHoleBytes: fc.oneof(fc.constant(0x1000_0000), fc.anything()),
      relocations: fc.oneof(
        fc.array(
          fc.record({
            startAddr: fc.oneof(fc.constant(0xf000_0000), fc.anything()),
            size: fc.oneof(fc.constant(4096), fc.anything()),
            physOffset: fc.oneof(fc.constant(2 ** 33), fc.anything()),
            name: fc.anything(),
          }),
        ),
        fc.anything(),
      ),
    });
    fc.assert(
      fc.property(fc.oneof(fc.anything(), near, fc.string(), fc.json()), (input) => {
        onlyTyped(PhysmapError, () => Physmap.fromJSON(input));
      }),
      { numRuns: 500 },
    );
  });

  it('property: Physmap.fromXenstore of arbitrary entries returns a physmap or throws PhysmapError', () => {
    const base = '/local/domain/0/device-model/3/physmap';
    const entry = fc.record({
      path: fc.oneof(
        fc
          .tuple(hexString, fc.constantFrom('start_addr', 'size', 'name', 'x', ''))
          .map(([o, k]) => `${base}/${o}/${k}`),
        fc.string(),
      ),
      value: fc.oneof(hexString, fc.string()),
    });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 8 }), (entries) => {
        onlyTyped(PhysmapError, () => Physmap.fromXenstore({ ramBytes: 0x4000_0000 }, 3, entries));
      }),
      { numRuns: 500 },
    );
  });

  it('property: a refused addRelocation leaves the physmap as it was', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            s: fc.integer({ min: 0, max: 0x2_0000 }),
            n: fc.integer({ min: 0, max: 64 }),
            o: fc.nat(0x1000),
          }),
        ),
        (relocs) => {
          const p = new Physmap({ ramBytes: 0x4000_0000 });
          for (const r of relocs) {
            const before = JSON.stringify(p);
            try {
              p.addRelocation({
                startAddr: r.s * 4096,
                size: r.n * 4096,
                physOffset: 2 ** 34 + r.o * 4096,
              });
            } catch (e) {
              expect(e).toBeInstanceOf(PhysmapError);
              expect(JSON.stringify(p)).toBe(before);
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('property: MapCache.translate/unlock of arbitrary values throw only MapCacheError and keep the cache consistent', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.anything(), fc.anything(), fc.boolean()), { maxLength: 10 }),
        (calls) => {
          const fm = new InMemoryForeignMemory({ domid: 1, frames: 64 });
          const cache = new MapCache({
            foreignMemory: fm,
            domid: 1,
            bucketShift: 12,
            maxBytes: 8 * 4096,
          });
          for (const [gpa, size, lock] of calls) {
            onlyTyped(MapCacheError, () => cache.translate(gpa as number, size as number, lock));
            onlyTyped(MapCacheError, () => cache.unlock(gpa as Uint8Array));
          }
          expect(fm.live).toBe(cache.stats.entries);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('property: ForeignMemory.map of arbitrary arguments throws only ForeignMemoryError', () => {
    const fm = new InMemoryForeignMemory({ domid: 1, frames: 64 });
    fc.assert(
      fc.property(
        fc.anything(),
        fc.oneof(fc.anything(), fc.array(fc.anything())),
        fc.anything(),
        (d, g, p) => {
          onlyTyped(ForeignMemoryError, () => fm.map(d as number, g as number[], p as number));
        },
      ),
      { numRuns: 300 },
    );
    expect(fm.live).toBe(0);
  });

  it('a frame populated after a failed translate is mapped on the next request (the stale bucket is remapped)', () => {
    const populated = new Set<number>([0, 1, 2]);
    const fm = new InMemoryForeignMemory({
      domid: 1,
      frames: 16,
      isPopulated: (g) => populated.has(g),
    });
    const cache = new MapCache({
      foreignMemory: fm,
      domid: 1,
      bucketShift: 14,
      maxBytes: 4 * 16384,
    });
    expect(() => cache.translate(3 * 4096, 8)).toThrowError(
      expect.objectContaining({ code: 'BAD_FRAME', gfn: 3, frameError: -22 }),
    );
    populated.add(3);
    expect(cache.translate(3 * 4096, 8).byteLength).toBe(8);
    expect(cache.stats).toMatchObject({ misses: 2, hits: 0, entries: 1, evictions: 0 });
    expect(fm.live).toBe(1);
  });
});
