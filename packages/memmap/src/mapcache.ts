import { describeValue } from './describe.js';
import {
  type ForeignMapping,
  type ForeignMemory,
  ForeignMemoryError,
  PROT_READ,
  PROT_WRITE,
} from './foreign-memory.js';
import { MAX_GPA, XC_PAGE_SHIFT, XC_PAGE_SIZE } from './physmap.js';

export type MapCacheErrorCode =
  | 'INVALID_ARGUMENT'
  | 'TOO_LARGE'
  | 'FULL'
  | 'BAD_FRAME'
  | 'MAP_FAILED'
  | 'NOT_LOCKED'
  | 'CLOSED';

/** A mapcache request refused; nothing cached or locked changes except as the message says. */
export class MapCacheError extends Error {
  override readonly name = 'MapCacheError';
  readonly code: MapCacheErrorCode;
  /** For BAD_FRAME: the frame and its per-frame error (negated errno) from the backend. */
  readonly gfn: number | undefined;
  readonly frameError: number | undefined;
  constructor(
    code: MapCacheErrorCode,
    message: string,
    extra?: { gfn: number; frameError: number; cause?: unknown },
  ) {
    super(message, extra?.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.gfn = extra?.gfn;
    this.frameError = extra?.frameError;
  }
}

export interface MapCacheOptions {
  readonly foreignMemory: ForeignMemory;
  readonly domid: number;
  /**
   * log2 of the bucket size: QEMU's MCACHE_BUCKET_SHIFT, 20 (1 MiB) on 64-bit hosts and 16 on
   * 32-bit ones. 12..30.
   */
  readonly bucketShift?: number;
  /**
   * Cap on mapped bytes: QEMU's max_mcache_size, 32 GiB on 64-bit hosts. Unlocked entries are
   * evicted least recently used first to stay under it. A multiple of the bucket size.
   */
  readonly maxBytes?: number;
  /** Default PROT_READ | PROT_WRITE, as QEMU maps guest RAM. */
  readonly prot?: number;
}

export interface MapCacheStats {
  readonly hits: number;
  readonly misses: number;
  /** Entries unmapped to stay under `maxBytes`. */
  readonly evictions: number;
  readonly invalidations: number;
  readonly mappedBytes: number;
  readonly entries: number;
  readonly lockedEntries: number;
}

/** One cached mapping, as `entries()` reports it. */
export interface MapCacheEntryInfo {
  readonly gpa: number;
  readonly size: number;
  readonly locks: number;
}

interface Entry {
  /** QEMU's paddr_index: gpa >> bucketShift of the first bucket. */
  readonly index: number;
  /** A multiple of the bucket size. */
  readonly size: number;
  readonly mapping: ForeignMapping;
  readonly bytes: Uint8Array;
  readonly errors: Int32Array;
  readonly badFrames: number;
  locks: number;
  lastUse: number;
  memo: Uint8Array | undefined;
  memoOffset: number;
  memoLength: number;
}

interface LockRecord {
  readonly entry: Entry;
  count: number;
}

const DEFAULT_BUCKET_SHIFT = 20;
const DEFAULT_MAX_BYTES = 2 ** 35;

/**
 * QEMU's Xen mapcache (hw/i386/xen/xen-mapcache.c) over a `ForeignMemory`: guest memory is
 * mapped in buckets, found through a hash table with chaining, kept while locked, evicted least
 * recently used under a size cap, and dropped by `invalidate()` (the invalidate ioreq).
 */
export class MapCache {
  readonly domid: number;
  readonly bucketShift: number;
  readonly bucketSize: number;
  readonly maxBytes: number;
  readonly #fm: ForeignMemory;
  readonly #prot: number;
  readonly #table: (Entry[] | undefined)[];
  /** Every entry in insertion order. */
  readonly #entries: Entry[] = [];
  readonly #locked = new Map<Uint8Array, LockRecord>();
  #last: Entry | undefined;
  #tick = 0;
  #closed = false;
  #hits = 0;
  #misses = 0;
  #evictions = 0;
  #invalidations = 0;
  #mappedBytes = 0;
  #lockedBytes = 0;

