import {
  type DmOpTransport,
  encodeDomid,
  IOCTL_PRIVCMD_DM_OP,
  IOCTL_PRIVCMD_RESTRICT,
} from '@xen-depriv/dmop-abi';
import { PRIVCMD_LAYOUT, SIZEOF } from '@xen-depriv/dmop-abi/layout';
import type { IoctlPointer } from '@xen-depriv/sys';
import * as sys from '@xen-depriv/sys';
import { decodePrivcmdIoctl } from './decode.js';
import type { Decision } from './errno.js';
import { checkGateOptions, closedError, DmOpGate, type GateOptions } from './gate.js';

/** The OS calls a handle makes: `@xen-depriv/sys` on a real host, a stub in tests. */
export interface PrivcmdIo {
  open(path: string, flags: number): number;
  close(fd: number): void;
  ioctl(fd: number, request: number, arg: Uint8Array, pointers?: readonly IoctlPointer[]): number;
}

export interface PrivcmdHandleOptions extends GateOptions {
  /** Default: `@xen-depriv/sys` (open, close, ioctl). */
  readonly io?: PrivcmdIo;
  /** Default `/dev/xen/privcmd`. */
  readonly path?: string;
}

// linux/fcntl.h
const O_RDWR = 2;
// struct privcmd_dm_op and privcmd_dm_op_buf, from dmop-abi's gcc-checked layout.
const DM_OP_SIZE = SIZEOF.privcmd_dm_op;
const DM_OP_BUF_SIZE = SIZEOF.privcmd_dm_op_buf;
const { dom: DOM_AT, num: NUM_AT, ubufs: UBUFS_AT } = PRIVCMD_LAYOUT.privcmd_dm_op;
const { uptr: UPTR_AT, size: SIZE_AT } = PRIVCMD_LAYOUT.privcmd_dm_op_buf;
const SYS_IO: PrivcmdIo = {
  open: (path, flags) => sys.open(path, flags),
  close: sys.close,
  ioctl: sys.ioctl,
};

/** A kernel refusal (`SysError` from `@xen-depriv/sys`) as DmOpTransport's `-errno`; anything else is thrown. */
function kernelResult(call: () => number): number {
  try {
    return call();
  } catch (e) {
    const errno = (e as { errno?: unknown }).errno;
    if (typeof errno === 'number' && errno > 0) return -errno;
    throw e;
  }
}

/**
 * `/dev/xen/privcmd` opened, restricted to one domid, and wrapped so that every DM_OP passes the
 * kernel model and the profile before `ioctl`: a denied request never reaches the kernel, is
 * counted and reported to `onDenied`, and throws `PrivcmdDeniedError` (a `XenError`). A dmop-abi
 * `DmOpTransport`: a kernel refusal comes back as `-errno`, as `DeviceModel` expects.
 */
export class PrivcmdHandle implements DmOpTransport {
  readonly domid: number;
  readonly fd: number;
  readonly #io: PrivcmdIo;
  readonly #gate: DmOpGate;
  #closed = false;

  private constructor(domid: number, io: PrivcmdIo, fd: number, gate: DmOpGate) {
    this.domid = domid;
    this.fd = fd;
    this.#io = io;
    this.#gate = gate;
  }

  /** Opens the device and restricts the fd to `domid` (IOCTL_PRIVCMD_RESTRICT), closing it again if that fails. */
  static open(options: PrivcmdHandleOptions): PrivcmdHandle {
    checkGateOptions('PrivcmdHandle', options);
    const io = options.io ?? SYS_IO;
    const fd = io.open(options.path ?? '/dev/xen/privcmd', O_RDWR);
    try {
      // struct privcmd_restrict is a bare domid_t.
      io.ioctl(fd, IOCTL_PRIVCMD_RESTRICT, encodeDomid(options.domid));
    } catch (e) {
      io.close(fd);
      throw e;
    }
    return new PrivcmdHandle(options.domid, io, fd, new DmOpGate(options));
  }

