import { XenError } from '@xen-depriv/dmop-abi';
import { dmOpNumber } from '@xen-depriv/dmop-abi/fields';
import type { Decision } from './errno.js';
import { PrivcmdModel, type PrivcmdModelOptions, type PrivcmdRequest } from './model.js';
import { decideDmOp, type PolicyContext, type PolicyProfile } from './policy.js';

/** A request refused before it reached the kernel (or the simulated hypervisor). */
export interface DeniedRequest {
  /** The domid the request targets (the handle's own for requests without one). */
  readonly domid: number;
  /** The XEN_DMOP_* number of a denied DM_OP; undefined for other ioctls (the reason names them). */
  readonly op: number | undefined;
  readonly decision: Decision;
}

/**
 * Thrown for a denied request: a `XenError` (dmop-abi) whose `errno` is what the kernel (or the
 * policy, EPERM) answers, with the full decision.
 */
export class PrivcmdDeniedError extends XenError {
  readonly decision: Decision;
  constructor(call: string, decision: Decision) {
    super(call, decision.errno, decision.reason);
    this.decision = decision;
  }
}

/** What both handles share: who the fd is restricted to, and what it lets through. */
export interface GateOptions {
  /** The guest this device model serves: the handle is restricted to it. */
  readonly domid: number;
  /** The profile every DM_OP must pass; `null` checks only the kernel's rules. */
  readonly profile: PolicyProfile | null;
  /** What the toolstack declared for the guest (needed when `profile` is set). */
  readonly context?: PolicyContext;
  /** The kernel's module parameters, when not the defaults. */
  readonly model?: PrivcmdModelOptions;
  /** Called for each denied request (after it is counted), e.g. to log it. */
  readonly onDenied?: (denied: DeniedRequest) => void;
}

/** A call on a closed handle: EBADF, as on a closed fd. */
export function closedError(what: string): PrivcmdDeniedError {
  return new PrivcmdDeniedError(`${what}.dmOp`, {
    allowed: false,
    errno: 9,
    code: 'EBADF',
    reason: `${what} is closed`,
  });
}

const NO_CONTEXT: PolicyContext = { guestMemoryEndGfn: 0n, ioRanges: [] };

export function checkGateOptions(name: string, options: GateOptions): void {
  if (!Number.isInteger(options.domid) || options.domid < 0 || options.domid >= 0x7ff0) {
    throw new RangeError(`${name}: expected a guest domid 0..32751, got ${String(options.domid)}`);
  }
  if (options.profile !== null && options.context === undefined) {
    throw new TypeError(`${name}: profile ${options.profile.name} needs a PolicyContext, got none`);
  }
}

/** The model + profile check in front of a DM_OP transport, with its counters. */
export class DmOpGate {
  readonly domid: number;
  readonly model: PrivcmdModel;
  readonly counts = { allowed: 0, denied: 0 };
  readonly #profile: PolicyProfile | null;
  readonly #context: PolicyContext;
  readonly #onDenied: ((d: DeniedRequest) => void) | undefined;

  constructor(options: GateOptions) {
    this.domid = options.domid;
    this.model = new PrivcmdModel(options.model);
    this.model.decide({ kind: 'restrict', domid: options.domid });
    this.#profile = options.profile;
    this.#context = options.context ?? NO_CONTEXT;
    this.#onDenied = options.onDenied;
  }

  check(domid: number, bufs: readonly Uint8Array[]): Decision {
    if (this.#profile === null) {
      return this.model.decide({
        kind: 'dm_op',
        dom: domid,
        bufSizes: bufs.map((b) => b.byteLength),
        // An empty buffer's pointer is NULL, page-aligned; the others' offsets do not matter.
        bufPageOffsets: bufs.map(() => 0),
      });
    }
    return decideDmOp(domid, bufs, this.#profile, this.#context, this.model);
  }

  /** Counts the request and throws `PrivcmdDeniedError` when it may not pass. */
  admit(call: string, domid: number, bufs: readonly Uint8Array[]): void {
    const d = this.check(domid, bufs);
    if (d.allowed) {
      this.counts.allowed++;
      return;
    }
    this.counts.denied++;
    const first = bufs[0];
    const op = dmOpNumber(first);
    this.#onDenied?.({ domid, op, decision: d });
    throw new PrivcmdDeniedError(call, d);
  }

  /** Counts a non-DM_OP privcmd request the model decides, and throws when the kernel would refuse it. */
  admitRequest(call: string, request: PrivcmdRequest): void {
    const d = this.model.decide(request);
    if (d.allowed) {
      this.counts.allowed++;
      return;
    }
    this.counts.denied++;
    this.#onDenied?.({
      domid: 'dom' in request ? request.dom : this.domid,
      op: undefined,
      decision: d,
    });
    throw new PrivcmdDeniedError(call, d);
  }
}
