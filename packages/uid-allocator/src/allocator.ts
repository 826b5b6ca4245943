import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { close, pidfdOpen } from '@xen-depriv/sys';
import { UidAllocatorError } from './errors.js';
import { flockLock, type StateLock } from './lock.js';
import { bootId, identityOf, isAlive, type ProcessIdentity } from './proc.js';
import { type ReapReport, reap } from './reap.js';
import type { UidScheme } from './schemes.js';
import {
  type LeaseRecord,
  listRecordNames,
  newLeaseId,
  RECORD_FORMAT,
  RECORD_VERSION,
  readRecord,
  recordName,
  removeDurably,
  removeTempFiles,
  type StepHook,
  writeAtomic,
} from './state.js';
import {
  describeReport,
  type EmptinessReport,
  type VerifyEmptyOptions,
  verifyEmpty,
} from './verify.js';

/** A uid (and gid) held for one domain's device model. Plain data: it survives JSON. */
export interface Lease {
  leaseId: string;
  uid: number;
  gid: number;
  domid: number;
  scheme: UidScheme['kind'];
  isolation: UidScheme['isolation'];
  /** The reaper uid for this lease's uid, when the allocator knows one. */
  reaperUid: number | null;
  stateDir: string;
  createdAt: string;
  dm: ProcessIdentity | null;
}

export interface UidAllocatorOptions {
  scheme: UidScheme;
  /** Default '/run/xen-depriv'; leases live in `<stateDir>/leases`. */
  stateDir?: string;
  /** Default flock(2) on `<stateDir>/uid-allocator.lock`. */
  lock?: StateLock;
  /** A released uid is not handed out again for this long; default 0. */
  quarantineMs?: number;
  /** What verifyEmpty searches (the state dir is always added). */
  verify?: Omit<VerifyEmptyOptions, 'stateDir'>;
  /** Default the scheme's reaper uid. */
  reaperUid?: number;
  /** Called at each step of acquire and release; crash tests SIGKILL the process there. */
  onStep?: StepHook;
  /** Milliseconds since the epoch; default Date.now. */
  now?: () => number;
}

/** Why a candidate uid was passed over, for EXHAUSTED errors and `recover`. */
export interface Skipped {
  uid: number;
  reason: string;
}

export interface ReleaseReport {
  /** False when the lease was released already (or its uid now serves another lease). */
  released: boolean;
  quarantinedUntil: string | null;
  reap: ReapReport | null;
  verify: EmptinessReport | null;
}

type Verdict = { kind: 'free'; reclaimed: string | null } | { kind: 'busy'; reason: string };

const noStep: StepHook = () => {};

/**
 * Hands out uids for device models to concurrent launcher processes on one host. All reads
 * and writes of the state directory happen under one lock. A lease outlives the launcher
 * that took it while its DM runs; a record is reclaimed only when nothing can be using it
 * (holder and DM dead, release interrupted, another boot, unreadable) and the uid is
 * verified empty. A uid that is not empty is never handed out.
 */
export class UidAllocator {
  readonly scheme: UidScheme;
  readonly stateDir: string;
  readonly leaseDir: string;
  private readonly lock: StateLock;
  private readonly quarantineMs: number;
  private readonly verifyOptions: VerifyEmptyOptions;
  private readonly reaperUid: number | undefined;
  private readonly step: StepHook;
  private readonly now: () => number;

  constructor(opts: UidAllocatorOptions) {
    this.scheme = opts.scheme;
    this.stateDir = opts.stateDir ?? '/run/xen-depriv';
    this.leaseDir = join(this.stateDir, 'leases');
    mkdirSync(this.leaseDir, { recursive: true, mode: 0o700 });
    this.lock = opts.lock ?? flockLock(join(this.stateDir, 'uid-allocator.lock'));
    const q = opts.quarantineMs ?? 0;
    if (!Number.isFinite(q) || q < 0)
      throw new UidAllocatorError('BAD_CONFIG', `quarantineMs: expected >= 0, got ${String(q)}`);
    this.quarantineMs = q;
    this.verifyOptions = { ...opts.verify, stateDir: this.stateDir };
    this.reaperUid = opts.reaperUid ?? opts.scheme.reaperUid;
    this.step = opts.onStep ?? noStep;
    this.now = opts.now ?? Date.now;
  }