  constructor(options: MapCacheOptions) {
    const shift = options.bucketShift ?? DEFAULT_BUCKET_SHIFT;
    if (!Number.isInteger(shift) || shift < XC_PAGE_SHIFT || shift > 30) {
      throw new MapCacheError(
        'INVALID_ARGUMENT',
        `MapCache: expected bucketShift 12..30, got ${describeValue(shift)}`,
      );
    }
    const bucketSize = 2 ** shift;
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < bucketSize || maxBytes % bucketSize !== 0) {
      throw new MapCacheError(
        'INVALID_ARGUMENT',
        `MapCache: expected maxBytes a non-zero multiple of the ${bucketSize}-byte bucket, got ${describeValue(maxBytes)}`,
      );
    }
    const prot = options.prot ?? PROT_READ | PROT_WRITE;
    if (prot !== PROT_READ && prot !== (PROT_READ | PROT_WRITE)) {
      throw new MapCacheError(
        'INVALID_ARGUMENT',
        `MapCache: expected prot 1 or 3, got ${describeValue(prot)}`,
      );
    }
    if (!Number.isInteger(options.domid) || options.domid < 0 || options.domid >= 0x7ff0) {
      throw new MapCacheError(
        'INVALID_ARGUMENT',
        `MapCache: expected a guest domid 0..32751, got ${describeValue(options.domid)}`,
      );
    }
    this.domid = options.domid;
    this.bucketShift = shift;
    this.bucketSize = bucketSize;
    this.maxBytes = maxBytes;
    this.#fm = options.foreignMemory;
    this.#prot = prot;
    // QEMU's nr_buckets: one hash slot per bucket the cap allows.
    this.#table = new Array<Entry[] | undefined>(maxBytes / bucketSize).fill(undefined);
  }

