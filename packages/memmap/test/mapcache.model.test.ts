import { IOCTL_PRIVCMD_MMAPBATCH_V2 } from '@xen-depriv/dmop-abi';
import * as sys from '@xen-depriv/sys';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  type ForeignMemory,
  InMemoryForeignMemory,
  MapCache,
  MapCacheError,
  MemfdForeignMemory,
  PrivcmdForeignMemory,
  type PrivcmdMapIo,
} from '../src/index.js';

// The harness's limits on a busy 2-core CI machine (property runs, gcc, child processes), not
// performance bounds: no assertion here depends on time.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const PAGE = 4096;

/**
 * The reference model: a list of entries in insertion order, each keyed by (first bucket,
 * size in buckets) with a lock count and a last-use tick; a request hits the first entry with
 * its key when every frame of the range exists in the guest; on a miss, unlocked entries of the
 * same key are dropped, the least recently used unlocked entries are evicted until the new one
 * fits under the cap, and the entry stays cached even when a frame of the range is missing.
 */
interface ModelEntry {
  index: number;
  size: number;
  locks: number;
  lastUse: number;
}

class ModelCache {
  entries: ModelEntry[] = [];
  hits = 0;
  misses = 0;
  evictions = 0;
  invalidations = 0;
  mappedBytes = 0;
  tick = 0;
  constructor(
    readonly bucket: number,
    readonly maxBytes: number,
    readonly frameExists: (gfn: number) => boolean,
  ) {}

  rangeValid(gpa: number, size: number): boolean {
    for (let g = Math.floor(gpa / PAGE); g < Math.ceil((gpa + size) / PAGE); g++)
      if (!this.frameExists(g)) return false;
    return true;
  }

  translate(gpa: number, size: number, lock: boolean): { entry: ModelEntry } | { error: string } {
    const index = Math.floor(gpa / this.bucket);
    const cacheSize = Math.ceil((gpa - index * this.bucket + size) / this.bucket) * this.bucket;
    const valid = this.rangeValid(gpa, size);
    let entry = valid
      ? this.entries.find((e) => e.index === index && e.size === cacheSize)
      : undefined;
    if (entry) this.hits++;
    else {
      this.misses++;
      if (cacheSize > this.maxBytes) return { error: 'TOO_LARGE' };
      for (const e of this.entries.filter(
        (e) => e.index === index && e.size === cacheSize && e.locks === 0,
      ))
        this.drop(e);
      const locked = this.entries.filter((e) => e.locks > 0).reduce((n, e) => n + e.size, 0);
      if (locked + cacheSize > this.maxBytes) return { error: 'FULL' };
      while (this.mappedBytes + cacheSize > this.maxBytes) {
        const victim = this.entries
          .filter((e) => e.locks === 0)
          .sort((a, b) => a.lastUse - b.lastUse)[0];
        if (victim === undefined) throw new Error('model: no victim although locked bytes fit');
        this.drop(victim);
        this.evictions++;
      }
      entry = { index, size: cacheSize, locks: 0, lastUse: 0 };
      this.entries.push(entry);
      this.mappedBytes += cacheSize;
      if (!valid) return { error: 'BAD_FRAME' };
    }
    entry.lastUse = ++this.tick;
    if (lock) entry.locks++;
    return { entry };
  }

  drop(e: ModelEntry): void {
    if (e.locks > 0) throw new Error('model: a locked entry would be dropped');
    this.entries.splice(this.entries.indexOf(e), 1);
    this.mappedBytes -= e.size;
  }

  invalidate(): void {
    for (const e of this.entries.slice()) if (e.locks === 0) this.drop(e);
    this.invalidations++;
  }
}

type Op =
  | { kind: 'translate'; gpa: number; size: number; lock: boolean }
  | { kind: 'unlock'; pick: number }
  | { kind: 'unlockForeign' }
  | { kind: 'invalidate' }
  | { kind: 'withMapping'; gpa: number; size: number; throws: boolean };

interface World {
  bucketShift: number;
  maxBuckets: number;
  frames: number;
  holes: number[];
  ops: Op[];
}

function arbWorld(maxOps: number): fc.Arbitrary<World> {
  return fc
    .record({
      bucketShift: fc.integer({ min: 12, max: 14 }),
      maxBuckets: fc.integer({ min: 1, max: 6 }),
      frames: fc.integer({ min: 8, max: 48 }),
      holes: fc.uniqueArray(fc.nat({ max: 47 }), { maxLength: 4 }),
    })
    .chain((w) => {
      const bucket = 2 ** w.bucketShift;
      const span = w.frames * PAGE + 2 * bucket;
      const range = fc.record({
        gpa: fc.nat({ max: span - 1 }),
        size: fc.integer({ min: 1, max: 3 * bucket }),
      });
      const op: fc.Arbitrary<Op> = fc.oneof(
        {
          weight: 8,
          arbitrary: fc
            .record({ kind: fc.constant('translate' as const), lock: fc.boolean() })
            .chain((o) => range.map((r) => ({ ...o, ...r }))),
        },
        {
          weight: 4,
          arbitrary: fc.record({ kind: fc.constant('unlock' as const), pick: fc.nat() }),
        },
        { weight: 1, arbitrary: fc.constant({ kind: 'unlockForeign' as const }) },
        { weight: 1, arbitrary: fc.constant({ kind: 'invalidate' as const }) },
        {
          weight: 2,
          arbitrary: fc
            .record({ kind: fc.constant('withMapping' as const), throws: fc.boolean() })
            .chain((o) => range.map((r) => ({ ...o, ...r }))),
        },
      );
      return fc.array(op, { minLength: 1, maxLength: maxOps }).map((ops) => ({ ...w, ops }));
    });
}

