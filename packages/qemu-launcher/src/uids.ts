import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Lease, processesOfUid, type UidAllocator } from '@xen-depriv/uid-allocator';

/**
 * What the launcher needs from `@xen-depriv/uid-allocator` for teardown. `lease` is whatever the
 * allocator handed out; it is stored in the launch state as JSON, so it must survive a round trip.
 */
export interface UidOps {
  readonly name: string;
  /**
   * Kills every process of `uid` (a fork loop included). Resolves true when its own last scan
   * found the uid empty (the separate verifyEmpty scan is then skipped).
   */
  reap(uid: number, lease: unknown): Promise<boolean>;
  /** True when no process runs with `uid` as any of its real, effective, saved or fs uid. */
  verifyEmpty(uid: number): Promise<boolean>;
  /** Gives the lease back; idempotent (a released lease is not an error). */
  release(lease: unknown): Promise<void>;
}

/** Pids whose real, effective, saved or fs uid is `uid`, from /proc. */
export function pidsOfUid(uid: number, proc = '/proc'): number[] {
  const out: number[] = [];
  for (const name of readdirSync(proc)) {
    if (!/^\d+$/.test(name)) continue;
    let status: string;
    try {
      status = readFileSync(`${proc}/${name}/status`, 'utf8');
    } catch {
      continue;
    }
    const m = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status);
    const state = /^State:\s+(\S)/m.exec(status)?.[1];
    if (m && state !== 'Z' && m.slice(1).some((u) => Number(u) === uid)) out.push(Number(name));
  }
  return out;
}

/**
 * Stand-in used until `@xen-depriv/uid-allocator` is wired: kills by pid, found by scanning
 * /proc, repeated until a scan finds nothing. Never signals pid -1 and refuses uids below 1000.
 */
export const procUidOps: UidOps = {
  name: 'proc-scan',
  async reap(uid) {
    if (!Number.isInteger(uid) || uid < 1000)
      throw new RangeError(`reap: expected a DM uid >= 1000, saw ${uid}`);
    for (let round = 0; round < 200; round++) {
      const pids = pidsOfUid(uid);
      if (pids.length === 0) return true;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      await sleep(5);
    }
    return false;
  },
  async verifyEmpty(uid) {
    return pidsOfUid(uid).length === 0;
  },
  async release() {},
};

const isLease = (x: unknown): x is Lease =>
  typeof x === 'object' &&
  x !== null &&
  typeof (x as Lease).leaseId === 'string' &&
  typeof (x as Lease).uid === 'number';

/**
 * Teardown through `@xen-depriv/uid-allocator`: its reaper (ruid reaper, euid target, never
 * euid 0) for a per-domain lease, its process scan, and `release`, which verifies the uid empty
 * (processes, SysV IPC, files in shared places) before the uid can serve another domain.
 */
export function allocatorUidOps(allocator: UidAllocator): UidOps {
  return {
    name: 'uid-allocator',
    async reap(uid, lease) {
      if (isLease(lease) && lease.uid === uid && lease.isolation === 'per-domain') {
        await allocator.reap(lease);
        return false;
      }
      return procUidOps.reap(uid, lease);
    },
    async verifyEmpty(uid) {
      return processesOfUid(uid).length === 0;
    },
    async release(lease) {
      if (isLease(lease)) await allocator.release(lease);
    },
  };
}
