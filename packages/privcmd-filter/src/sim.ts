import type { Decision } from './errno.js';
import { checkGateOptions, closedError, DmOpGate, type GateOptions } from './gate.js';

/**
 * What SimPrivcmd forwards allowed requests to: dmop-abi's simulated hypervisor, or anything with
 * its `dmOp(domid, bufs)` shape. Its result is returned as is.
 */
export interface DmOpBackend<R> {
  dmOp(domid: number, bufs: Uint8Array[]): R;
}

export interface SimPrivcmdOptions<R> extends GateOptions {
  readonly backend: DmOpBackend<R>;
}

/**
 * `PrivcmdHandle`'s checks in front of a simulated hypervisor instead of `/dev/xen/privcmd`, for
 * machines without Xen: the same restriction to one domid, model, profile, counts and
 * `PrivcmdDeniedError`. Over dmop-abi's `SimHypervisor` it is a `DmOpTransport` for `DeviceModel`.
 */
export class SimPrivcmd<R = unknown> {
  readonly domid: number;
  readonly #backend: DmOpBackend<R>;
  readonly #gate: DmOpGate;
  #closed = false;

  constructor(options: SimPrivcmdOptions<R>) {
    checkGateOptions('SimPrivcmd', options);
    this.domid = options.domid;
    this.#backend = options.backend;
    this.#gate = new DmOpGate(options);
  }

  get counts(): { readonly allowed: number; readonly denied: number } {
    return this.#gate.counts;
  }

  check(domid: number, bufs: readonly Uint8Array[]): Decision {
    return this.#gate.check(domid, bufs);
  }

  dmOp(domid: number, bufs: Uint8Array[]): R {
    if (this.#closed) {
      throw closedError('SimPrivcmd');
    }
    this.#gate.admit('SimPrivcmd.dmOp', domid, bufs);
    return this.#backend.dmOp(domid, bufs);
  }

  /** IOCTL_PRIVCMD_RESTRICT's answer: 0 for the handle's own domid, -EINVAL for another. */
  restrict(domid: number): number {
    const d = this.#gate.model.decide({ kind: 'restrict', domid });
    return d.allowed ? 0 : -d.errno;
  }

  close(): void {
    this.#closed = true;
  }
}
