// Replays tools/xen-matrix's recording of real Xen 4.17 + Linux 6.1 through the models: the kernel
// side is PrivcmdModel / EvtchnModel (one per recorded fd), the hypervisor side dmop-abi's
// SimHypervisor. Every answer (return value, errno, bytes written back) is compared with the
// recorded one; the recording is the truth.
import { type GuestMemory, SimHypervisor } from '@xen-depriv/dmop-abi/sim';
import {
  EvtchnModel,
  type EvtchnRequest,
  type PrivcmdDecision,
  PrivcmdModel,
  type PrivcmdRequest,
  type UserPointerFault,
} from '../../src/index.js';

type Ptr = 'ok' | 'null' | 'bad' | 'kernel' | 'readonly';

export interface MatrixSetup {
  readonly xen: string;
  readonly domains: readonly {
    readonly domid: number;
    readonly vcpus: number;
    readonly ramPages: number;
    readonly maxPages: number;
    readonly ioreqServerPfn?: number;
    readonly nrIoreqServerPages?: number;
  }[];
  readonly missingDomid: number;
  readonly dom0PortsInUse: readonly number[];
}

// biome-ignore lint/suspicious/noExplicitAny: the recorded request, checked field by field below.
type Req = Record<string, any>;

export interface MatrixRecord {
  readonly n: number;
  readonly layer: 'dmop' | 'privcmd' | 'evtchn';
  readonly what: string;
  readonly fd: string;
  readonly req: Req;
  readonly rc: number;
  readonly errno: number;
  readonly out?: readonly (string | null)[] | string | null;
  readonly frameErrors?: readonly number[] | null;
  readonly numOut?: number;
}

/** What a model answered, in the recording's shape. */
export interface Answer {
  rc: number;
  errno: number;
  out?: (string | null)[] | string | null;
  frameErrors?: number[] | null;
  numOut?: number;
}

export interface Mismatch {
  readonly n: number;
  readonly what: string;
  readonly field: string;
  readonly recorded: unknown;
  readonly model: unknown;
  readonly reason?: string;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const bytes = (h: string, size = h.length / 2) => {
  const b = new Uint8Array(size);
  b.set(Buffer.from(h, 'hex').subarray(0, size));
  return b;
};
const fault = (p: Ptr): UserPointerFault | undefined =>
  p === 'ok' ? undefined : p === 'kernel' ? 'kernel' : 'unmapped';
/** Where matrix.c put a buffer in its page: its recorded offset, or 0 for the bad pointers it uses. */
const pageOffset = (p: Ptr, off: number) => (p === 'ok' ? off : 0);
/** The mmapbatch err array as matrix.c fills it before each call. */
const ERR_SENTINEL = 0x5a5a5a5a;
const NEG = (errno: number) => ({ rc: -1, errno });

/** One region of user memory: what a hypercall's pointer argument sees. */
class Region implements GuestMemory {
  constructor(
    readonly base: bigint,
    readonly bytes: Uint8Array | null,
  ) {}
  read(addr: bigint, length: number): Uint8Array | null {
    const at = Number(addr - this.base);
    if (this.bytes === null || at < 0 || at + length > this.bytes.length) return null;
    return this.bytes.slice(at, at + length);
  }
  write(addr: bigint, b: Uint8Array): boolean {
    const at = Number(addr - this.base);
    if (this.bytes === null || at < 0 || at + b.length > this.bytes.length) return false;
    this.bytes.set(b, at);
    return true;
  }
}

export function parseMatrix(text: string): { setup: MatrixSetup; records: MatrixRecord[] } {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const first = JSON.parse(lines[0] as string) as { setup: MatrixSetup };
  return { setup: first.setup, records: lines.slice(1).map((l) => JSON.parse(l) as MatrixRecord) };
}

export class MatrixReplay {
  readonly xen: SimHypervisor;
  readonly #privcmd = new Map<string, PrivcmdModel>();
  readonly #evtchn = new Map<string, EvtchnModel>();

  constructor(setup: MatrixSetup) {
    this.xen = new SimHypervisor({ dom0PortsInUse: setup.dom0PortsInUse });
    for (const d of setup.domains) {
      this.xen.createHvmDomain({
        domid: d.domid,
        vcpus: d.vcpus,
        memoryPages: d.ramPages,
        maxPages: d.maxPages,
        // matrix.c's mkhvm(): XEN_DOMCTL_createdomain with max_grant_frames = 32.
        maxGrantFrames: 32,
        ioreqServerPfn: BigInt(d.ioreqServerPfn ?? 0),
        nrIoreqServerPages: d.nrIoreqServerPages ?? 0,
      });
    }
  }

  #pfd(name: string): PrivcmdModel {
    const m = this.#privcmd.get(name) ?? new PrivcmdModel();
    this.#privcmd.set(name, m);
    return m;
  }

