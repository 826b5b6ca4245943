import {
  DOMID_FIRST_RESERVED,
  DOMID_INVALID,
  Errno,
  PRIVCMD_FLAG_DEASSIGN,
} from '@xen-depriv/dmop-abi';
import { allow, type Decision, deny } from './errno.js';

/** evtchn.c's `UNRESTRICTED_DOMID ((domid_t)-1)`. */
const EVTCHN_UNRESTRICTED = 0xffff;

/**
 * A user pointer the kernel cannot use: `unmapped` (nothing there, NULL, or a page it may not
 * write) fails in copy_from_user()/pin_user_pages_fast(); `kernel` (an address above the user
 * range) already fails access_ok(). Both are EFAULT, at different points of a handler.
 */
export type UserPointerFault = 'unmapped' | 'kernel';

/** Fields every request can carry: the ioctl's own argument pointer does not copy in. */
export interface ArgPointer {
  readonly argFault?: boolean;
}

/** A privcmd mapping (mmap of the privcmd fd) at the request's address; default true. */
export interface PrivcmdVma {
  readonly vma?: boolean;
}

/** One privcmd ioctl, with the fields the kernel reads before it acts. */
export type PrivcmdRequest = (
  | { readonly kind: 'hypercall'; readonly op: number }
  | {
      readonly kind: 'mmap';
      readonly dom: number;
      readonly num: number;
      /** The privcmd_mmap_entry array does not copy in (gather_array()). */
      readonly entryFault?: boolean;
    }
  | ({
      readonly kind: 'mmapbatch' | 'mmapbatch_v2';
      readonly dom: number;
      readonly num: number;
      /** The gfn array does not copy in (gather_array()). */
      readonly arrFault?: boolean;
    } & PrivcmdVma)
  | {
      readonly kind: 'dm_op';
      readonly dom: number;
      readonly bufSizes: readonly number[];
      /** The privcmd_dm_op_buf array does not copy in. */
      readonly ubufsFault?: boolean;
      /** Per buffer: its pointer cannot be used (undefined: it can). */
      readonly bufFaults?: readonly (UserPointerFault | undefined)[];
      /**
       * offset_in_page(uptr) of each buffer, when the caller knows it (an empty JavaScript
       * buffer's pointer is NULL: offset 0). Only zero-length buffers depend on it.
       */
      readonly bufPageOffsets?: readonly number[];
    }
  | { readonly kind: 'restrict'; readonly domid: number }
  | ({
      readonly kind: 'mmap_resource';
      readonly dom: number;
      readonly type: number;
      readonly id: number;
      readonly idx: number;
      readonly num: number;
      readonly addr: bigint;
    } & PrivcmdVma)
  | { readonly kind: 'irqfd'; readonly dom: number; readonly flags: number }
  | { readonly kind: 'ioeventfd'; readonly dom: number; readonly flags: number }
  | { readonly kind: 'unknown'; readonly request: number }
) &
  ArgPointer;

/**
 * A decision about a privcmd ioctl, and what the kernel wrote back before deciding:
 * MMAPBATCH_V2 zeroes the caller's `err` array (clear_user()) before it looks for the mapping.
 */
export type PrivcmdDecision = Decision & { readonly errArrayCleared?: boolean };

const FAULT = (name: string, what: string) => deny('EFAULT', `${name}: ${what} does not copy in`);

export interface PrivcmdModelOptions {
  /** Module parameter `dm_op_max_nr_bufs` (default 16). */
  readonly dmOpMaxNrBufs?: number;
  /** Module parameter `dm_op_buf_max_size` (default 4096). */
  readonly dmOpBufMaxSize?: number;
  /**
   * `XENFEAT_auto_translated_physmap` (PVH/HVM dom0 or Arm): IOCTL_PRIVCMD_MMAP is ENOSYS there,
   * before the restriction is looked at. Default false (x86 PV dom0).
   */
  readonly autoTranslatedPhysmap?: boolean;
  /** Whether the kernel has IRQFD/IOEVENTFD (Linux >= 6.7). Default false, as Linux 6.1 where they are ENOTTY. */
  readonly irqfd?: boolean;
}

