import type { DmOpTransport } from '@xen-depriv/dmop-abi';
import * as sys from '@xen-depriv/sys';
import { decodePrivcmdIoctl } from './decode.js';
import type { Decision } from './errno.js';
import { checkGateOptions, closedError, DmOpGate, type GateOptions } from './gate.js';
import { IOCTL_PRIVCMD_DM_OP, IOCTL_PRIVCMD_RESTRICT } from './ioctls.js';

/** A user pointer patched into an ioctl argument, as `@xen-depriv/sys`'s `ioctl` takes it. */
export interface IoctlPointer {
  readonly offset: number;
  readonly buffer: Uint8Array;
}

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
/** sizeof(struct privcmd_dm_op) and sizeof(struct privcmd_dm_op_buf) on x86-64. */
const PRIVCMD_DM_OP_SIZE = 16;
const PRIVCMD_DM_OP_BUF_SIZE = 16;
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
      io.ioctl(
        fd,
        IOCTL_PRIVCMD_RESTRICT,
        Uint8Array.of(options.domid & 0xff, options.domid >>> 8),
      );
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
    const arg = new Uint8Array(PRIVCMD_DM_OP_SIZE + PRIVCMD_DM_OP_BUF_SIZE * bufs.length);
    arg[0] = domid & 0xff;
    arg[1] = domid >>> 8;
    arg[2] = bufs.length & 0xff;
    arg[3] = bufs.length >>> 8;
    const pointers: IoctlPointer[] = [];
    if (bufs.length > 0) pointers.push({ offset: 8, buffer: arg.subarray(PRIVCMD_DM_OP_SIZE) });
    for (let i = 0; i < bufs.length; i++) {
      const buf = bufs[i] as Uint8Array;
      const at = PRIVCMD_DM_OP_SIZE + PRIVCMD_DM_OP_BUF_SIZE * i;
      // size_t size: the model has capped it far below 2^32, so the high half stays 0.
      const size = buf.byteLength;
      arg[at + 8] = size & 0xff;
      arg[at + 9] = (size >>> 8) & 0xff;
      arg[at + 10] = (size >>> 16) & 0xff;
      arg[at + 11] = size >>> 24;
      pointers.push({ offset: at, buffer: buf });
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
    return kernelResult(() =>
      this.#io.ioctl(this.fd, IOCTL_PRIVCMD_RESTRICT, Uint8Array.of(domid & 0xff, domid >>> 8)),
    );
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