  #efd(name: string): EvtchnModel {
    const m = this.#evtchn.get(name) ?? new EvtchnModel();
    this.#evtchn.set(name, m);
    return m;
  }

  answer(r: MatrixRecord): Answer & { reason: string } {
    const q = r.req;
    if (r.fd.startsWith('e')) return this.#evtchnAnswer(this.#efd(r.fd), q);
    const model = this.#pfd(r.fd);
    switch (q.ioctl) {
      case 'DM_OP':
        return this.#dmOp(model, q);
      case 'HYPERCALL':
        return this.#hypercall(model, q);
      case 'MMAPBATCH_V2':
        return this.#mmapbatch(model, q);
      case 'MMAP_RESOURCE':
        return this.#mmapResource(model, q);
      case 'MMAP': {
        const d = model.decide({
          kind: 'mmap',
          dom: q.dom,
          num: q.num,
          entryFault: q.entry === 'bad',
        });
        return this.#kernelOnly(d);
      }
      case 'RESTRICT':
        return this.#kernelOnly(
          model.decide({ kind: 'restrict', domid: q.domid, argFault: q.arg !== 'ok' }),
        );
      case 'IRQFD':
      case 'IOEVENTFD':
        return this.#kernelOnly(
          model.decide({ kind: q.ioctl === 'IRQFD' ? 'irqfd' : 'ioeventfd', dom: 0, flags: 0 }),
        );
      case 'UNKNOWN':
        return this.#kernelOnly(model.decide({ kind: 'unknown', request: q.request }));
      default:
        throw new Error(`xen-matrix: unknown privcmd request ${JSON.stringify(q)}`);
    }
  }

  /** A request the kernel answers alone: 0 when allowed (nothing reaches Xen). */
  #kernelOnly(d: PrivcmdDecision) {
    return { ...(d.allowed ? { rc: 0, errno: 0 } : NEG(d.errno)), reason: d.reason };
  }

  #dmOp(model: PrivcmdModel, q: Req) {
    const specs = q.bufs as { ptr: Ptr; size: number; pageOffset: number; in: string }[];
    const request: PrivcmdRequest = {
      kind: 'dm_op',
      dom: q.dom,
      bufSizes: specs.map((b) => b.size),
      bufPageOffsets: specs.map((b) => pageOffset(b.ptr, b.pageOffset)),
      bufFaults: specs.map((b) => fault(b.ptr)),
      ubufsFault: q.ubufs !== 'ok',
      argFault: q.arg !== 'ok',
    };
    const bufs = specs.map((b) => bytes(b.in, b.size));
    // Only buffers matrix.c could read back (good pointers, at most a page) have an output.
    const out = () =>
      specs.map((b, i) => (b.ptr === 'ok' && b.size <= 4096 ? hex(bufs[i] as Uint8Array) : null));
    const d = model.decide(request);
    if (!d.allowed) return { ...NEG(d.errno), out: out(), reason: d.reason };
    if (specs.length === 0) return { rc: 0, errno: 0, out: [], reason: d.reason };
    const rc = this.xen.dmOp(q.dom, bufs);
    return { ...(rc < 0 ? NEG(-rc) : { rc, errno: 0 }), out: out(), reason: d.reason };
  }

  #hypercall(model: PrivcmdModel, q: Req) {
    const d = model.decide({ kind: 'hypercall', op: q.op });
    const mem = q.ptr === 'ok' && q.memArg >= 0 ? bytes(q.mem) : null;
    const region = new Region(BigInt(q.memAddr), mem);
    const out = q.ptr === 'ok' && q.memArg >= 0 ? () => hex(mem as Uint8Array) : () => null;
    if (!d.allowed) return { ...NEG(d.errno), out: out(), reason: d.reason };
    const args = [BigInt(q.arg0), 0n, 0n, 0n, 0n];
    // matrix.c's bad pointer is the never-mapped address 0x1000.
    if (q.memArg >= 0) args[q.memArg] = q.ptr === 'ok' ? BigInt(q.memAddr) : 0x1000n;
    const rc = this.xen.hypercall(0, q.op, args, region);
    return { ...(rc < 0 ? NEG(-rc) : { rc, errno: 0 }), out: out(), reason: d.reason };
  }

  #mmapbatch(model: PrivcmdModel, q: Req) {
    const gfns = (q.gfns as number[]).map(BigInt);
    const d = model.decide({
      kind: 'mmapbatch_v2',
      dom: q.dom,
      num: q.num,
      arrFault: q.arr !== 'ok',
      vma: q.vma,
    });
    const errs = (fill: number[]) => (q.err === 'ok' ? fill : null);
    if (!d.allowed) {
      const fill = gfns.map(() => (d.errArrayCleared ? 0 : ERR_SENTINEL));
      return { ...NEG(d.errno), frameErrors: errs(fill), reason: d.reason };
    }
    const frames = this.xen.mapForeignFrames(0, q.dom, gfns);
    const rc = PrivcmdModel.mmapbatchResult(frames);
    return {
      ...(rc < 0 ? NEG(-rc) : { rc, errno: 0 }),
      frameErrors: errs(frames),
      reason: d.reason,
    };
  }

  #mmapResource(model: PrivcmdModel, q: Req) {
    const d = model.decide({
      kind: 'mmap_resource',
      dom: q.dom,
      type: q.type,
      id: q.id,
      idx: q.idx,
      num: q.num,
      addr: q.vma ? 0x7f0000000000n : 0n,
      vma: q.vma,
    });
    if (!d.allowed) return { ...NEG(d.errno), numOut: q.num, reason: d.reason };
    if (q.num === 0) {
      // The size query: Xen writes nr_frames back, privcmd copies it to the caller's num.
      const frames = this.xen.resourceMaxFrames(0, q.dom, q.type, q.id);
      if (frames < 0) return { ...NEG(-frames), numOut: q.num, reason: d.reason };
      return { rc: 0, errno: 0, numOut: frames, reason: d.reason };
    }
    const rc = this.xen.acquireResource(0, q.dom, q.type, q.id, q.idx, q.num);
    return { ...(rc < 0 ? NEG(-rc) : { rc, errno: 0 }), numOut: q.num, reason: d.reason };
  }

  #evtchnAnswer(model: EvtchnModel, q: Req) {
    const argFault = q.arg !== 'ok';
    let request: EvtchnRequest;
    switch (q.ioctl) {
      case 'BIND_INTERDOMAIN':
        request = {
          kind: 'bind_interdomain',
          remoteDomain: q.remoteDomain,
          remotePort: q.remotePort,
          argFault,
        };
        break;
      case 'BIND_UNBOUND_PORT':
        request = { kind: 'bind_unbound_port', remoteDomain: q.remoteDomain, argFault };
        break;
      case 'BIND_VIRQ':
        request = { kind: 'bind_virq', virq: q.virq, argFault };
        break;
      case 'UNBIND':
        request = { kind: 'unbind', port: q.port, argFault };
        break;
      case 'NOTIFY':
        request = { kind: 'notify', port: q.port, argFault };
        break;
      case 'RESET':
        request = { kind: 'reset' };
        break;
      case 'RESTRICT_DOMID':
        request = { kind: 'restrict_domid', domid: q.domid, argFault };
        break;
      default:
        request = { kind: 'unknown', request: q.request };
    }
    const d = model.decide(request);
    if (!d.allowed) return { ...NEG(d.errno), reason: d.reason };
    let rc = 0;
    // The kernel's hypercall for each bind (evtchn.c), then evtchn_bind_to_user() on success.
    if (request.kind === 'bind_interdomain') {
      rc = this.xen.evtchnBindInterdomain(0, request.remoteDomain, request.remotePort);
    } else if (request.kind === 'bind_unbound_port') {
      rc = this.xen.evtchnAllocUnbound(0, request.remoteDomain);
    } else if (request.kind === 'bind_virq') {
      rc = this.xen.evtchnBindVirq(0, request.virq);
    } else if (request.kind === 'unbind') {
      // evtchn_unbind_from_user() -> unbind_from_irqhandler(): the port is closed in Xen.
      this.xen.evtchnClose(0, request.port);
    }
    if (rc < 0) return { ...NEG(-rc), reason: d.reason };
    if (request.kind.startsWith('bind_')) model.bound(rc);
    return { rc, errno: 0, reason: d.reason };
  }
}