  /** Takes a uid for `domid`'s device model. Throws EXHAUSTED naming why each uid was skipped. */
  async acquire(domid: number): Promise<Lease> {
    const candidates = this.scheme.candidates(domid);
    const exclusive = this.scheme.isolation === 'per-domain';
    const self = identityOf(process.pid);
    if (self === null) throw new Error(`no /proc/${process.pid}/stat for this process`);
    const held = await this.lock.acquire();
    try {
      this.step('locked');
      removeTempFiles(this.leaseDir);
      const skipped: Skipped[] = [];
      for (const c of candidates) {
        const name = recordName(c.uid, domid, exclusive);
        const verdict = this.examine(name, c.uid, exclusive);
        if (verdict.kind === 'busy') {
          skipped.push({ uid: c.uid, reason: verdict.reason });
          continue;
        }
        this.step('examined');
        const record: LeaseRecord = {
          format: RECORD_FORMAT,
          version: RECORD_VERSION,
          leaseId: newLeaseId(),
          uid: c.uid,
          gid: c.gid,
          domid,
          scheme: this.scheme.kind,
          exclusive,
          state: 'held',
          launcher: self,
          dm: null,
          createdAt: new Date(this.now()).toISOString(),
          releasedAt: null,
          bootId: bootId(),
        };
        writeAtomic(this.leaseDir, name, `${JSON.stringify(record)}\n`, this.step);
        this.step('written');
        return this.leaseOf(record);
      }
      throw new UidAllocatorError(
        'EXHAUSTED',
        `acquire domid ${domid}: expected a free uid in ${this.scheme.describe()}, ${skipped.length} skipped (${skipped
          .slice(0, 4)
          .map((s) => `${s.uid}: ${s.reason}`)
          .join('; ')}${skipped.length > 4 ? '; ...' : ''})`,
      );
    } finally {
      held.release();
      this.step('unlocked');
    }
  }

  /** Records the device model's pid (and start time) in the lease. */
  async attachDm(lease: Lease, pid: number): Promise<Lease> {
    const held = await this.lock.acquire();
    try {
      const record = this.current(lease);
      const dm = identityOf(pid);
      if (dm === null) {
        throw new UidAllocatorError(
          'STALE_LEASE',
          `attachDm: expected a live process ${pid}, it is gone`,
          lease.uid,
        );
      }
      const next = { ...record, dm };
      writeAtomic(this.leaseDir, this.nameOf(lease), `${JSON.stringify(next)}\n`, noStep);
      return this.leaseOf(next);
    } finally {
      held.release();
    }
  }

  /**
   * A pidfd for the lease's device model, or null when that very process is gone. The start
   * time is compared after pidfd_open, so the pidfd cannot name a process that reused the pid.
   */
  openDmPidfd(lease: Lease): number | null {
    if (lease.dm === null) return null;
    let pidfd: number;
    try {
      pidfd = pidfdOpen(lease.dm.pid);
    } catch {
      return null;
    }
    if (isAlive(lease.dm)) return pidfd;
    close(pidfd);
    return null;
  }

  /**
   * Kills every process of the lease's uid (see `reap`), after checking that the lease is
   * still the one recorded: a released lease's uid may serve another domain by now.
   * Refused for a shared uid, which other domains' DMs run as.
   */
  async reap(
    lease: Lease,
    opts: { maxRounds?: number; timeoutMs?: number; cgroup?: string } = {},
  ): Promise<ReapReport> {
    if (lease.isolation === 'shared') {
      throw new UidAllocatorError(
        'UNSAFE_UID',
        `reap: expected a per-domain uid, ${lease.uid} is shared by every DM of ${this.scheme.describe()}`,
        lease.uid,
      );
    }
    const held = await this.lock.acquire();
    try {
      // 'releasing' too: after a release refused with NOT_EMPTY, reaping is the way out.
      this.current(lease, true);
    } finally {
      held.release();
    }
    return reap(lease.uid, {
      ...opts,
      reaperUid: this.reaperOrThrow(lease.uid),
      allowed: this.scheme.contains,
      lockPath: join(this.stateDir, 'reaper.lock'),
    });
  }

