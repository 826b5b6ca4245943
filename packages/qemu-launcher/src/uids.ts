import { readdirSync, readFileSync } from 'node:fs';

/**
 * What the launcher needs from `@xen-depriv/uid-allocator` for teardown. `lease` is whatever the
 * allocator handed out; it is stored in the launch state as JSON, so it must survive a round trip.
 */
export interface UidOps {
  readonly name: string;
  /** Kills every process of `uid` (a fork loop included) and returns when none is left. */
  reap(uid: number): Promise<void>;
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
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  },
  async verifyEmpty(uid) {
    return pidsOfUid(uid).length === 0;
  },
  async release() {},
};