  /**
   * The `size` bytes of guest memory at `gpa` (QEMU's xen_map_cache). With `lock`, the range
   * stays mapped until `unlock(view)`, whatever else is evicted or invalidated; without it, the
   * view is valid until the next request that evicts, or the next `invalidate()`.
   */
  translate(gpa: number, size: number, lock = false): Uint8Array {
    if (this.#closed)
      throw new MapCacheError(
        'CLOSED',
        'MapCache.translate: expected an open mapcache, got a closed one',
      );
    if (
      typeof gpa !== 'number' ||
      typeof size !== 'number' ||
      !Number.isSafeInteger(gpa) ||
      !Number.isSafeInteger(size) ||
      gpa < 0 ||
      size < 1 ||
      gpa + size > MAX_GPA
    ) {
      throw new MapCacheError(
        'INVALID_ARGUMENT',
        `MapCache.translate: expected gpa >= 0, size >= 1 and gpa + size <= 2^52, got gpa ${describeValue(gpa)} size ${describeValue(size)}`,
      );
    }
    const bucketSize = this.bucketSize;
    const index = Math.floor(gpa / bucketSize);
    const offset = gpa - index * bucketSize;
    const cacheSize = Math.ceil((offset + size) / bucketSize) * bucketSize;
    let entry = this.#last;
    if (
      entry === undefined ||
      entry.index !== index ||
      entry.size !== cacheSize ||
      (entry.badFrames !== 0 && !validRange(entry, offset, size))
    ) {
      entry = this.#find(index, cacheSize, offset, size);
    }
    if (entry === undefined) {
      this.#misses++;
      entry = this.#mapEntry(index, cacheSize, offset, size);
    } else {
      this.#hits++;
    }
    entry.lastUse = ++this.#tick;
    this.#last = entry;
    let view = entry.memo;
    if (view === undefined || entry.memoOffset !== offset || entry.memoLength !== size) {
      view = entry.bytes.subarray(offset, offset + size);
      entry.memo = view;
      entry.memoOffset = offset;
      entry.memoLength = size;
    }
    if (lock) {
      if (entry.locks === 0) this.#lockedBytes += entry.size;
      entry.locks++;
      const rec = this.#locked.get(view);
      if (rec === undefined) this.#locked.set(view, { entry, count: 1 });
      else rec.count++;
    }
    return view;
  }

  /**
   * Drops one lock taken by `translate(..., true)` on this view (QEMU's
   * xen_invalidate_map_cache_entry). A view not locked is a NOT_LOCKED error.
   */
  unlock(view: Uint8Array): void {
    const rec = this.#locked.get(view);
    if (rec === undefined) {
      throw new MapCacheError(
        'NOT_LOCKED',
        `MapCache.unlock: expected a view returned by translate(gpa, size, true) and still locked, got ${describeValue(view)} not locked in this mapcache`,
      );
    }
    rec.count--;
    if (rec.count === 0) this.#locked.delete(view);
    rec.entry.locks--;
    if (rec.entry.locks === 0) this.#lockedBytes -= rec.entry.size;
  }

  /** Runs `fn` on a locked view of the range and always unlocks, also when `fn` throws or its promise rejects. */
  withMapping<T>(gpa: number, size: number, fn: (bytes: Uint8Array) => T): T {
    const view = this.translate(gpa, size, true);
    let result: T;
    try {
      result = fn(view);
    } catch (e) {
      this.unlock(view);
      throw e;
    }
    if (isPromiseLike(result)) {
      return Promise.resolve(result).finally(() => this.unlock(view)) as T;
    }
    this.unlock(view);
    return result;
  }

  /**
   * Unmaps every unlocked entry, as QEMU does on the invalidate ioreq (the guest's memory map
   * changed, e.g. after ballooning). Locked entries stay; their count is returned.
   */
  invalidate(): { unmapped: number; keptLocked: number } {
    let unmapped = 0;
    let keptLocked = 0;
    for (const e of this.#entries.slice()) {
      if (e.locks > 0) keptLocked++;
      else {
        this.#remove(e);
        unmapped++;
      }
    }
    this.#invalidations++;
    return { unmapped, keptLocked };
  }

  get stats(): MapCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      evictions: this.#evictions,
      invalidations: this.#invalidations,
      mappedBytes: this.#mappedBytes,
      entries: this.#entries.length,
      lockedEntries: this.#entries.reduce((n, e) => n + (e.locks > 0 ? 1 : 0), 0),
    };
  }

  /** The cached mappings in insertion order. */
  entries(): MapCacheEntryInfo[] {
    return this.#entries.map((e) => ({
      gpa: e.index * this.bucketSize,
      size: e.size,
      locks: e.locks,
    }));
  }

  /** Unmaps everything, locked or not; later calls throw CLOSED. */
  close(): void {
    if (this.#closed) return;
    for (const e of this.#entries.slice()) this.#remove(e);
    this.#locked.clear();
    this.#lockedBytes = 0;
    this.#closed = true;
  }

  #find(index: number, cacheSize: number, offset: number, size: number): Entry | undefined {
    const chain = this.#table[index % this.#table.length];
    if (chain === undefined) return undefined;
    for (const e of chain) {
      if (
        e.index === index &&
        e.size === cacheSize &&
        (e.badFrames === 0 || validRange(e, offset, size))
      )
        return e;
    }
    return undefined;
  }

  #mapEntry(index: number, cacheSize: number, offset: number, size: number): Entry {
    if (cacheSize > this.maxBytes) {
      throw new MapCacheError(
        'TOO_LARGE',
        `MapCache.translate: expected a range needing at most maxBytes ${this.maxBytes}, got one needing ${cacheSize} bytes of buckets`,
      );
    }
    // An unlocked entry of the same buckets that lacks a frame of this range is remapped, as
    // QEMU's xen_remap_bucket does: the guest may have populated the frame since.
    const chain = this.#table[index % this.#table.length];
    if (chain !== undefined) {
      for (const e of chain.slice())
        if (e.index === index && e.size === cacheSize && e.locks === 0) this.#remove(e);
    }
    if (this.#lockedBytes + cacheSize > this.maxBytes) {
      throw new MapCacheError(
        'FULL',
        `MapCache.translate: expected room for ${cacheSize} bytes under maxBytes ${this.maxBytes}, but ${this.#lockedBytes} bytes are locked`,
      );
    }
    while (this.#mappedBytes + cacheSize > this.maxBytes) {
      let victim: Entry | undefined;
      for (const e of this.#entries)
        if (e.locks === 0 && (victim === undefined || e.lastUse < victim.lastUse)) victim = e;
      // lockedBytes + cacheSize <= maxBytes guarantees an unlocked victim exists here.
      this.#remove(victim as Entry);
      this.#evictions++;
    }
    const frames = cacheSize >>> XC_PAGE_SHIFT;
    const first = (index * this.bucketSize) / XC_PAGE_SIZE;
    const gfns = new Array<number>(frames);
    for (let i = 0; i < frames; i++) gfns[i] = first + i;
    let mapping: ForeignMapping;
    try {
      mapping = this.#fm.map(this.domid, gfns, this.#prot);
    } catch (e) {
      const detail =
        e instanceof ForeignMemoryError
          ? `${e.code}: ${e.message}`
          : e instanceof Error
            ? e.message
            : describeValue(e);
      throw new MapCacheError(
        'MAP_FAILED',
        `MapCache.translate: mapping ${frames} frames at gfn ${first} failed (${detail})`,
        {
          gfn: first,
          frameError: 0,
          cause: e,
        },
      );
    }
    let badFrames = 0;
    for (let i = 0; i < mapping.errors.length; i++) if (mapping.errors[i] !== 0) badFrames++;
    const entry: Entry = {
      index,
      size: cacheSize,
      mapping,
      bytes: mapping.bytes,
      errors: mapping.errors,
      badFrames,
      locks: 0,
      lastUse: 0,
      memo: undefined,
      memoOffset: 0,
      memoLength: 0,
    };
    const slot = index % this.#table.length;
    const list = this.#table[slot];
    if (list === undefined) this.#table[slot] = [entry];
    else list.push(entry);
    this.#entries.push(entry);
    this.#mappedBytes += cacheSize;
    if (badFrames !== 0 && !validRange(entry, offset, size)) {
      const bad = firstBadFrame(entry, offset, size);
      throw new MapCacheError(
        'BAD_FRAME',
        `MapCache.translate: expected every frame of [0x${(index * this.bucketSize + offset).toString(16)}, +0x${size.toString(16)}) mapped, gfn 0x${(first + bad).toString(16)} failed with ${entry.errors[bad]}`,
        { gfn: first + bad, frameError: entry.errors[bad] as number },
      );
    }
    return entry;
  }

  #remove(e: Entry): void {
    const slot = e.index % this.#table.length;
    const chain = this.#table[slot] as Entry[];
    chain.splice(chain.indexOf(e), 1);
    if (chain.length === 0) this.#table[slot] = undefined;
    this.#entries.splice(this.#entries.indexOf(e), 1);
    this.#mappedBytes -= e.size;
    if (this.#last === e) this.#last = undefined;
    e.memo = undefined;
    e.mapping.unmap();
  }
}

function validRange(e: Entry, offset: number, size: number): boolean {
  return firstBadFrame(e, offset, size) < 0;
}

function firstBadFrame(e: Entry, offset: number, size: number): number {
  const from = Math.floor(offset / XC_PAGE_SIZE);
  const to = Math.ceil((offset + size) / XC_PAGE_SIZE);
  for (let i = from; i < to; i++) if (e.errors[i] !== 0) return i;
  return -1;
}

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === 'object' || typeof v === 'function') &&
    v !== null &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}
