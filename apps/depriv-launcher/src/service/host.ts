import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ConfinementReport, LaunchPlan, UidOps } from '@xen-depriv/qemu-launcher';
import type { Lease } from '@xen-depriv/uid-allocator';
import { type AllocatorRef, type HostRequest, handle } from './host-worker.js';

/** A host-worker error carried back to this thread: message, name and errno/code kept. */
export class HostError extends Error {
  readonly code: unknown;
  readonly errno: unknown;
  constructor(e: { name: string; message: string; code?: unknown; errno?: unknown }) {
    super(e.message);
    this.name = e.name;
    this.code = e.code;
    this.errno = e.errno;
  }
}

/**
 * The service's side of the host worker (host-worker.ts): allocator, reaper, /proc scans and
 * confinement checks, off the event loop. Where the built worker script is absent (the sources
 * run by a test runner), the same code runs on this thread: `offLoop` says which.
 */
export class HostWorker {
  private readonly worker: Worker | null;
  private readonly pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  private nextId = 1;
  readonly offLoop: boolean;

  constructor(options: { inline?: boolean } = {}) {
    const script = fileURLToPath(new URL('./host-worker.js', import.meta.url));
    if (options.inline === true || !existsSync(script)) {
      this.worker = null;
      this.offLoop = false;
      return;
    }
    this.offLoop = true;
    const w = new Worker(script);
    w.unref();
    w.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: HostErrorShape }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) w.unref();
      if (m.ok) p.resolve(m.value);
      else p.reject(new HostError(m.error as HostErrorShape));
    });
    w.on('error', (e) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
    this.worker = w;
  }

  call<T>(req: HostRequest): Promise<T> {
    const w = this.worker;
    if (w === null) return handle(req) as Promise<T>;
    return new Promise<T>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      // Only a request in flight keeps a short-lived CLI process alive.
      w.ref();
      w.postMessage({ id, req });
    });
  }

  acquire(alloc: AllocatorRef, domid: number): Promise<Lease> {
    return this.call({ op: 'acquire', alloc, domid });
  }
  attachDm(alloc: AllocatorRef, lease: Lease, pid: number): Promise<Lease> {
    return this.call({ op: 'attachDm', alloc, lease, pid });
  }
  release(alloc: AllocatorRef, lease: Lease, reap: boolean): Promise<void> {
    return this.call({ op: 'release', alloc, lease, reap });
  }
  recoverLeases(alloc: AllocatorRef): Promise<{ reclaimed: number[]; kept: number[] }> {
    return this.call({ op: 'recoverLeases', alloc });
  }
  check(
    pid: number,
    plan: LaunchPlan | null,
    expectedRoot: { dev: number; ino: number } | null,
  ): Promise<ConfinementReport> {
    return this.call({ op: 'check', pid, plan, expectedRoot });
  }

  /**
   * qemu-launcher's teardown hooks through the worker: the allocator's reaper for a per-domain
   * lease (kill(-1) as the uid, never as root), the /proc scan, and the release that verifies
   * the uid empty before it can serve another domain.
   */
  uidOps(alloc: AllocatorRef): UidOps {
    return {
      name: 'uid-allocator (host worker)',
      reap: async (uid, lease) => {
        const l = lease as Lease | null;
        if (l && l.uid === uid && l.isolation === 'per-domain') {
          await this.call({ op: 'reap', alloc, lease: l });
          return false;
        }
        throw new Error(`reap uid ${uid}: expected the per-domain lease of that uid`);
      },
      verifyEmpty: (uid) => this.call<boolean>({ op: 'verifyEmpty', uid }),
      release: async (lease) => {
        if (lease) await this.release(alloc, lease as Lease, false);
      },
    };
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
  }
}

type HostErrorShape = { name: string; message: string; code?: unknown; errno?: unknown };
