import { encodePrivcmdMmapbatchV2, IOCTL_PRIVCMD_MMAPBATCH_V2 } from '@xen-depriv/dmop-abi';
import { PRIVCMD_LAYOUT } from '@xen-depriv/dmop-abi/layout';
import * as sys from '@xen-depriv/sys';
import { describeValue } from './describe.js';
import {
  checkMapArgs,
  ERR_ENOENT,
  type ForeignMapping,
  type ForeignMemory,
  ForeignMemoryError,
} from './foreign-memory.js';
import { XC_PAGE_SIZE } from './physmap.js';

const ENOENT = 2;

/** The OS calls the backend makes: `@xen-depriv/sys` on a real host, a recorder in tests. */
export interface PrivcmdMapIo {
  ioctl(
    fd: number,
    request: number,
    arg: Uint8Array,
    pointers?: readonly { offset: number; buffer: Uint8Array }[],
  ): number;
  mmap(fd: number, length: number, prot: number, flags: number, offset: number): ArrayBuffer;
  munmap(mapping: ArrayBuffer): void;
}

export interface PrivcmdForeignMemoryOptions {
  /**
   * An open /dev/xen/privcmd restricted to `domid`, such as `PrivcmdHandle.open(...)` from
   * `@xen-depriv/privcmd-filter` (which owns and closes the fd).
   */
  readonly handle: { readonly fd: number; readonly domid: number };
  /** Default `@xen-depriv/sys`. */
  readonly io?: PrivcmdMapIo;
  /**
   * How many times frames the kernel reports paged out (-ENOENT) are asked for again, as
   * libxenforeignmemory's retry_paged does (it loops without bound); default 100.
   */
  readonly pagedRetries?: number;
  /** Called between paged-out retries (libxenforeignmemory sleeps 100 us); default none. */
  readonly onPagedRetry?: (attempt: number) => void;
}

const SYS_IO: PrivcmdMapIo = {
  ioctl: (fd, request, arg, pointers) => sys.ioctl(fd, request, arg, pointers),
  mmap: (fd, length, prot, flags, offset) => sys.mmap(fd, length, prot, flags, offset),
  munmap: (m) => sys.munmap(m),
};

/**
 * Foreign memory through a privcmd fd, as libxenforeignmemory's Linux backend does it: mmap the
 * fd for the frame count (MAP_SHARED), then IOCTL_PRIVCMD_MMAPBATCH_V2 with the gfn array and an
 * error array the kernel fills per frame (0 or -errno). A whole-call failure unmaps and throws.
 */
export class PrivcmdForeignMemory implements ForeignMemory {
  readonly domid: number;
  readonly fd: number;
  readonly #io: PrivcmdMapIo;
  readonly #pagedRetries: number;
  readonly #onPagedRetry: ((attempt: number) => void) | undefined;
  #closed = false;

  constructor(options: PrivcmdForeignMemoryOptions) {
    this.domid = options.handle.domid;
    this.fd = options.handle.fd;
    this.#io = options.io ?? SYS_IO;
    this.#pagedRetries = options.pagedRetries ?? 100;
    this.#onPagedRetry = options.onPagedRetry;
  }

