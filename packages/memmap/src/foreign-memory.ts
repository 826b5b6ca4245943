import { describeValue } from './describe.js';
import { XC_PAGE_SIZE } from './physmap.js';

/** PROT_READ and PROT_WRITE as in <sys/mman.h>. */
export const PROT_READ = 1;
export const PROT_WRITE = 2;

/**
 * Per-frame errors as the kernel writes them into MMAPBATCH_V2's `err` array and
 * xenforeignmemory_map2 hands them back: 0, or a negated errno.
 */
export const ERR_EINVAL = -22;
export const ERR_ENOENT = -2;

/** Guest frames mapped into this process. */
export interface ForeignMapping {
  readonly domid: number;
  /** The frames, in order: frame i is `bytes[i * 4096, (i + 1) * 4096)`. */
  readonly gfns: readonly number[];
  /** Shared with the guest: writes are the guest's memory. Empty once unmapped. */
  readonly bytes: Uint8Array;
  /** Per frame: 0 when mapped, else a negated errno (-EINVAL: no page at that gfn, -ENOENT: paged out). */
  readonly errors: Int32Array;
  /** Unmaps; a second call is a ForeignMemoryError. */
  unmap(): void;
}

/** Maps frames of a guest, as libxenforeignmemory does (`xenforeignmemory_map`). */
export interface ForeignMemory {
  /**
   * Maps `gfns` of `domid` contiguously. A frame that cannot be mapped is reported in
   * `errors` (and reads as zeroes or faults, as with xenforeignmemory); a call that cannot be
   * made at all throws.
   */
  map(domid: number, gfns: readonly number[], prot: number): ForeignMapping;
  close(): void;
}

export type ForeignMemoryErrorCode =
  | 'INVALID_ARGUMENT'
  | 'WRONG_DOMAIN'
  | 'NONCONTIGUOUS'
  | 'ALREADY_UNMAPPED'
  | 'CLOSED'
  | 'MAP_FAILED';

/** A map call refused or failed as a whole; `errno` is set when the kernel gave one. */
export class ForeignMemoryError extends Error {
  override readonly name = 'ForeignMemoryError';
  readonly code: ForeignMemoryErrorCode;
  readonly errno: number | undefined;
  constructor(code: ForeignMemoryErrorCode, message: string, errno?: number) {
    super(message);
    this.code = code;
    this.errno = errno;
  }
}

/** x86-64 Xen has 40-bit frame numbers (52-bit addresses, 4 KiB frames). */
const MAX_GFN = 2 ** 40;
/** MMAPBATCH_V2's `num` is an unsigned int; cap far lower so a bad argument cannot ask for terabytes. */
export const MAX_FRAMES_PER_MAP = 1 << 20;

export function checkMapArgs(
  who: string,
  ownDomid: number,
  domid: number,
  gfns: readonly number[],
  prot: number,
): void {
  if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) {
    throw new ForeignMemoryError(
      'INVALID_ARGUMENT',
      `${who}.map: expected a guest domid 0..32751, got ${describeValue(domid)}`,
    );
  }
  if (domid !== ownDomid) {
    // A restricted privcmd fd answers EPERM for another domid; refuse before the kernel does.
    throw new ForeignMemoryError(
      'WRONG_DOMAIN',
      `${who}.map: expected domid ${ownDomid} (the handle is restricted to it), got ${domid}`,
      1,
    );
  }
  if (!Array.isArray(gfns) || gfns.length === 0 || gfns.length > MAX_FRAMES_PER_MAP) {
    throw new ForeignMemoryError(
      'INVALID_ARGUMENT',
      `${who}.map: expected 1..${MAX_FRAMES_PER_MAP} gfns, got ${Array.isArray(gfns) ? gfns.length : typeof gfns}`,
    );
  }
  for (let i = 0; i < gfns.length; i++) {
    const g = gfns[i];
    if (typeof g !== 'number' || !Number.isInteger(g) || g < 0 || g >= MAX_GFN) {
      throw new ForeignMemoryError(
        'INVALID_ARGUMENT',
        `${who}.map: expected gfns[${i}] in 0..2^40-1, got ${describeValue(g)}`,
      );
    }
  }
  if (prot !== PROT_READ && prot !== (PROT_READ | PROT_WRITE)) {
    throw new ForeignMemoryError(
      'INVALID_ARGUMENT',
      `${who}.map: expected prot PROT_READ (1) or PROT_READ|PROT_WRITE (3), got ${describeValue(prot)}`,
    );
  }
}

/** The first break in a run of consecutive gfns, or -1. */
export function firstGap(gfns: readonly number[]): number {
  for (let i = 1; i < gfns.length; i++) if (gfns[i] !== (gfns[i - 1] as number) + 1) return i;
  return -1;
}