/**
 * Linux privcmd's checks for one open fd (drivers/xen/privcmd.c), in the order the kernel makes them:
 * restriction first, sizes second. `decide()` applies a RESTRICT that is allowed, like the ioctl does.
 */
export class PrivcmdModel {
  readonly dmOpMaxNrBufs: number;
  readonly dmOpBufMaxSize: number;
  readonly autoTranslatedPhysmap: boolean;
  readonly irqfd: boolean;
  #domid = DOMID_INVALID;

  constructor(options: PrivcmdModelOptions = {}) {
    this.dmOpMaxNrBufs = options.dmOpMaxNrBufs ?? 16;
    this.dmOpBufMaxSize = options.dmOpBufMaxSize ?? 4096;
    this.autoTranslatedPhysmap = options.autoTranslatedPhysmap ?? false;
    this.irqfd = options.irqfd ?? false;
  }

  /**
   * MMAPBATCH(_V2)'s return value once Xen has answered every frame (privcmd_ioctl_mmap_batch()):
   * per-frame errors go to the caller's array and the ioctl succeeds, unless a frame was paged
   * out (-ENOENT), which makes the whole call -ENOENT so the caller retries.
   */
  static mmapbatchResult(frameErrors: readonly number[]): number {
    return frameErrors.includes(-Errno.ENOENT) ? -Errno.ENOENT : 0;
  }

  /** The domid this fd is restricted to, or undefined while unrestricted. */
  get domid(): number | undefined {
    return this.#domid === DOMID_INVALID ? undefined : this.#domid;
  }

