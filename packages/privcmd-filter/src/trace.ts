import {
  DM_OP_NAMES,
  IOCTL_EVTCHN_BIND_INTERDOMAIN,
  IOCTL_EVTCHN_BIND_UNBOUND_PORT,
  IOCTL_EVTCHN_BIND_VIRQ,
  IOCTL_EVTCHN_NOTIFY,
  IOCTL_EVTCHN_RESET,
  IOCTL_EVTCHN_RESTRICT_DOMID,
  IOCTL_EVTCHN_UNBIND,
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
import { dmOpNumber } from '@xen-depriv/dmop-abi/fields';
import type { Decision } from './errno.js';
import { PolicyError, show } from './error.js';
import {
  EvtchnModel,
  type EvtchnRequest,
  PrivcmdModel,
  type PrivcmdModelOptions,
  type PrivcmdRequest,
} from './model.js';
import { decide, type PolicyContext, type PolicyProfile } from './policy.js';

/** One line of tools/privcmd-trace output. Device-specific input fields are kept as recorded. */
export interface TraceRecord {
  readonly seq: number;
  readonly pid: number;
  readonly dev: 'privcmd' | 'evtchn' | 'gntdev';
  readonly fd: number;
  readonly request: number;
  readonly ret: number;
  readonly errno: number;
  readonly fake?: boolean;
  readonly [field: string]: unknown;
}

/** Parses JSON lines from the recorder; blank lines are skipped, anything else malformed is a `PolicyError('BAD_TRACE')`. */
export function parseTrace(text: string): TraceRecord[] {
  const out: TraceRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `line ${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw new PolicyError(
        'BAD_TRACE',
        where,
        `expected a JSON object, got ${show(line.slice(0, 80))}`,
      );
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw new PolicyError('BAD_TRACE', where, `expected a JSON object, got ${show(v)}`);
    }
    const r = v as Record<string, unknown>;
    for (const key of ['seq', 'pid', 'fd', 'request', 'ret', 'errno']) {
      if (typeof r[key] !== 'number' || !Number.isInteger(r[key])) {
        throw new PolicyError(
          'BAD_TRACE',
          `${where}/${key}`,
          `expected an integer, got ${show(r[key])}`,
        );
      }
    }
    if (r.dev !== 'privcmd' && r.dev !== 'evtchn' && r.dev !== 'gntdev') {
      throw new PolicyError(
        'BAD_TRACE',
        `${where}/dev`,
        `expected privcmd, evtchn or gntdev, got ${show(r.dev)}`,
      );
    }
    out.push(r as unknown as TraceRecord);
  });
  return out;
}

/** Per-request-name counts; DM_OPs are counted under `XEN_DMOP_<op>`. */
export interface AuditCounts {
  total: number;
  allowed: number;
  deniedByKernel: number;
  deniedByProfile: number;
}

export interface AuditDenial {
  readonly seq: number;
  readonly pid: number;
  readonly fd: number;
  readonly name: string;
  readonly by: 'kernel' | 'profile';
  readonly errno: number;
  readonly code: Decision['code'];
  readonly reason: string;
}

export interface AuditReport extends AuditCounts {
  readonly byName: Readonly<Record<string, AuditCounts>>;
  readonly denials: readonly AuditDenial[];
}

export interface AuditOptions {
  /** The kernel the trace is judged against (module parameters, IRQFD support). */
  readonly model?: PrivcmdModelOptions;
}

const num = (r: TraceRecord, key: string): number => {
  const v = r[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    throw new PolicyError(
      'BAD_TRACE',
      `seq ${r.seq}/${key}`,
      `expected an integer for ${XEN_IOCTL_NAMES.get(r.request)}, got ${show(v)}`,
    );
  }
  return v;
};

function hexBytes(r: TraceRecord, i: number, v: unknown): Uint8Array {
  if (typeof v !== 'string' || v.length % 2 !== 0 || !/^[0-9a-f]*$/.test(v)) {
    throw new PolicyError(
      'BAD_TRACE',
      `seq ${r.seq}/bufs/${i}`,
      `expected the buffer as even-length lowercase hex, got ${show(v)}`,
    );
  }
  return Uint8Array.from(Buffer.from(v, 'hex'));
}

function privcmdRequest(r: TraceRecord): PrivcmdRequest {
  switch (r.request) {
    case IOCTL_PRIVCMD_HYPERCALL:
      return { kind: 'hypercall', op: num(r, 'op') };
    case IOCTL_PRIVCMD_MMAP:
      return { kind: 'mmap', dom: num(r, 'dom'), num: num(r, 'num') };
    case IOCTL_PRIVCMD_MMAPBATCH:
      return { kind: 'mmapbatch', dom: num(r, 'dom'), num: num(r, 'num') };
    case IOCTL_PRIVCMD_MMAPBATCH_V2:
      return { kind: 'mmapbatch_v2', dom: num(r, 'dom'), num: num(r, 'num') };
    case IOCTL_PRIVCMD_RESTRICT:
      return { kind: 'restrict', domid: num(r, 'domid') };
    case IOCTL_PRIVCMD_MMAP_RESOURCE:
      return {
        kind: 'mmap_resource',
        dom: num(r, 'dom'),
        type: num(r, 'type'),
        id: num(r, 'id'),
        idx: num(r, 'idx'),
        num: num(r, 'num'),
        addr: BigInt(num(r, 'addr')),
      };
    case IOCTL_PRIVCMD_IRQFD:
      return { kind: 'irqfd', dom: num(r, 'dom'), flags: num(r, 'flags') };
    case IOCTL_PRIVCMD_IOEVENTFD:
      return { kind: 'ioeventfd', dom: num(r, 'dom'), flags: num(r, 'flags') };
    default:
      return { kind: 'unknown', request: r.request };
  }
}

function evtchnRequest(r: TraceRecord): EvtchnRequest {
  switch (r.request) {
    case IOCTL_EVTCHN_BIND_VIRQ:
      return { kind: 'bind_virq', virq: num(r, 'virq') };
    case IOCTL_EVTCHN_BIND_INTERDOMAIN:
      return {
        kind: 'bind_interdomain',
        remoteDomain: num(r, 'remote_domain'),
        remotePort: num(r, 'remote_port'),
      };
    case IOCTL_EVTCHN_BIND_UNBOUND_PORT:
      return { kind: 'bind_unbound_port', remoteDomain: num(r, 'remote_domain') };
    case IOCTL_EVTCHN_UNBIND:
      return { kind: 'unbind', port: num(r, 'port') };
    case IOCTL_EVTCHN_NOTIFY:
      return { kind: 'notify', port: num(r, 'port') };
    case IOCTL_EVTCHN_RESET:
      return { kind: 'reset' };
    case IOCTL_EVTCHN_RESTRICT_DOMID:
      return { kind: 'restrict_domid', domid: num(r, 'domid') };
    default:
      return { kind: 'unknown', request: r.request };
  }
}

/**
 * Replays a recorded trace through one kernel model per open fd and, for DM_OPs, the profile, and
 * reports which requests the kernel (model) and which the profile would deny, with counts by
 * request name. The recorded result is not trusted: a trace taken with PRIVCMD_TRACE_FAKE=1 or on
 * an unrestricted fd is judged the same way.
 */
export function auditTrace(
  trace: string | readonly TraceRecord[],
  profile: PolicyProfile,
  context: PolicyContext,
  options: AuditOptions = {},
): AuditReport {
  const records = typeof trace === 'string' ? parseTrace(trace) : trace;
  const privcmd = new Map<string, PrivcmdModel>();
  const evtchn = new Map<string, EvtchnModel>();
  const byName: Record<string, AuditCounts> = {};
  const denials: AuditDenial[] = [];
  const totals: AuditCounts = { total: 0, allowed: 0, deniedByKernel: 0, deniedByProfile: 0 };
  const count = (r: TraceRecord, name: string, d: Decision, by: 'kernel' | 'profile') => {
    const c = byName[name] ?? { total: 0, allowed: 0, deniedByKernel: 0, deniedByProfile: 0 };
    byName[name] = c;
    for (const t of [c, totals]) {
      t.total++;
      if (d.allowed) t.allowed++;
      else if (by === 'kernel') t.deniedByKernel++;
      else t.deniedByProfile++;
    }
    if (!d.allowed)
      denials.push({
        seq: r.seq,
        pid: r.pid,
        fd: r.fd,
        name,
        by,
        errno: d.errno,
        code: d.code,
        reason: d.reason,
      });
  };
  for (const r of records) {
    const key = `${r.pid}:${r.fd}`;
    const ioctlName = XEN_IOCTL_NAMES.get(r.request) ?? `0x${r.request.toString(16)}`;
    if (r.dev === 'privcmd') {
      let model = privcmd.get(key);
      if (!model) {
        model = new PrivcmdModel(options.model);
        privcmd.set(key, model);
      }
      if (r.request !== IOCTL_PRIVCMD_DM_OP) {
        count(r, ioctlName, model.decide(privcmdRequest(r)), 'kernel');
        continue;
      }
      const raw = r.bufs;
      if (!Array.isArray(raw))
        throw new PolicyError(
          'BAD_TRACE',
          `seq ${r.seq}/bufs`,
          `expected an array, got ${show(raw)}`,
        );
      const bufs = raw.map((b, i) => hexBytes(r, i, b));
      const dom = num(r, 'dom');
      const first = bufs[0];
      const op = dmOpNumber(first);
      const name = op === undefined ? ioctlName : `XEN_DMOP_${DM_OP_NAMES[op] ?? op}`;
      const k = model.decide({ kind: 'dm_op', dom, bufSizes: bufs.map((b) => b.byteLength) });
      if (!k.allowed || bufs.length === 0) {
        count(r, name, k, 'kernel');
        continue;
      }
      count(r, name, decide({ domid: dom, bufs }, profile, context), 'profile');
    } else if (r.dev === 'evtchn') {
      let model = evtchn.get(key);
      if (!model) {
        model = new EvtchnModel();
        evtchn.set(key, model);
      }
      const req = evtchnRequest(r);
      const d = model.decide(req);
      // A bind returns the local port; the model needs it to judge later UNBIND/NOTIFY.
      if (
        d.allowed &&
        r.ret >= 0 &&
        !r.fake &&
        (req.kind === 'bind_interdomain' ||
          req.kind === 'bind_virq' ||
          req.kind === 'bind_unbound_port')
      ) {
        model.bound(r.ret);
      }
      count(r, ioctlName, d, 'kernel');
    } else {
      // gntdev has no domid restriction in the kernel (docs/audits/privcmd-ops.md): nothing to deny.
      count(
        r,
        ioctlName,
        { allowed: true, errno: 0, code: 'OK', reason: 'gntdev: no kernel restriction' },
        'kernel',
      );
    }
  }
  return { ...totals, byName, denials };
}
