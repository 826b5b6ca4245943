import { describe, expect, it, vi } from 'vitest';
import {
  type ForeignMemory,
  ForeignMemoryError,
  InMemoryForeignMemory,
  MapCache,
  MapCacheError,
} from '../src/index.js';

// The harness's limits on a busy 2-core CI machine (property runs, gcc, child processes), not
// performance bounds: no assertion here depends on time.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const MiB = 0x10_0000;

function setup(maxBuckets = 4) {
  const fm = new InMemoryForeignMemory({ domid: 3, frames: 8 * 256 });
  const cache = new MapCache({ foreignMemory: fm, domid: 3, maxBytes: maxBuckets * MiB });
  return { fm, cache };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof MapCacheError ? e.code : `not a MapCacheError: ${String(e)}`;
  }
  return undefined;
}

describe('MapCache', () => {
  it('defaults to QEMU 64-bit values: 1 MiB buckets (MCACHE_BUCKET_SHIFT 20), 32 GiB cap', () => {
    const fm = new InMemoryForeignMemory({ domid: 1, frames: 16 });
    const cache = new MapCache({ foreignMemory: fm, domid: 1 });
    expect([cache.bucketShift, cache.bucketSize, cache.maxBytes]).toEqual([20, MiB, 2 ** 35]);
  });

  it('maps whole buckets, hits the same bucket, and returns the same view for the same range', () => {
    const { fm, cache } = setup();
    fm.memory[0x1234] = 7;
    const a = cache.translate(0x1234, 4);
    expect(a[0]).toBe(7);
    expect(cache.translate(0x1234, 4)).toBe(a);
    expect(cache.translate(0x8_0000, 16).byteLength).toBe(16);
    expect(cache.stats).toEqual({
      hits: 2,
      misses: 1,
      evictions: 0,
      invalidations: 0,
      mappedBytes: MiB,
      entries: 1,
      lockedEntries: 0,
    });
    // A range over a bucket boundary is one 2-bucket entry keyed at its first bucket.
    cache.translate(MiB - 2, 4);
    expect(cache.entries()).toEqual([
      { gpa: 0, size: MiB, locks: 0 },
      { gpa: 0, size: 2 * MiB, locks: 0 },
    ]);
    expect(fm.live).toBe(2);
  });

  it('evicts the least recently used unlocked entry under the cap, never a locked one', () => {
    const { fm, cache } = setup(2);
    const locked = cache.translate(0, 8, true);
    cache.translate(MiB, 8);
    cache.translate(2 * MiB, 8); // evicts bucket 1, the only unlocked one
    expect(cache.entries()).toEqual([
      { gpa: 0, size: MiB, locks: 1 },
      { gpa: 2 * MiB, size: MiB, locks: 0 },
    ]);
    expect(cache.stats.evictions).toBe(1);
    expect(codeOf(() => cache.translate(3 * MiB, 2 * MiB))).toBe('FULL');
    expect(codeOf(() => cache.translate(0, 3 * MiB))).toBe('TOO_LARGE');
    // Nothing was lost by the refused requests.
    expect(cache.entries().map((e) => e.gpa)).toEqual([0, 2 * MiB]);
    cache.unlock(locked);
    expect(fm.live).toBe(2);
  });

  it('unlock without lock, twice, or of a foreign view is NOT_LOCKED with a clear message', () => {
    const { cache } = setup();
    const v = cache.translate(0, 8);
    expect(() => cache.unlock(v)).toThrowError(
      'MapCache.unlock: expected a view returned by translate(gpa, size, true) and still locked, got a 8-byte Uint8Array not locked in this mapcache',
    );
    const l = cache.translate(0, 8, true);
    expect(l).toBe(v);
    cache.unlock(l);
    expect(codeOf(() => cache.unlock(l))).toBe('NOT_LOCKED');
  });

  it('counts locks per view: two locks of one range need two unlocks', () => {
    const { cache } = setup();
    const a = cache.translate(0x100, 8, true);
    const b = cache.translate(0x100, 8, true);
    expect(b).toBe(a);
    expect(cache.entries()[0]?.locks).toBe(2);
    cache.unlock(a);
    cache.unlock(a);
    expect(cache.entries()[0]?.locks).toBe(0);
    expect(codeOf(() => cache.unlock(a))).toBe('NOT_LOCKED');
  });

  it('invalidate() unmaps unlocked entries and keeps locked ones mapped', () => {
    const { fm, cache } = setup();
    const locked = cache.translate(0, 8, true);
    cache.translate(MiB, 8);
    expect(cache.invalidate()).toEqual({ unmapped: 1, keptLocked: 1 });
    expect(cache.entries()).toEqual([{ gpa: 0, size: MiB, locks: 1 }]);
    expect(fm.live).toBe(1);
    locked[0] = 9;
    expect(fm.memory[0]).toBe(9);
    cache.unlock(locked);
    expect(cache.stats.invalidations).toBe(1);
  });

  it('withMapping unlocks after the callback returns, throws, resolves or rejects', async () => {
    const { cache } = setup();
    const locks = () => cache.entries().reduce((n, e) => n + e.locks, 0);
    expect(
      cache.withMapping(0, 4, (b) => {
        b.fill(5);
        return locks();
      }),
    ).toBe(1);
    expect(locks()).toBe(0);
    expect(() =>
      cache.withMapping(0, 4, () => {
        throw new RangeError('boom');
      }),
    ).toThrowError(RangeError);
    expect(locks()).toBe(0);
    const pending = cache.withMapping(0, 4, async (b) => {
      await new Promise((r) => setImmediate(r));
      return b[0];
    });
    expect(locks()).toBe(1);
    await expect(pending).resolves.toBe(5);
    expect(locks()).toBe(0);
    await expect(
      cache.withMapping(0, 4, async () => {
        throw new Error('async boom');
      }),
    ).rejects.toThrowError('async boom');
    expect(locks()).toBe(0);
  });

  it('rejects bad arguments with INVALID_ARGUMENT and a closed cache with CLOSED', () => {
    const { fm, cache } = setup();
    for (const [gpa, size] of [
      [-1, 1],
      [0, 0],
      [0.5, 1],
      [2 ** 52, 1],
      [Number.NaN, 1],
    ] as const) {
      expect({ gpa, size, code: codeOf(() => cache.translate(gpa, size)) }).toEqual({
        gpa,
        size,
        code: 'INVALID_ARGUMENT',
      });
    }
    expect(codeOf(() => new MapCache({ foreignMemory: fm, domid: 3, bucketShift: 11 }))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(codeOf(() => new MapCache({ foreignMemory: fm, domid: 3, maxBytes: MiB + 1 }))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(codeOf(() => new MapCache({ foreignMemory: fm, domid: 40000 }))).toBe(
      'INVALID_ARGUMENT',
    );
    const locked = cache.translate(0, 1, true);
    cache.close();
    expect(locked.byteLength).toBe(1);
    expect(fm.live).toBe(0);
    expect(codeOf(() => cache.translate(0, 1))).toBe('CLOSED');
  });

  it('a backend failure is MAP_FAILED with the backend error as cause, and nothing is cached', () => {
    const failing: ForeignMemory = {
      map: () => {
        throw new ForeignMemoryError('MAP_FAILED', 'mmap: ENOMEM', 12);
      },
      close: () => {},
    };
    const cache = new MapCache({ foreignMemory: failing, domid: 2, maxBytes: MiB });
    let caught: unknown;
    try {
      cache.translate(0, 1);
    } catch (e) {
      caught = e;
    }
    expect(caught).toMatchObject({
      code: 'MAP_FAILED',
      message: 'MapCache.translate: mapping 256 frames at gfn 0 failed (MAP_FAILED: mmap: ENOMEM)',
    });
    expect((caught as Error).cause).toBeInstanceOf(ForeignMemoryError);
    expect(cache.stats).toMatchObject({ misses: 1, entries: 0, mappedBytes: 0 });
  });
});

describe('InMemoryForeignMemory', () => {
  it('shares bytes between mappings of one frame and reports unpopulated frames as -EINVAL', () => {
    const fm = new InMemoryForeignMemory({ domid: 4, frames: 4, isPopulated: (g) => g !== 2 });
    const a = fm.map(4, [1, 2, 3], 3);
    const b = fm.map(4, [3], 1);
    a.bytes[2 * 4096] = 0x5a;
    expect(b.bytes[0]).toBe(0x5a);
    expect(Array.from(a.errors)).toEqual([0, -22, 0]);
    a.unmap();
    expect(a.bytes.byteLength).toBe(0);
    expect(() => a.unmap()).toThrowError(expect.objectContaining({ code: 'ALREADY_UNMAPPED' }));
    expect(() => fm.map(4, [0, 2], 1)).toThrowError(
      expect.objectContaining({ code: 'NONCONTIGUOUS' }),
    );
    expect(() => fm.map(5, [0], 1)).toThrowError(
      expect.objectContaining({
        code: 'WRONG_DOMAIN',
        message:
          'InMemoryForeignMemory.map: expected domid 4 (the handle is restricted to it), got 5',
      }),
    );
    expect(() => fm.map(4, [2 ** 40], 1)).toThrowError(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => fm.map(4, [4 + 0x4000], 1)).toThrowError(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    fm.close();
    expect(() => fm.map(4, [0], 1)).toThrowError(expect.objectContaining({ code: 'CLOSED' }));
  });
});