  /**
   * Gives the lease back. With `reap`, the uid is emptied first. The uid must then be verified
   * empty, or NOT_EMPTY is thrown and the record stays 'releasing': the uid is not handed out
   * until a later acquire finds it empty. Releasing a lease twice is not an error.
   */
  async release(lease: Lease, opts: { reap?: boolean } = {}): Promise<ReleaseReport> {
    const exclusive = lease.isolation === 'per-domain';
    if (opts.reap === true && exclusive) this.reaperOrThrow(lease.uid);
    const held = await this.lock.acquire();
    try {
      this.step('locked');
      const name = this.nameOf(lease);
      const read = readRecord(this.leaseDir, name);
      if (read.kind !== 'record' || read.record.leaseId !== lease.leaseId) {
        return { released: false, quarantinedUntil: null, reap: null, verify: null };
      }
      if (!exclusive) {
        removeDurably(this.leaseDir, name);
        this.step('removed');
        return { released: true, quarantinedUntil: null, reap: null, verify: null };
      }
      const releasing: LeaseRecord = { ...read.record, state: 'releasing' };
      writeAtomic(this.leaseDir, name, `${JSON.stringify(releasing)}\n`, this.step);
      this.step('marked-releasing');
      let reaped: ReapReport | null = null;
      if (opts.reap === true) {
        reaped = await reap(lease.uid, {
          reaperUid: this.reaperOrThrow(lease.uid),
          allowed: this.scheme.contains,
          lockPath: join(this.stateDir, 'reaper.lock'),
        });
        this.step('reaped');
      }
      const report = verifyEmpty(lease.uid, this.verifyOptions);
      this.step('verified');
      if (!report.empty) {
        throw new UidAllocatorError(
          'NOT_EMPTY',
          `release uid ${lease.uid}: expected an empty uid, found ${describeReport(report)}; it stays out of use`,
          lease.uid,
        );
      }
      let quarantinedUntil: string | null = null;
      if (this.quarantineMs > 0) {
        const at = this.now();
        const q: LeaseRecord = {
          ...releasing,
          state: 'quarantined',
          releasedAt: new Date(at).toISOString(),
        };
        writeAtomic(this.leaseDir, name, `${JSON.stringify(q)}\n`, this.step);
        quarantinedUntil = new Date(at + this.quarantineMs).toISOString();
      } else {
        removeDurably(this.leaseDir, name);
      }
      this.step('removed');
      return { released: true, quarantinedUntil, reap: reaped, verify: report };
    } finally {
      held.release();
      this.step('unlocked');
    }
  }

  /** Every record in the state directory, with what acquire would decide about it. */
  async list(): Promise<{ name: string; record: LeaseRecord | null; verdict: string }[]> {
    const held = await this.lock.acquire();
    try {
      return listRecordNames(this.leaseDir).map((name) => {
        const read = readRecord(this.leaseDir, name);
        const record = read.kind === 'record' ? read.record : null;
        const why = this.staleness(read);
        return {
          name,
          record,
          verdict: why.kind === 'busy' ? why.reason : `stale: ${why.reclaimed}`,
        };
      });
    } finally {
      held.release();
    }
  }

  /**
   * Reclaims every stale record whose uid is verified empty, without waiting for an acquire
   * to come across it. Returns the uids reclaimed and those left alone, with reasons.
   */
  async recover(): Promise<{ reclaimed: Skipped[]; kept: Skipped[] }> {
    const held = await this.lock.acquire();
    try {
      removeTempFiles(this.leaseDir);
      const reclaimed: Skipped[] = [];
      const kept: Skipped[] = [];
      for (const name of listRecordNames(this.leaseDir)) {
        const uid = Number.parseInt(name, 10);
        const read = readRecord(this.leaseDir, name);
        const why = this.staleness(read);
        if (why.kind === 'busy') {
          kept.push({ uid, reason: why.reason });
          continue;
        }
        const exclusive = !/\.d\d+\.json$/.test(name);
        if (exclusive) {
          const report = verifyEmpty(uid, this.verifyOptions);
          if (!report.empty) {
            kept.push({
              uid,
              reason: `${why.reclaimed ?? 'stale'}, but not empty: ${describeReport(report)}`,
            });
            continue;
          }
        }
        removeDurably(this.leaseDir, name);
        reclaimed.push({ uid, reason: why.reclaimed ?? 'stale' });
      }
      return { reclaimed, kept };
    } finally {
      held.release();
    }
  }