  /** What the kernel would answer, and the state change a successful RESTRICT makes. */
  decide(request: PrivcmdRequest): PrivcmdDecision {
    const restricted = this.#domid !== DOMID_INVALID;
    const other = (dom: number) => restricted && dom !== this.#domid;
    const otherReason = (name: string, dom: number) =>
      `${name}: fd is restricted to domid ${this.#domid}, request targets domid ${dom}`;
    switch (request.kind) {
      case 'hypercall':
        // privcmd_ioctl_hypercall(): the restriction before copy_from_user().
        if (restricted) {
          return deny(
            'EPERM',
            `IOCTL_PRIVCMD_HYPERCALL: fd is restricted to domid ${this.#domid}, arbitrary hypercalls are refused`,
          );
        }
        if (request.argFault) return FAULT('IOCTL_PRIVCMD_HYPERCALL', 'the argument');
        return allow(`IOCTL_PRIVCMD_HYPERCALL op ${request.op} on an unrestricted fd`);
      case 'mmap':
        if (this.autoTranslatedPhysmap) {
          return deny(
            'ENOSYS',
            'IOCTL_PRIVCMD_MMAP: not supported with XENFEAT_auto_translated_physmap, use MMAPBATCH_V2',
          );
        }
        if (request.argFault) return FAULT('IOCTL_PRIVCMD_MMAP', 'the argument');
        if (other(request.dom))
          return deny('EPERM', otherReason('IOCTL_PRIVCMD_MMAP', request.dom));
        // gather_array() of no entries copies nothing, and an empty list is success.
        if (request.num > 0 && request.entryFault) {
          return FAULT('IOCTL_PRIVCMD_MMAP', 'the privcmd_mmap_entry array');
        }
        return allow(`IOCTL_PRIVCMD_MMAP of ${request.num} entries of domid ${request.dom}`);
      case 'mmapbatch':
      case 'mmapbatch_v2': {
        const name =
          request.kind === 'mmapbatch' ? 'IOCTL_PRIVCMD_MMAPBATCH' : 'IOCTL_PRIVCMD_MMAPBATCH_V2';
        if (request.argFault) return FAULT(name, 'the argument');
        if (other(request.dom)) return deny('EPERM', otherReason(name, request.dom));
        // Both versions are copied into a privcmd_mmapbatch_v2 whose num is unsigned: `m.num <= 0`
        // refuses only 0 (a negative v1 num is a huge count, refused later by access_ok, EFAULT).
        if (request.num >>> 0 === 0) return deny('EINVAL', `${name}: num must not be 0`);
        if (request.arrFault) return FAULT(name, 'the gfn array');
        // V2 zeroes the err array (clear_user()) before it looks up the mapping.
        const cleared = request.kind === 'mmapbatch_v2';
        if (request.vma === false) {
          return {
            ...deny('EINVAL', `${name}: no privcmd mapping at the address (find_vma())`),
            errArrayCleared: cleared,
          };
        }
        return {
          ...allow(`${name} of ${request.num} frames of domid ${request.dom}`),
          errArrayCleared: cleared,
        };
      }
      case 'dm_op': {
        if (request.argFault) return FAULT('IOCTL_PRIVCMD_DM_OP', 'the argument');
        if (other(request.dom))
          return deny('EPERM', otherReason('IOCTL_PRIVCMD_DM_OP', request.dom));
        const num = request.bufSizes.length;
        if (num === 0)
          return allow('IOCTL_PRIVCMD_DM_OP with num == 0 returns 0 without a hypercall');
        if (num > this.dmOpMaxNrBufs) {
          return deny(
            'E2BIG',
            `IOCTL_PRIVCMD_DM_OP: at most dm_op_max_nr_bufs=${this.dmOpMaxNrBufs} buffers, got ${num}`,
          );
        }
        if (request.ubufsFault) {
          return FAULT('IOCTL_PRIVCMD_DM_OP', 'the privcmd_dm_op_buf array');
        }
        // Buffers from a live process (PrivcmdHandle, SimPrivcmd) never carry faults: skip them.
        const faults = request.bufFaults;
        for (let i = 0; i < num; i++) {
          const size = request.bufSizes[i] ?? 0;
          if (size > this.dmOpBufMaxSize) {
            return deny(
              'E2BIG',
              `IOCTL_PRIVCMD_DM_OP: buffer ${i} is ${size} bytes, at most dm_op_buf_max_size=${this.dmOpBufMaxSize}`,
            );
          }
          // access_ok() in the same loop as the size check.
          if (faults !== undefined && faults[i] === 'kernel') {
            return deny('EFAULT', `IOCTL_PRIVCMD_DM_OP: buffer ${i} is not a user address`);
          }
        }
        // lock_pages() then pins each buffer in turn (pin_user_pages_fast(), FOLL_WRITE).
        if (faults !== undefined) {
          for (let i = 0; i < num; i++) {
            if (faults[i] === 'unmapped' && (request.bufSizes[i] ?? 0) > 0) {
              return deny(
                'EFAULT',
                `IOCTL_PRIVCMD_DM_OP: buffer ${i} cannot be pinned for writing`,
              );
            }
          }
        }
        // lock_pages() pins DIV_ROUND_UP(offset_in_page(uptr) + size, PAGE_SIZE) pages per buffer:
        // none for a zero-length buffer at a page-aligned address, and pin_user_pages_fast()
        // pinning 0 pages is -EFAULT. Seen on Linux 6.1 under Xen 4.17 (test/xen/dmop-abi.xen.mjs).
        // When every buffer is so, Linux 6.1.192 oopses instead (tools/xen-matrix/README.md).
        const offsets = request.bufPageOffsets;
        if (offsets !== undefined) {
          for (let i = 0; i < num; i++) {
            if ((request.bufSizes[i] ?? 0) === 0 && (offsets[i] ?? 0) % 4096 === 0) {
              return deny(
                'EFAULT',
                `IOCTL_PRIVCMD_DM_OP: buffer ${i} is empty at a page-aligned address: lock_pages() pins no page`,
              );
            }
          }
        }
        return allow(`IOCTL_PRIVCMD_DM_OP with ${num} buffers for domid ${request.dom}`);
      }
      case 'restrict':
        if (request.argFault) return FAULT('IOCTL_PRIVCMD_RESTRICT', 'the argument');
        if (!restricted) {
          this.#domid = request.domid;
          return allow(`IOCTL_PRIVCMD_RESTRICT: fd restricted to domid ${request.domid}`);
        }
        if (request.domid !== this.#domid) {
          return deny(
            'EINVAL',
            `IOCTL_PRIVCMD_RESTRICT: fd is already restricted to domid ${this.#domid}, got ${request.domid}`,
          );
        }
        return allow(`IOCTL_PRIVCMD_RESTRICT: fd already restricted to domid ${request.domid}`);
      case 'mmap_resource':
        if (request.argFault) return FAULT('IOCTL_PRIVCMD_MMAP_RESOURCE', 'the argument');
        if (other(request.dom))
          return deny('EPERM', otherReason('IOCTL_PRIVCMD_MMAP_RESOURCE', request.dom));
        if ((request.addr !== 0n) !== (request.num !== 0)) {
          return deny(
            'EINVAL',
            `IOCTL_PRIVCMD_MMAP_RESOURCE: addr and num must both be set or both be 0, got addr=0x${request.addr.toString(16)} num=${request.num}`,
          );
        }
        if (request.num !== 0 && request.vma === false) {
          return deny(
            'EINVAL',
            'IOCTL_PRIVCMD_MMAP_RESOURCE: no privcmd mapping at the address (find_vma())',
          );
        }
        return allow(
          `IOCTL_PRIVCMD_MMAP_RESOURCE type ${request.type} id ${request.id} of domid ${request.dom}`,
        );
      case 'irqfd':
      case 'ioeventfd': {
        const name = request.kind === 'irqfd' ? 'IOCTL_PRIVCMD_IRQFD' : 'IOCTL_PRIVCMD_IOEVENTFD';
        if (!this.irqfd)
          return deny('ENOTTY', `${name}: this kernel has no such ioctl (added in Linux 6.7)`);
        if ((request.flags & ~PRIVCMD_FLAG_DEASSIGN) !== 0) {
          return deny(
            'EINVAL',
            `${name}: only the DEASSIGN flag (1) is defined, got flags 0x${request.flags.toString(16)}`,
          );
        }
        if (other(request.dom)) return deny('EPERM', otherReason(name, request.dom));
        return allow(`${name} for domid ${request.dom}`);
      }
      case 'unknown':
        return deny(
          'ENOTTY',
          `privcmd: unknown ioctl request 0x${(request.request >>> 0).toString(16)}`,
        );
    }
  }
}

