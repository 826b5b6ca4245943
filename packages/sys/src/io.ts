import { array, bytes, fail, fd, INT32_MAX, int, record, str, UINT32_MAX } from './check.js';
import { binding } from './native.js';

/** A user pointer to patch into an ioctl argument: `buffer`'s address goes at `offset`. */
export interface IoctlPointer {
  offset: number;
  buffer: Uint8Array;
}

const POINTER_SIZE = 8;
const MAX_POINTERS = 64;

/**
 * Calls ioctl(fd, request, arg). Each pointer's buffer address is written (8 bytes, native
 * endian) into `arg` at its offset for the duration of the call, then the original bytes are
 * put back; the kernel's own writes to `arg` and to the buffers stay. Returns the ioctl's
 * return value; failure throws SysError (syscall 'ioctl').
 */
export function ioctl(
  fdArg: number,
  request: number,
  arg: Uint8Array,
  pointers?: readonly IoctlPointer[],
): number {
  const f = fd('ioctl fd', fdArg);
  const req = int('ioctl request', request, 0, UINT32_MAX);
  const a = bytes('ioctl arg', arg);
  if (pointers === undefined) return binding().ioctl(f, req, a) ?? 0;
  const list = array('ioctl pointers', pointers);
  if (list.length > MAX_POINTERS)
    fail('ioctl pointers', `at most ${MAX_POINTERS} entries`, list.length);
  const checked: IoctlPointer[] = [];
  for (const [i, entry] of list.entries()) {
    const e = record(`ioctl pointers[${i}]`, entry);
    const offset = int(`ioctl pointers[${i}].offset`, e.offset, 0, INT32_MAX);
    const buffer = bytes(`ioctl pointers[${i}].buffer`, e.buffer);
    if (offset + POINTER_SIZE > a.length) {
      fail(`ioctl pointers[${i}].offset`, `an 8-byte slot inside the ${a.length}-byte arg`, offset);
    }
    for (const [j, other] of checked.entries()) {
      if (offset < other.offset + POINTER_SIZE && other.offset < offset + POINTER_SIZE) {
        fail(
          `ioctl pointers[${i}].offset`,
          `no overlap with pointers[${j}] at ${other.offset}`,
          offset,
        );
      }
    }
    checked.push({ offset, buffer });
  }
  return binding().ioctl(f, req, a, checked) ?? 0;
}

/** open(2); the fd is always close-on-exec (O_CLOEXEC is added). */
export function open(path: string, flags: number, mode = 0o600): number {
  return binding().open(
    str('open path', path),
    int('open flags', flags, 0, INT32_MAX),
    int('open mode', mode, 0, 0o7777),
  );
}

/** close(2). */
export function close(fdArg: number): void {
  binding().close(fd('close fd', fdArg));
}

/**
 * mmap(2) of `fd`, returned as an ArrayBuffer over the mapping. It is unmapped when the
 * ArrayBuffer is collected, or at once by munmap().
 */
export function mmap(
  fdArg: number,
  length: number,
  prot: number,
  flags: number,
  offset: number | bigint = 0,
): ArrayBuffer {
  const f = int('mmap fd', fdArg, -1, INT32_MAX);
  const len = int('mmap length', length, 1, Number.MAX_SAFE_INTEGER);
  const off = typeof offset === 'bigint' ? Number(offset) : offset;
  if (typeof offset === 'bigint' && BigInt(off) !== offset)
    fail('mmap offset', 'a non-negative safe integer', offset);
  int('mmap offset', off, 0, Number.MAX_SAFE_INTEGER);
  return binding().mmap(
    f,
    len,
    int('mmap prot', prot, 0, INT32_MAX),
    int('mmap flags', flags, 0, INT32_MAX),
    off,
  );
}

/**
 * Unmaps a mapping from mmap() now and detaches the ArrayBuffer (its byteLength becomes 0).
 * A second munmap throws SysError EINVAL.
 */
export function munmap(mapping: ArrayBuffer): void {
  if (!(mapping instanceof ArrayBuffer))
    fail('munmap mapping', 'an ArrayBuffer from mmap()', mapping);
  binding().munmap(mapping);
}

/** memfd_create(2); MFD_CLOEXEC is always added. */
export function memfdCreate(name: string, flags = 0): number {
  return binding().memfdCreate(
    str('memfdCreate name', name),
    int('memfdCreate flags', flags, 0, UINT32_MAX),
  );
}

/** flock(2). With LOCK_NB, a held lock throws SysError code 'EAGAIN' (EWOULDBLOCK). */
export function flock(fdArg: number, operation: number): void {
  binding().flock(fd('flock fd', fdArg), int('flock operation', operation, 0, INT32_MAX));
}