/** Replays every record in order; returns the counts per layer and every disagreement. */
export function replayMatrix(
  setup: MatrixSetup,
  records: readonly MatrixRecord[],
): { counts: Record<string, number>; mismatches: Mismatch[] } {
  const replay = new MatrixReplay(setup);
  const counts: Record<string, number> = {};
  const mismatches: Mismatch[] = [];
  for (const r of records) {
    counts[r.layer] = (counts[r.layer] ?? 0) + 1;
    let a: Answer & { reason: string };
    try {
      a = replay.answer(r);
    } catch (err) {
      mismatches.push({ n: r.n, what: r.what, field: 'threw', recorded: r.rc, model: String(err) });
      continue;
    }
    const check = (field: string, recorded: unknown, model: unknown) => {
      if (JSON.stringify(recorded) !== JSON.stringify(model)) {
        mismatches.push({ n: r.n, what: r.what, field, recorded, model, reason: a.reason });
      }
    };
    check('rc', r.rc, a.rc);
    check('errno', r.errno, a.errno);
    if (r.out !== undefined) check('out', r.out, a.out ?? null);
    if (r.frameErrors !== undefined) check('frameErrors', r.frameErrors, a.frameErrors ?? null);
    if (r.numOut !== undefined) check('numOut', r.numOut, a.numOut);
  }
  return { counts, mismatches };
}