  private reaperOrThrow(uid: number): number {
    if (this.reaperUid === undefined) {
      throw new UidAllocatorError(
        'BAD_CONFIG',
        `reap uid ${uid}: expected a reaper uid (option reaperUid or a reaper user), none configured`,
        uid,
      );
    }
    return this.reaperUid;
  }

  private nameOf(lease: Lease): string {
    return recordName(lease.uid, lease.domid, lease.isolation === 'per-domain');
  }

  /** The record of `lease`, or STALE_LEASE when it was released (or replaced). */
  private current(lease: Lease, releasing = false): LeaseRecord {
    const read = readRecord(this.leaseDir, this.nameOf(lease));
    if (
      read.kind !== 'record' ||
      read.record.leaseId !== lease.leaseId ||
      !(read.record.state === 'held' || (releasing && read.record.state === 'releasing'))
    ) {
      throw new UidAllocatorError(
        'STALE_LEASE',
        `lease ${lease.leaseId} of uid ${lease.uid}: expected it held in ${this.leaseDir}, found ${read.kind === 'record' ? `lease ${read.record.leaseId} (${read.record.state})` : read.kind}`,
        lease.uid,
      );
    }
    return read.record;
  }

  /** Whether a record still holds its uid; never trusts an unreadable or foreign-boot one. */
  private staleness(read: ReturnType<typeof readRecord>): Verdict {
    if (read.kind === 'absent') return { kind: 'free', reclaimed: null };
    if (read.kind === 'unreadable')
      return { kind: 'free', reclaimed: `unreadable record (${read.error.message})` };
    const r = read.record;
    if (r.bootId !== bootId()) return { kind: 'free', reclaimed: `record from boot ${r.bootId}` };
    switch (r.state) {
      case 'releasing':
        return { kind: 'free', reclaimed: `release by launcher ${r.launcher.pid} was interrupted` };
      case 'quarantined': {
        const until = Date.parse(r.releasedAt ?? '') + this.quarantineMs;
        if (this.now() < until)
          return { kind: 'busy', reason: `quarantined until ${new Date(until).toISOString()}` };
        return { kind: 'free', reclaimed: 'quarantine over' };
      }
      case 'held': {
        if (r.dm !== null && isAlive(r.dm))
          return { kind: 'busy', reason: `held for domid ${r.domid}, DM ${r.dm.pid} running` };
        if (isAlive(r.launcher))
          return {
            kind: 'busy',
            reason: `held for domid ${r.domid} by launcher ${r.launcher.pid}`,
          };
        return {
          kind: 'free',
          reclaimed: `launcher ${r.launcher.pid} is gone and ${r.dm === null ? 'no DM was attached' : `DM ${r.dm.pid} is gone`}`,
        };
      }
    }
  }

  private examine(name: string, uid: number, exclusive: boolean): Verdict {
    const why = this.staleness(readRecord(this.leaseDir, name));
    if (why.kind === 'busy') return why;
    // A shared uid runs other domains' DMs; only a per-domain uid must be empty to be reused.
    if (exclusive) {
      const report = verifyEmpty(uid, this.verifyOptions);
      if (!report.empty) return { kind: 'busy', reason: `not empty: ${describeReport(report)}` };
    }
    return why;
  }

  private leaseOf(r: LeaseRecord): Lease {
    return {
      leaseId: r.leaseId,
      uid: r.uid,
      gid: r.gid,
      domid: r.domid,
      scheme: r.scheme,
      isolation: r.exclusive ? 'per-domain' : 'shared',
      reaperUid: this.reaperUid ?? null,
      stateDir: this.stateDir,
      createdAt: r.createdAt,
      dm: r.dm,
    };
  }
}