  map(domid: number, gfns: readonly number[], prot: number): ForeignMapping {
    if (this.#closed)
      throw new ForeignMemoryError(
        'CLOSED',
        'PrivcmdForeignMemory.map: expected an open handle, got a closed one',
      );
    checkMapArgs('PrivcmdForeignMemory', this.domid, domid, gfns, prot);
    const arr = new BigUint64Array(gfns.length);
    for (let i = 0; i < gfns.length; i++) arr[i] = BigInt(gfns[i] as number);
    return this.#map(domid, gfns.slice(), arr, prot);
  }

  /**
   * `map` for raw 64-bit xen_pfn_t values, passed to the kernel unchecked as libxenforeignmemory
   * passes them (`gfns` of the result holds them as numbers, exact only below 2^53).
   */
  mapPfns(domid: number, pfns: readonly bigint[], prot: number): ForeignMapping {
    if (this.#closed)
      throw new ForeignMemoryError(
        'CLOSED',
        'PrivcmdForeignMemory.mapPfns: expected an open handle, got a closed one',
      );
    if (!Array.isArray(pfns)) {
      throw new ForeignMemoryError(
        'INVALID_ARGUMENT',
        `PrivcmdForeignMemory.mapPfns: expected an array of bigint, got ${typeof pfns}`,
      );
    }
    const arr = BigUint64Array.from(pfns, (p, i) => {
      if (typeof p !== 'bigint' || p < 0n || p >= 1n << 64n) {
        throw new ForeignMemoryError(
          'INVALID_ARGUMENT',
          `PrivcmdForeignMemory.mapPfns: expected pfns[${i}] a bigint in 0..2^64-1, got ${describeValue(p)}`,
        );
      }
      return p;
    });
    checkMapArgs(
      'PrivcmdForeignMemory',
      this.domid,
      domid,
      Array.from(arr, () => 0),
      prot,
    );
    return this.#map(domid, Array.from(arr, Number), arr, prot);
  }

  #map(domid: number, gfns: readonly number[], arr: BigUint64Array, prot: number): ForeignMapping {
    const num = arr.length;
    const io = this.#io;
    let ab: ArrayBuffer;
    try {
      ab = io.mmap(this.fd, num * XC_PAGE_SIZE, prot, sys.constants.MAP_SHARED, 0);
    } catch (e) {
      throw new ForeignMemoryError(
        'MAP_FAILED',
        `PrivcmdForeignMemory.map: mmap of ${num} frames failed: ${(e as Error).message}`,
        errnoOf(e),
      );
    }
    const errors = new Int32Array(num);
    const bytes = new Uint8Array(ab);
    try {
      // As libxenforeignmemory: retry only when the kernel answered ENOENT for the call, then
      // pass over the frames while any is still paged out.
      const paged = this.#batch(domid, bytes, arr, errors, 0, num);
      for (
        let attempt = 1;
        paged && attempt <= this.#pagedRetries && errors.includes(ERR_ENOENT);
        attempt++
      ) {
        this.#onPagedRetry?.(attempt);
        // retry_paged: one ioctl per run of paged-out frames, addr pointing at the run.
        for (let i = 0; i < num; ) {
          if (errors[i] !== ERR_ENOENT) {
            i++;
            continue;
          }
          let j = i;
          while (j < num && errors[j] === ERR_ENOENT) j++;
          this.#batch(domid, bytes, arr, errors, i, j - i);
          i = j;
        }
      }
    } catch (e) {
      io.munmap(ab);
      throw e;
    }
    let unmapped = false;
    return {
      domid,
      gfns,
      errors,
      bytes,
      unmap() {
        if (unmapped)
          throw new ForeignMemoryError(
            'ALREADY_UNMAPPED',
            'PrivcmdForeignMemory: mapping unmapped twice',
          );
        unmapped = true;
        io.munmap(ab);
      },
    };
  }

  /** One MMAPBATCH_V2 over frames [from, from + count); true when the kernel answered ENOENT. */
  #batch(
    domid: number,
    bytes: Uint8Array,
    arr: BigUint64Array,
    errors: Int32Array,
    from: number,
    count: number,
  ): boolean {
    // addr, arr and err stay 0 here: sys.ioctl patches the three pointers in for the call.
    const arg = encodePrivcmdMmapbatchV2({ num: count, dom: domid, addr: 0n, arr: 0n, err: 0n });
    const at = PRIVCMD_LAYOUT.privcmd_mmapbatch_v2;
    const pointers = [
      {
        offset: at.addr,
        buffer: bytes.subarray(from * XC_PAGE_SIZE, (from + count) * XC_PAGE_SIZE),
      },
      { offset: at.arr, buffer: new Uint8Array(arr.buffer, from * 8, count * 8) },
      { offset: at.err, buffer: new Uint8Array(errors.buffer, from * 4, count * 4) },
    ];
    try {
      this.#io.ioctl(this.fd, IOCTL_PRIVCMD_MMAPBATCH_V2, arg, pointers);
      return false;
    } catch (e) {
      // ENOENT: the call went through and some frames are paged out (see `errors`).
      if (errnoOf(e) === ENOENT) return true;
      throw new ForeignMemoryError(
        'MAP_FAILED',
        `PrivcmdForeignMemory.map: IOCTL_PRIVCMD_MMAPBATCH_V2 of ${count} frames for domid ${domid} failed: ${(e as Error).message}`,
        errnoOf(e),
      );
    }
  }

  /** Stops mapping; the fd belongs to the handle it came from. */
  close(): void {
    this.#closed = true;
  }
}

function errnoOf(e: unknown): number | undefined {
  if (typeof e === 'object' && e !== null && 'errno' in e && typeof e.errno === 'number')
    return e.errno;
  return undefined;
}