export interface InMemoryForeignMemoryOptions {
  readonly domid: number;
  /** Guest memory size in frames; frames at or above it report -EINVAL. */
  readonly frames: number;
  /** Which frames have a page (default: all below `frames`), e.g. `(g) => physmap.isPopulated(g)`. */
  readonly isPopulated?: (gfn: number) => boolean;
}

/**
 * Guest memory as one ArrayBuffer in this process: a mapping of consecutive frames is a view
 * of it, so two mappings of one frame share bytes as real foreign mappings do. For tests and
 * for logic that must run without Xen or the native addon. Frames must be consecutive.
 */
export class InMemoryForeignMemory implements ForeignMemory {
  readonly domid: number;
  readonly frames: number;
  /** The guest's memory, as the hypervisor sees it. */
  readonly memory: Uint8Array;
  readonly #isPopulated: (gfn: number) => boolean;
  readonly #backing: ResizableArrayBuffer;
  #closed = false;
  /** Live mappings, for leak checks in tests. */
  live = 0;

  constructor(options: InMemoryForeignMemoryOptions) {
    if (
      !Number.isInteger(options.frames) ||
      options.frames <= 0 ||
      options.frames > MAX_FRAMES_PER_MAP * 4
    ) {
      throw new ForeignMemoryError(
        'INVALID_ARGUMENT',
        `InMemoryForeignMemory: expected 1..${MAX_FRAMES_PER_MAP * 4} frames, got ${describeValue(options.frames)}`,
      );
    }
    this.domid = options.domid;
    this.frames = options.frames;
    const size = options.frames * XC_PAGE_SIZE;
    try {
      this.#backing = new ResizableArrayBuffer(size, { maxByteLength: size + IN_MEMORY_SLACK });
    } catch (e) {
      throw new ForeignMemoryError(
        'INVALID_ARGUMENT',
        `InMemoryForeignMemory: expected a guest this process can allocate, ${options.frames} frames failed: ${(e as Error).message}`,
      );
    }
    this.memory = new Uint8Array(this.#backing, 0, size);
    this.#isPopulated = options.isPopulated ?? (() => true);
  }

  map(domid: number, gfns: readonly number[], prot: number): ForeignMapping {
    if (this.#closed)
      throw new ForeignMemoryError(
        'CLOSED',
        'InMemoryForeignMemory.map: expected an open handle, got a closed one',
      );
    checkMapArgs('InMemoryForeignMemory', this.domid, domid, gfns, prot);
    const gap = firstGap(gfns);
    if (gap >= 0) {
      throw new ForeignMemoryError(
        'NONCONTIGUOUS',
        `InMemoryForeignMemory.map: expected consecutive gfns, got ${describeValue(gfns[gap - 1])} then ${describeValue(gfns[gap])} at index ${gap}`,
      );
    }
    const first = gfns[0] as number;
    const errors = new Int32Array(gfns.length);
    for (let i = 0; i < gfns.length; i++) {
      const g = first + i;
      if (g >= this.frames || !this.#isPopulated(g)) errors[i] = ERR_EINVAL;
    }
    const end = (first + gfns.length) * XC_PAGE_SIZE;
    if (end > this.#backing.byteLength) {
      if (end > this.#backing.maxByteLength) {
        throw new ForeignMemoryError(
          'INVALID_ARGUMENT',
          `InMemoryForeignMemory.map: expected frames below gfn ${this.#backing.maxByteLength / XC_PAGE_SIZE} (the guest plus ${IN_MEMORY_SLACK} bytes), got up to gfn ${first + gfns.length - 1}`,
        );
      }
      // Frames past the guest read as zeroes while `errors` reports them; growing the buffer
      // in place keeps every existing view valid.
      this.#backing.resize(end);
    }
    const bytes = new Uint8Array(this.#backing, first * XC_PAGE_SIZE, gfns.length * XC_PAGE_SIZE);
    this.live++;
    let unmapped = false;
    const self = this;
    const mapping: ForeignMapping = {
      domid,
      gfns: gfns.slice(),
      errors,
      get bytes() {
        return unmapped ? EMPTY : bytes;
      },
      unmap() {
        if (unmapped)
          throw new ForeignMemoryError(
            'ALREADY_UNMAPPED',
            `InMemoryForeignMemory: mapping of gfn ${first} unmapped twice`,
          );
        unmapped = true;
        self.live--;
      },
    };
    return mapping;
  }

  close(): void {
    this.#closed = true;
  }
}

const EMPTY = new Uint8Array(0);

/** How far past the guest a mapping of the in-memory backend may reach (a mapcache bucket overruns the end). */
const IN_MEMORY_SLACK = 64 * 1024 * 1024;

/** ES2024 resizable ArrayBuffer (Node 20), which the ES2023 lib of this repository does not declare. */
interface ResizableArrayBuffer extends ArrayBuffer {
  readonly maxByteLength: number;
  resize(byteLength: number): void;
}
const ResizableArrayBuffer = ArrayBuffer as unknown as new (
  byteLength: number,
  options: { maxByteLength: number },
) => ResizableArrayBuffer;
