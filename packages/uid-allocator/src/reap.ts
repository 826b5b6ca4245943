import { readFileSync, writeFileSync } from 'node:fs';
import { reaperKill, SysError } from '@xen-depriv/sys';
import { checkDmUid, MIN_DM_UID, UidAllocatorError } from './errors.js';
import { flockLock } from './lock.js';
import { processesOfUid } from './proc.js';

export interface ReapOptions {
  /** The uid the reaper runs as (real uid); never 0, never the target, unused by anything else. */
  reaperUid: number;
  /** The uids the caller may reap, e.g. `scheme.contains`; a uid outside is refused. */
  allowed?: (uid: number) => boolean;
  /** Stop after this many kill rounds; default 100. */
  maxRounds?: number;
  /** Stop after this long; default 10 s. */
  timeoutMs?: number;
  /**
   * The DM's cgroup v2 directory: `cgroup.kill` is written each round, and the uid is empty
   * only once `cgroup.procs` is empty too.
   */
  cgroup?: string;
  /**
   * A lock file that serializes reapers sharing a reaper uid: one reaper's kill(-1) would
   * otherwise hit another's child, whose real uid is the same.
   */
  lockPath?: string;
  procRoot?: string;
  /** The kill primitive; default `sys.reaperKill`. Injected by tests that must not fork. */
  kill?: (targetUid: number, reaperUid: number) => void;
}

export interface ReapReport {
  uid: number;
  /** Kill rounds made; 0 when the uid was empty already. */
  rounds: number;
  /** Distinct pids of the uid seen across all rounds. */
  processesSeen: number;
  /** Processes (and cgroup members) seen before each round. */
  perRound: number[];
  /** Reaper children that died before reporting (killed by a racing reaper) and were retried. */
  retries: number;
}

const pause = (round: number) =>
  new Promise<void>((r) => (round < 4 ? setImmediate(r) : setTimeout(r, Math.min(round, 10))));

function cgroupPids(dir: string): number[] {
  const text = readFileSync(`${dir}/cgroup.procs`, 'latin1');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map(Number);
}

/** Refuses unsafe requests before anything forks: the checks libxl's reaper makes, and a range. */
export function checkReapRequest(
  uid: number,
  opts: Pick<ReapOptions, 'reaperUid' | 'allowed'>,
): void {
  checkDmUid('reap uid', uid);
  const reaper = opts.reaperUid;
  if (typeof reaper !== 'number' || !Number.isInteger(reaper) || reaper < MIN_DM_UID) {
    throw new UidAllocatorError(
      'UNSAFE_UID',
      `reap reaperUid: expected a uid >= ${MIN_DM_UID} (never root or a system account), got ${String(reaper)}`,
      uid,
    );
  }
  if (reaper === uid) {
    throw new UidAllocatorError(
      'UNSAFE_UID',
      `reap reaperUid: expected a uid other than the target ${uid}, got ${reaper}`,
      uid,
    );
  }
  if (opts.allowed !== undefined) {
    if (!opts.allowed(uid)) {
      throw new UidAllocatorError(
        'OUT_OF_RANGE',
        `reap uid: expected a uid of the configured range, got ${uid}`,
        uid,
      );
    }
    if (opts.allowed(reaper)) {
      throw new UidAllocatorError(
        'UNSAFE_UID',
        `reap reaperUid: expected a uid outside the DM range, got ${reaper}`,
        uid,
      );
    }
  }
}

/**
 * Kills every process of `uid` and returns once no live process has it as real, effective,
 * saved or fs uid (and the cgroup, if given, is empty). Each round is one `sys.reaperKill`:
 * a child with ruid = reaper, euid = uid, suid = 0 calls kill(-1, SIGKILL), which reaches every
 * process of the uid in one pass over the task list; a fork racing it sees the fatal signal
 * and fails. Throws REAP_INCOMPLETE past maxRounds or timeoutMs.
 */
export async function reap(uid: number, opts: ReapOptions): Promise<ReapReport> {
  checkReapRequest(uid, opts);
  const kill = opts.kill ?? reaperKill;
  const maxRounds = opts.maxRounds ?? 100;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const procRoot = opts.procRoot ?? '/proc';
  const lock = opts.lockPath === undefined ? undefined : await flockLock(opts.lockPath).acquire();
  try {
    const seen = new Set<number>();
    const perRound: number[] = [];
    let retries = 0;
    const started = Date.now();
    for (let rounds = 0; ; rounds++) {
      const procs = processesOfUid(uid, procRoot);
      for (const p of procs) seen.add(p.pid);
      const members = opts.cgroup === undefined ? [] : cgroupPids(opts.cgroup);
      const live = procs.length + members.length;
      if (live === 0) return { uid, rounds, processesSeen: seen.size, perRound, retries };
      if (rounds >= maxRounds || Date.now() - started > timeoutMs) {
        throw new UidAllocatorError(
          'REAP_INCOMPLETE',
          `reap uid ${uid}: expected no process left, ${procs.length} remain (${procs
            .slice(0, 5)
            .map((p) => `${p.pid} ${p.name} uids ${p.uids.join('/')} state ${p.state}`)
            .join(
              '; ',
            )})${members.length > 0 ? ` and ${members.length} in ${opts.cgroup}` : ''} after ${rounds} rounds`,
          uid,
        );
      }
      perRound.push(live);
      if (opts.cgroup !== undefined && members.length > 0) {
        try {
          writeFileSync(`${opts.cgroup}/cgroup.kill`, '1');
        } catch {
          // cgroup.kill appeared in Linux 5.14; without it, the uid kill below still runs.
        }
      }
      if (procs.length > 0) {
        try {
          kill(uid, opts.reaperUid);
        } catch (e) {
          // A racing reaper of the same reaper uid killed our child: try again next round.
          if (!(e instanceof SysError) || e.syscall !== 'reaper') throw e;
          retries++;
        }
      }
      await pause(rounds);
    }
  } finally {
    lock?.release();
  }
}