/** One /dev/xen/evtchn ioctl, with the fields drivers/xen/evtchn.c checks. */
export type EvtchnRequest = (
  | { readonly kind: 'bind_virq'; readonly virq: number }
  | {
      readonly kind: 'bind_interdomain';
      readonly remoteDomain: number;
      readonly remotePort: number;
    }
  | { readonly kind: 'bind_unbound_port'; readonly remoteDomain: number }
  | { readonly kind: 'unbind'; readonly port: number }
  | { readonly kind: 'notify'; readonly port: number }
  | { readonly kind: 'reset' }
  | { readonly kind: 'restrict_domid'; readonly domid: number }
  | { readonly kind: 'unknown'; readonly request: number }
) &
  ArgPointer;

export interface EvtchnModelOptions {
  /** `xen_evtchn_nr_channels()`: 4096 with the 2-level ABI on 64-bit, 2^17 with FIFO. Default 4096. */
  readonly nrChannels?: number;
}

/**
 * The evtchn device's rules, which are not privcmd's: RESTRICT_DOMID can be made only once (even a
 * second call with the same domid is EACCES), domid 0 and reserved domids are EINVAL, a restricted fd
 * cannot bind VIRQs or allocate unbound ports (EACCES), interdomain binds only to the restricted domid
 * (EACCES), and an unknown ioctl is ENOSYS, not ENOTTY. Ports bound through this model are tracked so
 * UNBIND/NOTIFY of a port the fd does not own is ENOTCONN.
 */
export class EvtchnModel {
  readonly nrChannels: number;
  #restrict = EVTCHN_UNRESTRICTED;
  readonly #bound = new Set<number>();

  constructor(options: EvtchnModelOptions = {}) {
    this.nrChannels = options.nrChannels ?? 4096;
  }

  get domid(): number | undefined {
    return this.#restrict === EVTCHN_UNRESTRICTED ? undefined : this.#restrict;
  }

