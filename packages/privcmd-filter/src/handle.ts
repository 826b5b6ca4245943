import * as sys from '@xen-depriv/sys';
import { readU32 } from './dmop-fields.js';
import { type Decision, LINUX_ERRNO } from './errno.js';
import { IOCTL_PRIVCMD_DM_OP, IOCTL_PRIVCMD_RESTRICT } from './ioctls.js';
import { PrivcmdModel, type PrivcmdModelOptions } from './model.js';
import { decide, type PolicyContext, type PolicyProfile } from './policy.js';

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

/** A request the handle refused before it reached the kernel. */
export interface DeniedRequest {
  readonly domid: number;
  readonly op: number | undefined;
  readonly decision: Decision;
}

/** Thrown for a denied request: `errno` is what the kernel (or the policy, EPERM) answers. */
export class PrivcmdDeniedError extends Error {
  override readonly name = 'PrivcmdDeniedError';
  readonly errno: number;
  readonly code: string;
  readonly decision: Decision;
  constructor(decision: Decision) {
    super(`DM_OP denied (${decision.code}): ${decision.reason}`);
    this.errno = decision.errno;
    this.code = decision.code;
    this.decision = decision;
  }
}

export interface PrivcmdHandleOptions {
  /** The guest this device model serves: the fd is restricted to it. */
  readonly domid: number;
  /** The profile every DM_OP must pass; `null` checks only the kernel's rules. */
  readonly profile: PolicyProfile | null;
  /** What the toolstack declared for the guest (needed when `profile` is set). */
  readonly context?: PolicyContext;
  /** Default: `@xen-depriv/sys` (open, close, ioctl). */
  readonly io?: PrivcmdIo;
  /** Default `/dev/xen/privcmd`. */
  readonly path?: string;
  /** The kernel's module parameters, when not the defaults. */
  readonly model?: PrivcmdModelOptions;
  /** Called for each denied request (after it is counted), e.g. to log it. */
  readonly onDenied?: (denied: DeniedRequest) => void;
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
const NO_CONTEXT: PolicyContext = { guestMemoryEndGfn: 0n, ioRanges: [] };

/**
 * `/dev/xen/privcmd` opened, restricted to one domid, and wrapped so that every DM_OP passes the
 * kernel model and the profile before `ioctl`: a denied request never reaches the kernel, is
 * counted and reported to `onDenied`, and throws `PrivcmdDeniedError`. Implements dmop-abi's
 * `DmOpTransport` shape (`dmOp(domid, bufs)`).
 */
export class PrivcmdHandle {
  readonly domid: number;
  readonly fd: number;
  readonly #io: PrivcmdIo;
  readonly #model: PrivcmdModel;
  readonly #profile: PolicyProfile | null;
  readonly #context: PolicyContext;
  readonly #onDenied: ((d: DeniedRequest) => void) | undefined;
  #closed = false;
  /** Requests passed to the kernel and requests refused before it. */
  readonly counts = { allowed: 0, denied: 0 };

  private constructor(
    options: PrivcmdHandleOptions,
    io: PrivcmdIo,
    fd: number,
    model: PrivcmdModel,
  ) {
    this.domid = options.domid;
    this.fd = fd;
    this.#io = io;
    this.#model = model;
    this.#profile = options.profile;
    this.#context = options.context ?? NO_CONTEXT;
    this.#onDenied = options.onDenied;
  }

  /** Opens the device and restricts the fd to `domid` (IOCTL_PRIVCMD_RESTRICT), closing it again if that fails. */
  static open(options: PrivcmdHandleOptions): PrivcmdHandle {
    if (!Number.isInteger(options.domid) || options.domid < 0 || options.domid >= 0x7ff0) {
      throw new RangeError(
        `PrivcmdHandle: expected a guest domid 0..32751, got ${String(options.domid)}`,
      );
    }
    if (options.profile !== null && options.context === undefined) {
      throw new TypeError(
        `PrivcmdHandle: profile ${options.profile.name} needs a PolicyContext, got none`,
      );
    }
    const io = options.io ?? SYS_IO;
    const fd = io.open(options.path ?? '/dev/xen/privcmd', O_RDWR);
    try {
      const arg = new Uint8Array(2);
      new DataView(arg.buffer).setUint16(0, options.domid, true);
      io.ioctl(fd, IOCTL_PRIVCMD_RESTRICT, arg);
    } catch (e) {
      io.close(fd);
      throw e;
    }
    const model = new PrivcmdModel(options.model);
    model.decide({ kind: 'restrict', domid: options.domid });
    return new PrivcmdHandle(options, io, fd, model);
  }

  /** Decides without issuing: what `dmOp` would do with this request. */
  check(domid: number, bufs: readonly Uint8Array[]): Decision {
    if (this.#profile === null) {
      return this.#model.decide({
        kind: 'dm_op',
        dom: domid,
        bufSizes: bufs.map((b) => b.byteLength),
      });
    }
    return decide({ domid, bufs }, this.#profile, this.#context, this.#model);
  }

  /** Issues one DM_OP (bufs[0] is `struct xen_dm_op`); the kernel writes outputs back into the buffers. */
  dmOp(domid: number, bufs: readonly Uint8Array[]): number {
    if (this.#closed)
      throw new PrivcmdDeniedError({
        allowed: false,
        errno: LINUX_ERRNO.EFAULT,
        code: 'EFAULT',
        reason: 'PrivcmdHandle is closed',
      });
    const d = this.check(domid, bufs);
    if (!d.allowed) {
      this.counts.denied++;
      const first = bufs[0];
      const op = first && first.byteLength >= 4 ? readU32(first, 0) : undefined;
      this.#onDenied?.({ domid, op, decision: d });
      throw new PrivcmdDeniedError(d);
    }
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
    this.counts.allowed++;
    return this.#io.ioctl(this.fd, IOCTL_PRIVCMD_DM_OP, arg, pointers);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#io.close(this.fd);
  }
}
