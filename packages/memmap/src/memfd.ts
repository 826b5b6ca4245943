import { fstatSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import * as sys from '@xen-depriv/sys';
import { describeValue } from './describe.js';
import {
  checkMapArgs,
  ERR_EINVAL,
  type ForeignMapping,
  type ForeignMemory,
  ForeignMemoryError,
  firstGap,
  PROT_READ,
  PROT_WRITE,
} from './foreign-memory.js';
import { XC_PAGE_SIZE } from './physmap.js';

export interface MemfdForeignMemoryOptions {
  readonly domid: number;
  /** Guest memory size in frames: the memfd holds frame `gfn` at offset `gfn * 4096`. */
  readonly frames: number;
  /** Which frames have a page (default: all below `frames`), e.g. `(g) => physmap.isPopulated(g)`. */
  readonly isPopulated?: (gfn: number) => boolean;
  /** memfd name, shown in /proc/<pid>/maps (default `xen-depriv-guest-<domid>`). */
  readonly name?: string;
}

/**
 * Guest RAM as a memfd, mapped frame by frame with real mmap(2) through `@xen-depriv/sys`: real
 * kernel pages shared by every mapping of a frame, for tests and the demo on a host without
 * Xen. The file is sparse, so a guest with a large 4 GiB hole costs only the pages touched.
 * Frames must be consecutive (one mmap per mapping).
 */
export class MemfdForeignMemory implements ForeignMemory {
  readonly domid: number;
  readonly frames: number;
  readonly fd: number;
  readonly #isPopulated: (gfn: number) => boolean;
  #fileBytes: number;
  #closed = false;
  /** Live mappings, for leak checks in tests. */
  live = 0;

  constructor(options: MemfdForeignMemoryOptions) {
    if (!Number.isInteger(options.frames) || options.frames <= 0 || options.frames >= 2 ** 40) {
      throw new ForeignMemoryError(
        'INVALID_ARGUMENT',
        `MemfdForeignMemory: expected 1..2^40-1 frames, got ${describeValue(options.frames)}`,
      );
    }
    if (!sys.isAvailable()) {
      throw new ForeignMemoryError(
        'MAP_FAILED',
        'MemfdForeignMemory: expected the @xen-depriv/sys native addon, which is not built on this host',
      );
    }
    this.domid = options.domid;
    this.frames = options.frames;
    this.#isPopulated = options.isPopulated ?? (() => true);
    this.fd = sys.memfdCreate(options.name ?? `xen-depriv-guest-${options.domid}`);
    this.#fileBytes = options.frames * XC_PAGE_SIZE;
    try {
      ftruncateSync(this.fd, this.#fileBytes);
    } catch (e) {
      sys.close(this.fd);
      throw e;
    }
  }

  /** Writes guest memory at a guest physical address without mapping it (pwrite on the memfd). */
  write(gpa: number, data: Uint8Array): void {
    this.#checkRange('write', gpa, data.byteLength);
    let done = 0;
    while (done < data.byteLength)
      done += writeSync(this.fd, data, done, data.byteLength - done, gpa + done);
  }

  /** Reads guest memory at a guest physical address without mapping it (pread on the memfd). */
  read(gpa: number, length: number): Uint8Array {
    this.#checkRange('read', gpa, length);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, length - done, gpa + done);
      if (n === 0) break;
      done += n;
    }
    return out;
  }

  #checkRange(what: string, gpa: number, length: number): void {
    if (this.#closed)
      throw new ForeignMemoryError(
        'CLOSED',
        `MemfdForeignMemory.${what}: expected an open handle, got a closed one`,
      );
    if (
      !Number.isSafeInteger(gpa) ||
      gpa < 0 ||
      !Number.isSafeInteger(length) ||
      length < 0 ||
      gpa + length > this.frames * XC_PAGE_SIZE
    ) {
      throw new ForeignMemoryError(
        'INVALID_ARGUMENT',
        `MemfdForeignMemory.${what}: expected a range inside the ${this.frames * XC_PAGE_SIZE}-byte guest, got ${describeValue(gpa)}+${describeValue(length)}`,
      );
    }
  }

  map(domid: number, gfns: readonly number[], prot: number): ForeignMapping {
    if (this.#closed)
      throw new ForeignMemoryError(
        'CLOSED',
        'MemfdForeignMemory.map: expected an open handle, got a closed one',
      );
    checkMapArgs('MemfdForeignMemory', this.domid, domid, gfns, prot);
    const gap = firstGap(gfns);
    if (gap >= 0) {
      throw new ForeignMemoryError(
        'NONCONTIGUOUS',
        `MemfdForeignMemory.map: expected consecutive gfns, got ${describeValue(gfns[gap - 1])} then ${describeValue(gfns[gap])} at index ${gap}`,
      );
    }
    const first = gfns[0] as number;
    const length = gfns.length * XC_PAGE_SIZE;
    const end = first * XC_PAGE_SIZE + length;
    // A page of a shared mapping past EOF raises SIGBUS on access; growing the sparse file
    // instead makes frames past the guest read as zeroes while `errors` reports them.
    if (end > this.#fileBytes) {
      ftruncateSync(this.fd, end);
      this.#fileBytes = end;
    }
    const errors = new Int32Array(gfns.length);
    for (let i = 0; i < gfns.length; i++) {
      const g = first + i;
      if (g >= this.frames || !this.#isPopulated(g)) errors[i] = ERR_EINVAL;
    }
    let ab: ArrayBuffer;
    try {
      ab = sys.mmap(
        this.fd,
        length,
        prot & (PROT_READ | PROT_WRITE),
        sys.constants.MAP_SHARED,
        first * XC_PAGE_SIZE,
      );
    } catch (e) {
      const errno = e instanceof sys.SysError ? e.errno : undefined;
      throw new ForeignMemoryError(
        'MAP_FAILED',
        `MemfdForeignMemory.map: mmap of ${gfns.length} frames at gfn ${first} failed: ${(e as Error).message}`,
        errno,
      );
    }
    const bytes = new Uint8Array(ab);
    this.live++;
    let unmapped = false;
    const self = this;
    return {
      domid,
      gfns: gfns.slice(),
      errors,
      bytes,
      unmap() {
        if (unmapped)
          throw new ForeignMemoryError(
            'ALREADY_UNMAPPED',
            `MemfdForeignMemory: mapping of gfn ${first} unmapped twice`,
          );
        unmapped = true;
        self.live--;
        sys.munmap(ab);
      },
    };
  }

  /** Bytes of the memfd (grows when a mapping reaches past the guest). */
  get fileBytes(): number {
    return fstatSync(this.fd).size;
  }

  /** Closes the memfd; mappings stay valid until unmapped, as with munmap semantics. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    sys.close(this.fd);
  }
}
