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
} from '@xen-depriv/dmop-abi';
import { readU16, readU32, readU64 } from '@xen-depriv/dmop-abi/fields';
import { PRIVCMD_IRQFD_LAYOUT, PRIVCMD_LAYOUT, SIZEOF } from '@xen-depriv/dmop-abi/layout';
import { PolicyError } from './error.js';
import type { PrivcmdRequest } from './model.js';

/** The size field of each request number: dmop-abi's struct sizes (include/uapi/xen/privcmd.h, x86-64). */
const ARG_SIZE = new Map<number, number>([
  [IOCTL_PRIVCMD_HYPERCALL, SIZEOF.privcmd_hypercall],
  [IOCTL_PRIVCMD_MMAP, SIZEOF.privcmd_mmap],
  [IOCTL_PRIVCMD_MMAPBATCH, SIZEOF.privcmd_mmapbatch],
  [IOCTL_PRIVCMD_MMAPBATCH_V2, SIZEOF.privcmd_mmapbatch_v2],
  [IOCTL_PRIVCMD_DM_OP, SIZEOF.privcmd_dm_op],
  [IOCTL_PRIVCMD_RESTRICT, 2],
  [IOCTL_PRIVCMD_MMAP_RESOURCE, SIZEOF.privcmd_mmap_resource],
  [IOCTL_PRIVCMD_IRQFD, PRIVCMD_IRQFD_LAYOUT.privcmd_irqfd.size],
  [IOCTL_PRIVCMD_IOEVENTFD, PRIVCMD_IRQFD_LAYOUT.privcmd_ioeventfd.size],
]);
const L = PRIVCMD_LAYOUT;
const IRQ = PRIVCMD_IRQFD_LAYOUT;

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
      return { kind: 'hypercall', op: Number(readU64(arg, L.privcmd_hypercall.op)) };
    case IOCTL_PRIVCMD_MMAP:
      return {
        kind: 'mmap',
        dom: readU16(arg, L.privcmd_mmap.dom),
        num: signed32(readU32(arg, L.privcmd_mmap.num)),
      };
    case IOCTL_PRIVCMD_MMAPBATCH:
      return {
        kind: 'mmapbatch',
        dom: readU16(arg, L.privcmd_mmapbatch.dom),
        num: signed32(readU32(arg, L.privcmd_mmapbatch.num)),
      };
    case IOCTL_PRIVCMD_MMAPBATCH_V2:
      // `unsigned int num` in v2, but the kernel checks it as `m.num <= 0` on an int copy.
      return {
        kind: 'mmapbatch_v2',
        dom: readU16(arg, L.privcmd_mmapbatch_v2.dom),
        num: signed32(readU32(arg, L.privcmd_mmapbatch_v2.num)),
      };
    case IOCTL_PRIVCMD_DM_OP:
      return {
        kind: 'dm_op',
        dom: readU16(arg, L.privcmd_dm_op.dom),
        bufSizes: new Array<number>(readU16(arg, L.privcmd_dm_op.num)).fill(0),
      };
    case IOCTL_PRIVCMD_RESTRICT:
      return { kind: 'restrict', domid: readU16(arg, 0) };
    case IOCTL_PRIVCMD_MMAP_RESOURCE: {
      const r = L.privcmd_mmap_resource;
      return {
        kind: 'mmap_resource',
        dom: readU16(arg, r.dom),
        type: readU32(arg, r.type),
        id: readU32(arg, r.id),
        idx: readU32(arg, r.idx),
        num: Number(readU64(arg, r.num)),
        addr: readU64(arg, r.addr),
      };
    }
    case IOCTL_PRIVCMD_IRQFD:
      return {
        kind: 'irqfd',
        dom: readU16(arg, IRQ.privcmd_irqfd.dom),
        flags: readU32(arg, IRQ.privcmd_irqfd.flags),
      };
    default:
      return {
        kind: 'ioeventfd',
        dom: readU16(arg, IRQ.privcmd_ioeventfd.dom),
        flags: readU32(arg, IRQ.privcmd_ioeventfd.flags),
      };
  }
}