interface Backend {
  fm: ForeignMemory & { live: number };
  /** Guest memory as the hypervisor sees it; undefined when the backend's mappings are not shared memory. */
  read: ((gpa: number, length: number) => Uint8Array) | undefined;
  close(): void;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    if (e instanceof MapCacheError) return e.code;
    throw e;
  }
}

function runWorld(
  world: World,
  makeBackend: (frames: number, exists: (g: number) => boolean) => Backend,
): void {
  const holes = new Set(world.holes);
  const exists = (g: number) => g < world.frames && !holes.has(g);
  const backend = makeBackend(world.frames, (g) => !holes.has(g));
  const bucket = 2 ** world.bucketShift;
  const cache = new MapCache({
    foreignMemory: backend.fm,
    domid: 5,
    bucketShift: world.bucketShift,
    maxBytes: world.maxBuckets * bucket,
  });
  const model = new ModelCache(bucket, world.maxBuckets * bucket, exists);
  /** Every view a lock returned, with the locks the model says it still holds. */
  const handles: { view: Uint8Array; gpa: number; size: number; entry: ModelEntry }[] = [];
  const held = new Map<Uint8Array, number>();
  let step = 0;
  const check = (where: string) => {
    const s = cache.stats;
    expect({ where, ...s }).toEqual({
      where,
      hits: model.hits,
      misses: model.misses,
      evictions: model.evictions,
      invalidations: model.invalidations,
      mappedBytes: model.mappedBytes,
      entries: model.entries.length,
      lockedEntries: model.entries.filter((e) => e.locks > 0).length,
    });
    expect(cache.entries()).toEqual(
      model.entries.map((e) => ({ gpa: e.index * bucket, size: e.size, locks: e.locks })),
    );
    expect(backend.fm.live).toBe(model.entries.length);
    expect(s.mappedBytes).toBeLessThanOrEqual(world.maxBuckets * bucket);
    // A locked range stays mapped: its view still has its length and shows the guest's bytes.
    const read = backend.read;
    for (const h of handles) {
      if ((held.get(h.view) ?? 0) === 0) continue;
      expect(h.view.byteLength).toBe(h.size);
      const marker = (step * 31 + h.gpa) & 0xff;
      h.view[h.size - 1] = marker;
      if (read !== undefined) expect(read(h.gpa + h.size - 1, 1)[0]).toBe(marker);
    }
  };
  const checkView = (view: Uint8Array, gpa: number, size: number) => {
    expect(view.byteLength).toBe(size);
    const read = backend.read;
    if (read === undefined) return;
    const at = (gpa * 7 + step) % size;
    view[at] = (step + 1) & 0xff;
    expect(Array.from(read(gpa + at, 1))).toEqual([(step + 1) & 0xff]);
    expect(Array.from(view.subarray(0, 1))).toEqual(Array.from(read(gpa, 1)));
  };
  try {
    for (const op of world.ops) {
      step++;
      const where = `step ${step}: ${JSON.stringify(op)}`;
      if (op.kind === 'translate') {
        const expected = model.translate(op.gpa, op.size, op.lock);
        let view: Uint8Array | undefined;
        const code = codeOf(() => {
          view = cache.translate(op.gpa, op.size, op.lock);
        });
        expect({ where, code }).toEqual({
          where,
          code: 'error' in expected ? expected.error : undefined,
        });
        if (view !== undefined && 'entry' in expected) {
          checkView(view, op.gpa, op.size);
          if (op.lock) {
            handles.push({ view, gpa: op.gpa, size: op.size, entry: expected.entry });
            held.set(view, (held.get(view) ?? 0) + 1);
          }
        }
      } else if (op.kind === 'unlock') {
        if (handles.length === 0) continue;
        const h = handles[op.pick % handles.length] as (typeof handles)[number];
        const count = held.get(h.view) ?? 0;
        const code = codeOf(() => cache.unlock(h.view));
        expect({ where, code }).toEqual({ where, code: count === 0 ? 'NOT_LOCKED' : undefined });
        if (count > 0) {
          held.set(h.view, count - 1);
          // The model entry of the lock being dropped: any handle sharing the view shares the entry.
          h.entry.locks--;
        }
      } else if (op.kind === 'unlockForeign') {
        expect(codeOf(() => cache.unlock(new Uint8Array(8)))).toBe('NOT_LOCKED');
      } else if (op.kind === 'invalidate') {
        const keptLocked = model.entries.filter((e) => e.locks > 0).length;
        const unmapped = model.entries.length - keptLocked;
        model.invalidate();
        expect(cache.invalidate()).toEqual({ unmapped, keptLocked });
      } else {
        const expected = model.translate(op.gpa, op.size, true);
        let seen: Uint8Array | undefined;
        let locksInside = -1;
        let rethrown: unknown;
        const code = codeOf(() => {
          try {
            cache.withMapping(op.gpa, op.size, (bytes) => {
              seen = bytes;
              locksInside = cache.entries().reduce((n, e) => n + e.locks, 0);
              if (op.throws) throw new Error('callback failed');
            });
          } catch (e) {
            if (!(e instanceof MapCacheError)) rethrown = e;
            else throw e;
          }
        });
        // The callback's own error reaches the caller unchanged, after the unlock (checked below).
        expect(rethrown === undefined ? undefined : (rethrown as Error).message).toBe(
          op.throws && 'entry' in expected ? 'callback failed' : undefined,
        );
        if ('entry' in expected) {
          expect(locksInside).toBe(model.entries.reduce((n, e) => n + e.locks, 0));
          expected.entry.locks--;
          expect(seen?.byteLength).toBe(op.size);
          expect(code).toBeUndefined();
        } else {
          expect({ where, code }).toEqual({ where, code: expected.error });
        }
      }
      check(where);
    }
    cache.close();
    expect(backend.fm.live).toBe(0);
  } finally {
    cache.close();
    backend.close();
  }
}