  /** Requests passed to the kernel and requests refused before it. */
  get counts(): { readonly allowed: number; readonly denied: number } {
    return this.#gate.counts;
  }

  /** Decides without issuing: what `dmOp` would do with this request. */
  check(domid: number, bufs: readonly Uint8Array[]): Decision {
    return this.#gate.check(domid, bufs);
  }

  /** Issues one DM_OP (bufs[0] is `struct xen_dm_op`); the kernel writes outputs back into the buffers. */
  dmOp(domid: number, bufs: readonly Uint8Array[]): number {
    if (this.#closed) {
      throw closedError('PrivcmdHandle');
    }
    this.#gate.admit('PrivcmdHandle.dmOp', domid, bufs);
    // struct privcmd_dm_op {domid_t dom; u16 num; ubufs} followed in the same bytes by the
    // privcmd_dm_op_buf array, so `ubufs` can point into the argument itself.
    const arg = new Uint8Array(DM_OP_SIZE + DM_OP_BUF_SIZE * bufs.length);
    arg[DOM_AT] = domid & 0xff;
    arg[DOM_AT + 1] = domid >>> 8;
    arg[NUM_AT] = bufs.length & 0xff;
    arg[NUM_AT + 1] = bufs.length >>> 8;
    const pointers: IoctlPointer[] = [];
    if (bufs.length > 0) pointers.push({ offset: UBUFS_AT, buffer: arg.subarray(DM_OP_SIZE) });
    for (let i = 0; i < bufs.length; i++) {
      const buf = bufs[i] as Uint8Array;
      const at = DM_OP_SIZE + DM_OP_BUF_SIZE * i;
      // size_t size: the model has capped it far below 2^32, so the high half stays 0.
      const size = buf.byteLength;
      arg[at + SIZE_AT] = size & 0xff;
      arg[at + SIZE_AT + 1] = (size >>> 8) & 0xff;
      arg[at + SIZE_AT + 2] = (size >>> 16) & 0xff;
      arg[at + SIZE_AT + 3] = size >>> 24;
      pointers.push({ offset: at + UPTR_AT, buffer: buf });
    }
    return kernelResult(() => this.#io.ioctl(this.fd, IOCTL_PRIVCMD_DM_OP, arg, pointers));
  }

  /**
   * DmOpTransport's IOCTL_PRIVCMD_RESTRICT: the fd is restricted at open, so the same domid is 0
   * (and is asked of the kernel again) and another is -EINVAL without reaching it.
   */
  restrict(domid: number): number {
    if (this.#closed) throw closedError('PrivcmdHandle');
    const d = this.#gate.model.decide({ kind: 'restrict', domid });
    if (!d.allowed) return -d.errno;
    return kernelResult(() => this.#io.ioctl(this.fd, IOCTL_PRIVCMD_RESTRICT, encodeDomid(domid)));
  }

  /**
   * Any other privcmd ioctl on the restricted fd (MMAPBATCH_V2, MMAP_RESOURCE, ... for a foreign
   * memory backend): the kernel model decides from the argument's fields first, and a denied
   * request throws `PrivcmdDeniedError` without reaching the kernel. DM_OP goes through `dmOp`.
   */
  ioctl(request: number, arg: Uint8Array, pointers?: readonly IoctlPointer[]): number {
    if (this.#closed) {
      throw closedError('PrivcmdHandle');
    }
    if (request === IOCTL_PRIVCMD_DM_OP) {
      throw new TypeError(
        'PrivcmdHandle.ioctl: expected a request other than IOCTL_PRIVCMD_DM_OP (use dmOp, which sees the buffers)',
      );
    }
    this.#gate.admitRequest('PrivcmdHandle.ioctl', decodePrivcmdIoctl(request, arg));
    return this.#io.ioctl(this.fd, request, arg, pointers);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#io.close(this.fd);
  }
}
