// The service's host worker: everything that scans /proc, walks shared directories, forks the
// reaper or takes the allocator's flock runs here, on a thread of its own, so the service's
// event loop (RPC, proxies, QMP, supervision) never waits on it. One request at a time, in order.
import { parentPort } from 'node:worker_threads';
import { type LaunchPlan, verifyConfinement } from '@xen-depriv/qemu-launcher';
import {
  type Lease,
  processesOfUid,
  type SchemeConfig,
  schemeFromConfig,
  UidAllocator,
} from '@xen-depriv/uid-allocator';

export interface AllocatorRef {
  readonly user: SchemeConfig;
  readonly stateDir: string;
}

export type HostRequest =
  | { op: 'acquire'; alloc: AllocatorRef; domid: number }
  | { op: 'attachDm'; alloc: AllocatorRef; lease: Lease; pid: number }
  | { op: 'reap'; alloc: AllocatorRef; lease: Lease }
  | { op: 'release'; alloc: AllocatorRef; lease: Lease; reap: boolean }
  | { op: 'verifyEmpty'; uid: number }
  | { op: 'recoverLeases'; alloc: AllocatorRef }
  | {
      op: 'check';
      pid: number;
      plan: LaunchPlan | null;
      expectedRoot: { dev: number; ino: number } | null;
    };

const allocators = new Map<string, UidAllocator>();

/** The reaper uid of a pool sits just past it (as everywhere in this project). */
export function allocatorFor(ref: AllocatorRef): UidAllocator {
  const key = JSON.stringify([ref.user, ref.stateDir]);
  let a = allocators.get(key);
  if (!a) {
    const extra = ref.user.scheme === 'pool' ? { reaperUid: ref.user.first + ref.user.count } : {};
    a = new UidAllocator({ scheme: schemeFromConfig(ref.user, extra), stateDir: ref.stateDir });
    allocators.set(key, a);
  }
  return a;
}

export async function handle(req: HostRequest): Promise<unknown> {
  switch (req.op) {
    case 'acquire':
      return allocatorFor(req.alloc).acquire(req.domid);
    case 'attachDm':
      return allocatorFor(req.alloc).attachDm(req.lease, req.pid);
    case 'reap':
      await allocatorFor(req.alloc).reap(req.lease);
      return null;
    case 'release':
      await allocatorFor(req.alloc).release(req.lease, { reap: req.reap });
      return null;
    case 'verifyEmpty':
      return processesOfUid(req.uid).length === 0;
    case 'recoverLeases': {
      const r = await allocatorFor(req.alloc).recover();
      return { reclaimed: r.reclaimed.map((s) => s.uid), kept: r.kept.map((s) => s.uid) };
    }
    case 'check':
      return req.plan === null
        ? verifyConfinement(req.pid)
        : verifyConfinement(
            req.pid,
            req.plan,
            req.expectedRoot === null ? {} : { expectedRoot: req.expectedRoot },
          );
  }
}

if (parentPort) {
  const port = parentPort;
  let chain: Promise<void> = Promise.resolve();
  port.on('message', (m: { id: number; req: HostRequest }) => {
    chain = chain.then(async () => {
      try {
        port.postMessage({ id: m.id, ok: true, value: await handle(m.req) });
      } catch (e) {
        const x = e as Error & { code?: unknown; errno?: unknown };
        port.postMessage({
          id: m.id,
          ok: false,
          error: { name: x.name, message: x.message, code: x.code, errno: x.errno },
        });
      }
    });
  });
}