function inMemory(frames: number, isPopulated: (g: number) => boolean): Backend {
  const fm = new InMemoryForeignMemory({ domid: 5, frames, isPopulated });
  return { fm, read: (gpa, length) => fm.memory.slice(gpa, gpa + length), close: () => fm.close() };
}

/**
 * PrivcmdForeignMemory over a simulated privcmd driver (a model, not the kernel): mmap gives a
 * private buffer and MMAPBATCH_V2 writes -EINVAL for each gfn without a page, as Xen's
 * p2m_add_foreign answers. Bytes are not shared, so only the cache's bookkeeping is compared.
 */
function privcmdModel(frames: number, isPopulated: (g: number) => boolean): Backend {
  let live = 0;
  const io: PrivcmdMapIo = {
    mmap: (_fd, length) => {
      live++;
      return new ArrayBuffer(length);
    },
    munmap: () => {
      live--;
    },
    ioctl: (_fd, request, arg, pointers) => {
      expect(request).toBe(IOCTL_PRIVCMD_MMAPBATCH_V2);
      const num = new DataView(arg.buffer, arg.byteOffset).getUint32(0, true);
      const p = new Map((pointers ?? []).map((x) => [x.offset, x.buffer]));
      const arr = p.get(16) as Uint8Array;
      const errBytes = p.get(24) as Uint8Array;
      const gfns = new BigUint64Array(arr.buffer, arr.byteOffset, num);
      const err = new Int32Array(errBytes.buffer, errBytes.byteOffset, num);
      for (let i = 0; i < num; i++) {
        const g = Number(gfns[i]);
        err[i] = g < frames && isPopulated(g) ? 0 : -22;
      }
      return 0;
    },
  };
  const pfm = new PrivcmdForeignMemory({ handle: { fd: 77, domid: 5 }, io });
  const fm = {
    map: (domid: number, gfns: readonly number[], prot: number) => pfm.map(domid, gfns, prot),
    close: () => pfm.close(),
    get live() {
      return live;
    },
  };
  return { fm, read: undefined, close: () => pfm.close() };
}

function memfd(frames: number, isPopulated: (g: number) => boolean): Backend {
  const fm = new MemfdForeignMemory({ domid: 5, frames, isPopulated });
  return { fm, read: (gpa, length) => fm.read(gpa, length), close: () => fm.close() };
}

describe('MapCache against the reference model', () => {
  it('InMemoryForeignMemory: random map/lock/unlock/translate/invalidate/evict sequences agree with the model', () => {
    fc.assert(
      fc.property(arbWorld(60), (w) => runWorld(w, inMemory)),
      { numRuns: 200 },
    );
  }, 120_000);

  it.skipIf(!sys.isAvailable())(
    'MemfdForeignMemory (real mmap of a memfd): random sequences agree with the model, locked views never detach',
    () => {
      fc.assert(
        fc.property(arbWorld(40), (w) => runWorld(w, memfd)),
        { numRuns: 80 },
      );
    },
    120_000,
  );

  it('PrivcmdForeignMemory over a simulated privcmd driver (PrivcmdModel-style, not the kernel): bookkeeping agrees with the model', () => {
    fc.assert(
      fc.property(arbWorld(60), (w) => runWorld(w, privcmdModel)),
      { numRuns: 150 },
    );
  }, 120_000);

  it('the model itself never drops a locked entry (a check that can fail)', () => {
    const m = new ModelCache(4096, 4096, () => true);
    const r = m.translate(0, 1, true);
    expect(r).toHaveProperty('entry');
    expect(m.translate(4096, 1, false)).toEqual({ error: 'FULL' });
    expect(() => m.drop(m.entries[0] as ModelEntry)).toThrow('a locked entry would be dropped');
  });
});