  /** Records a port a successful bind returned, as `evtchn_bind_to_user` does. */
  bound(port: number): void {
    this.#bound.add(port);
  }

  decide(request: EvtchnRequest): Decision {
    const restricted = this.#restrict !== EVTCHN_UNRESTRICTED;
    switch (request.kind) {
      case 'bind_virq':
        if (restricted)
          return deny(
            'EACCES',
            `IOCTL_EVTCHN_BIND_VIRQ: fd is restricted to domid ${this.#restrict}`,
          );
        if (request.argFault) return FAULT('IOCTL_EVTCHN_BIND_VIRQ', 'the argument');
        return allow(`IOCTL_EVTCHN_BIND_VIRQ virq ${request.virq}`);
      case 'bind_interdomain':
        // The only evtchn bind that copies its argument before the restriction check.
        if (request.argFault) return FAULT('IOCTL_EVTCHN_BIND_INTERDOMAIN', 'the argument');
        if (restricted && request.remoteDomain !== this.#restrict) {
          return deny(
            'EACCES',
            `IOCTL_EVTCHN_BIND_INTERDOMAIN: fd is restricted to domid ${this.#restrict}, remote domain is ${request.remoteDomain}`,
          );
        }
        return allow(
          `IOCTL_EVTCHN_BIND_INTERDOMAIN to domid ${request.remoteDomain} port ${request.remotePort}`,
        );
      case 'bind_unbound_port':
        if (restricted) {
          return deny(
            'EACCES',
            `IOCTL_EVTCHN_BIND_UNBOUND_PORT: fd is restricted to domid ${this.#restrict}`,
          );
        }
        if (request.argFault) return FAULT('IOCTL_EVTCHN_BIND_UNBOUND_PORT', 'the argument');
        return allow(`IOCTL_EVTCHN_BIND_UNBOUND_PORT for domid ${request.remoteDomain}`);
      case 'unbind':
        if (request.argFault) return FAULT('IOCTL_EVTCHN_UNBIND', 'the argument');
        if (request.port >= this.nrChannels) {
          return deny(
            'EINVAL',
            `IOCTL_EVTCHN_UNBIND: port ${request.port} is not below nr_channels=${this.nrChannels}`,
          );
        }
        if (!this.#bound.has(request.port)) {
          return deny(
            'ENOTCONN',
            `IOCTL_EVTCHN_UNBIND: port ${request.port} is not bound by this fd`,
          );
        }
        this.#bound.delete(request.port);
        return allow(`IOCTL_EVTCHN_UNBIND port ${request.port}`);
      case 'notify':
        if (request.argFault) return FAULT('IOCTL_EVTCHN_NOTIFY', 'the argument');
        if (!this.#bound.has(request.port)) {
          return deny(
            'ENOTCONN',
            `IOCTL_EVTCHN_NOTIFY: port ${request.port} is not bound by this fd`,
          );
        }
        return allow(`IOCTL_EVTCHN_NOTIFY port ${request.port}`);
      case 'reset':
        return allow('IOCTL_EVTCHN_RESET clears the ring');
      case 'restrict_domid':
        if (restricted) {
          return deny(
            'EACCES',
            `IOCTL_EVTCHN_RESTRICT_DOMID: fd is already restricted to domid ${this.#restrict}`,
          );
        }
        if (request.argFault) return FAULT('IOCTL_EVTCHN_RESTRICT_DOMID', 'the argument');
        if (request.domid === 0 || request.domid >= DOMID_FIRST_RESERVED) {
          return deny(
            'EINVAL',
            `IOCTL_EVTCHN_RESTRICT_DOMID: domid must be 1..${DOMID_FIRST_RESERVED - 1}, got ${request.domid}`,
          );
        }
        this.#restrict = request.domid;
        return allow(`IOCTL_EVTCHN_RESTRICT_DOMID: fd restricted to domid ${request.domid}`);
      case 'unknown':
        return deny(
          'ENOSYS',
          `evtchn: unknown ioctl request 0x${(request.request >>> 0).toString(16)}`,
        );
    }
  }
}
