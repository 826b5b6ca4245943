import { readU16, readU32, readU64 } from './dmop-fields.js';
import { PolicyError } from './error.js';
import {
  IOCTL_PRIVCMD_DM_OP,
  IOCTL_PRIVCMD_HYPERCALL,
  IOCTL_PRIVCMD_IOEVENTFD,
  IOCTL_PRIVCMD_IRQFD,
  IOCTL_PRIVCMD_MMAP,
  IOCTL_PRIVCMD_MMAP_RESOURCE,
  IOCTL_PRIVCMD_MMAPBATCH,
  IOCTL_PRIVCMD_MMAPBATCH_V2,
  IOCTL_PRIVCMD_RESTRICT,
  XEN_IOCTL_NAMES,
} from './ioctls.js';
import type { PrivcmdRequest } from './model.js';

/**
 * Sizes of the x86-64 argument structs (include/uapi/xen/privcmd.h), i.e. the size field of each
 * request number; offsets below are checked against gcc in test/decode.test.ts.
 */
const ARG_SIZE = new Map<number, number>([
  [IOCTL_PRIVCMD_HYPERCALL, 48],
  [IOCTL_PRIVCMD_MMAP, 16],
  [IOCTL_PRIVCMD_MMAPBATCH, 24],
  [IOCTL_PRIVCMD_MMAPBATCH_V2, 32],
  [IOCTL_PRIVCMD_DM_OP, 16],
  [IOCTL_PRIVCMD_RESTRICT, 2],
  [IOCTL_PRIVCMD_MMAP_RESOURCE, 32],
  [IOCTL_PRIVCMD_IRQFD, 24],
  [IOCTL_PRIVCMD_IOEVENTFD, 48],
]);

const signed32 = (v: number) => v | 0;

/**
 * Reads the fields privcmd's handlers check from an ioctl argument, as the kernel's
 * `copy_from_user` sees them. DM_OP reads only `dom` and `num` here; its buffer sizes sit behind
 * user pointers (use `PrivcmdHandle.dmOp`, which has the buffers).
 */
export function decodePrivcmdIoctl(request: number, arg: Uint8Array): PrivcmdRequest {
  const size = ARG_SIZE.get(request);
  if (size === undefined) return { kind: 'unknown', request };
  if (arg.byteLength < size) {
    throw new PolicyError(
      'BAD_TRACE',
      XEN_IOCTL_NAMES.get(request) ?? String(request),
      `expected a ${size}-byte argument, got ${arg.byteLength} bytes`,
    );
  }
  switch (request) {
    case IOCTL_PRIVCMD_HYPERCALL:
      return { kind: 'hypercall', op: Number(readU64(arg, 0)) };
    case IOCTL_PRIVCMD_MMAP:
      return { kind: 'mmap', dom: readU16(arg, 4), num: signed32(readU32(arg, 0)) };
    case IOCTL_PRIVCMD_MMAPBATCH:
      return { kind: 'mmapbatch', dom: readU16(arg, 4), num: signed32(readU32(arg, 0)) };
    case IOCTL_PRIVCMD_MMAPBATCH_V2:
      // `unsigned int num` in v2, but the kernel checks it as `m.num <= 0` on an int copy.
      return { kind: 'mmapbatch_v2', dom: readU16(arg, 4), num: signed32(readU32(arg, 0)) };
    case IOCTL_PRIVCMD_DM_OP:
      return {
        kind: 'dm_op',
        dom: readU16(arg, 0),
        bufSizes: new Array<number>(readU16(arg, 2)).fill(0),
      };
    case IOCTL_PRIVCMD_RESTRICT:
      return { kind: 'restrict', domid: readU16(arg, 0) };
    case IOCTL_PRIVCMD_MMAP_RESOURCE:
      return {
        kind: 'mmap_resource',
        dom: readU16(arg, 0),
        type: readU32(arg, 4),
        id: readU32(arg, 8),
        idx: readU32(arg, 12),
        num: Number(readU64(arg, 16)),
        addr: readU64(arg, 24),
      };
    case IOCTL_PRIVCMD_IRQFD:
      return { kind: 'irqfd', dom: readU16(arg, 20), flags: readU32(arg, 16) };
    default:
      return { kind: 'ioeventfd', dom: readU16(arg, 44), flags: readU32(arg, 40) };
  }
}
