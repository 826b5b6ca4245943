import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { close, spawnConfined, waitPid } from '@xen-depriv/sys';
import { afterEach, describe, expect, it } from 'vitest';
import {
  bootId,
  dynamicPoolScheme,
  type LeaseRecord,
  processesOfUid,
  sharedUserScheme,
  UidAllocator,
  UidAllocatorError,
  type UidAllocatorOptions,
} from '../src/index.js';
import { canRunAsRoot, pollUntil, tempStateDir, UID_BASE } from './helpers.js';

// This file's uids: 3,100,300..3,100,399; its reaper is 3,100,399.
const FIRST = UID_BASE + 300;
const REAPER = UID_BASE + 399;

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function allocator(first: number, count: number, extra: Partial<UidAllocatorOptions> = {}) {
  const state = tempStateDir('alloc');
  cleanups.push(state.cleanup);
  return new UidAllocator({
    scheme: dynamicPoolScheme({ first, count, reaperUid: REAPER }),
    stateDir: state.dir,
    verify: { places: [] },
    ...extra,
  });
}

/** A sleeping process of `uid`, killed and reaped after the test. */
async function survivor(uid: number): Promise<number> {
  const child = spawnConfined({
    file: '/bin/sleep',
    argv: ['sleep', '1000'],
    env: {},
    uid,
    gid: uid,
  });
  cleanups.push(() => {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // Reaped already.
    }
    waitPid(child.pid);
    close(child.pidfd);
  });
  await pollUntil(() => processesOfUid(uid).length > 0);
  return child.pid;
}

async function rejection(p: Promise<unknown>): Promise<UidAllocatorError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(UidAllocatorError);
    return e as UidAllocatorError;
  }
  throw new Error('expected a rejection');
}

function records(a: UidAllocator): string[] {
  return readdirSync(a.leaseDir).sort();
}

describe.skipIf(!canRunAsRoot)('UidAllocator on a real state directory (as root)', () => {
  it('acquire takes a pool uid and writes its record; release removes it', async () => {
    const a = allocator(FIRST, 4);
    const lease = await a.acquire(6);
    expect(lease).toMatchObject({
      uid: FIRST + 2,
      gid: FIRST + 2,
      domid: 6,
      scheme: 'dynamic-pool',
      isolation: 'per-domain',
      reaperUid: REAPER,
      dm: null,
    });
    expect(records(a)).toEqual([`${FIRST + 2}.json`]);
    const rec = JSON.parse(readFileSync(join(a.leaseDir, `${FIRST + 2}.json`), 'utf8'));
    expect(rec).toMatchObject({
      leaseId: lease.leaseId,
      state: 'held',
      launcher: { pid: process.pid },
      bootId: bootId(),
    });
    // A lease is plain data, so a launcher can store it as JSON and release it later.
    const report = await a.release(JSON.parse(JSON.stringify(lease)));
    expect(report).toMatchObject({ released: true, quarantinedUntil: null, reap: null });
    expect(records(a)).toEqual([]);
    expect(await a.release(lease)).toMatchObject({ released: false });
  });

  it('gives concurrent acquires in one process distinct uids; a full pool is EXHAUSTED', async () => {
    const a = allocator(FIRST, 10);
    const leases = await Promise.all(Array.from({ length: 10 }, (_, i) => a.acquire(i % 3)));
    expect(new Set(leases.map((l) => l.uid)).size).toBe(10);
    const e = await rejection(a.acquire(0));
    expect(e.code).toBe('EXHAUSTED');
    expect(e.message).toContain(
      `acquire domid 0: expected a free uid in dynamic pool uids ${FIRST}..${FIRST + 9}, 10 skipped (${FIRST}: held for domid 0 by launcher ${process.pid}`,
    );
    await a.release(leases[3] as (typeof leases)[number]);
    expect((await a.acquire(0)).uid).toBe(leases[3]?.uid);
  });

  it('never hands out a uid whose process survives (a stray process of the uid)', async () => {
    const a = allocator(FIRST + 10, 2);
    await survivor(FIRST + 10);
    const lease = await a.acquire(0);
    expect(lease.uid).toBe(FIRST + 11);
    const e = await rejection(a.acquire(0));
    expect(e.code).toBe('EXHAUSTED');
    expect(e.message).toMatch(new RegExp(`${FIRST + 10}: not empty: 1 process\\(es\\)`));
  });

  it('refuses to release a uid whose DM survives; the uid stays out of use until it is empty', async () => {
    const a = allocator(FIRST + 20, 1);
    const lease = await a.acquire(0);
    const pid = await survivor(lease.uid);
    const e = await rejection(a.release(lease));
    expect(e.code).toBe('NOT_EMPTY');
    expect(e.message).toBe(
      `release uid ${lease.uid}: expected an empty uid, found 1 process(es) (pids ${pid}); it stays out of use`,
    );
    const rec = JSON.parse(readFileSync(join(a.leaseDir, `${lease.uid}.json`), 'utf8'));
    expect(rec.state).toBe('releasing');
    expect((await rejection(a.acquire(0))).code).toBe('EXHAUSTED');
    for (const c of cleanups.splice(1)) c();
    expect((await a.acquire(0)).uid).toBe(lease.uid);
  });

  it('reaps a lease whose release was refused, then releases it', async () => {
    const a = allocator(FIRST + 25, 1);
    const lease = await a.acquire(0);
    await survivor(lease.uid);
    expect((await rejection(a.release(lease))).code).toBe('NOT_EMPTY');
    const report = await a.reap(lease);
    expect([report.rounds >= 1, report.processesSeen]).toEqual([true, 1]);
    expect(await a.release(lease)).toMatchObject({ released: true });
    expect(records(a)).toEqual([]);
  });

  it('release with reap empties the uid through sys.reaperKill first', async () => {
    const a = allocator(FIRST + 30, 1);
    const lease = await a.acquire(0);
    await survivor(lease.uid);
    await survivor(lease.uid);
    const report = await a.release(lease, { reap: true });
    expect(report.released).toBe(true);
    expect(report.reap?.processesSeen).toBe(2);
    expect(report.reap?.rounds).toBeGreaterThanOrEqual(1);
    expect(processesOfUid(lease.uid)).toEqual([]);
  });

  it('keeps a lease whose DM runs after its launcher died; reclaims it once the DM is gone', async () => {
    const a = allocator(FIRST + 40, 1);
    const lease = await a.acquire(0);
    const pid = await survivor(lease.uid);
    const attached = await a.attachDm(lease, pid);
    expect(attached.dm?.pid).toBe(pid);
    const pidfd = a.openDmPidfd(attached);
    expect(pidfd).not.toBeNull();
    close(pidfd as number);
    // The launcher "dies": its identity in the record no longer matches a live process.
    const path = join(a.leaseDir, `${lease.uid}.json`);
    const rec = JSON.parse(readFileSync(path, 'utf8')) as LeaseRecord;
    writeFileSync(path, JSON.stringify({ ...rec, launcher: { pid: 1, startTime: 123_456_789 } }));
    expect((await a.list())[0]?.verdict).toBe(`held for domid 0, DM ${pid} running`);
    expect((await rejection(a.acquire(0))).code).toBe('EXHAUSTED');
    for (const c of cleanups.splice(1)) c();
    expect(a.openDmPidfd(attached)).toBeNull();
    expect(await a.recover()).toEqual({
      reclaimed: [{ uid: lease.uid, reason: `launcher 1 is gone and DM ${pid} is gone` }],
      kept: [],
    });
    expect(records(a)).toEqual([]);
  });

  it('recovers stale records after checking the uid is empty, never trusting them', async () => {
    const a = allocator(FIRST + 50, 6);
    const base: LeaseRecord = {
      format: 'xen-depriv-uid-lease',
      version: 1,
      leaseId: 'ab'.repeat(16),
      uid: 0,
      gid: 0,
      domid: 1,
      scheme: 'dynamic-pool',
      exclusive: true,
      state: 'held',
      launcher: { pid: process.pid, startTime: 0 },
      dm: null,
      createdAt: new Date().toISOString(),
      releasedAt: null,
      bootId: bootId(),
    };
    const put = (uid: number, r: Partial<LeaseRecord> | string) =>
      writeFileSync(
        join(a.leaseDir, `${uid}.json`),
        typeof r === 'string' ? r : JSON.stringify({ ...base, uid, gid: uid, ...r }),
      );
    put(FIRST + 50, { launcher: { pid: 1, startTime: 123_456_789 } }); // pid reused by another process
    put(FIRST + 51, { bootId: '00000000-0000-0000-0000-000000000000' }); // another boot
    put(FIRST + 52, '{"format":"xen-depriv-uid-lease","vers'); // half-written
    put(FIRST + 53, { state: 'releasing' }); // release interrupted
    put(FIRST + 54, { bootId: 'x', launcher: { pid: 1, startTime: 1 } }); // stale but not empty
    const self = JSON.parse(JSON.stringify(await a.acquire(5))); // FIRST + 55, really held
    await survivor(FIRST + 54);
    writeFileSync(join(a.leaseDir, '.tmp-999999-deadbeef'), '{"half');
    const { reclaimed, kept } = await a.recover();
    expect(reclaimed.map((r) => r.uid)).toEqual([FIRST + 50, FIRST + 51, FIRST + 52, FIRST + 53]);
    expect(reclaimed[1]?.reason).toBe('record from boot 00000000-0000-0000-0000-000000000000');
    expect(reclaimed[2]?.reason).toMatch(
      /^unreadable record \(lease record text: expected complete JSON/,
    );
    expect(kept).toEqual([
      {
        uid: FIRST + 54,
        reason: expect.stringMatching(/^record from boot x, but not empty: 1 process/),
      },
      { uid: FIRST + 55, reason: `held for domid 5 by launcher ${process.pid}` },
    ]);
    expect(records(a)).toEqual([`${FIRST + 54}.json`, `${FIRST + 55}.json`]);
    expect(self.uid).toBe(FIRST + 55);
  });

  it('keeps a released uid in quarantine for quarantineMs', async () => {
    let now = 1_000_000;
    const a = allocator(FIRST + 60, 1, { quarantineMs: 60_000, now: () => now });
    const lease = await a.acquire(0);
    const report = await a.release(lease);
    expect(report.quarantinedUntil).toBe(new Date(1_060_000).toISOString());
    const e = await rejection(a.acquire(0));
    expect(e.message).toContain(
      `${FIRST + 60}: quarantined until ${new Date(1_060_000).toISOString()}`,
    );
    now = 1_060_000;
    expect((await a.acquire(0)).uid).toBe(FIRST + 60);
  });

  it('shares one uid between domains in the shared scheme and keeps one record per domain', async () => {
    const state = tempStateDir('shared');
    cleanups.push(state.cleanup);
    const uid = FIRST + 70;
    const a = new UidAllocator({
      scheme: sharedUserScheme({
        lookup: {
          getpwnam: (n) => (n === 'xen-qemuuser-shared' ? { name: n, uid, gid: uid } : null),
        },
      }),
      stateDir: state.dir,
    });
    const l1 = await a.acquire(1);
    const l2 = await a.acquire(2);
    expect([l1.uid, l2.uid, l1.isolation]).toEqual([uid, uid, 'shared']);
    expect(records(a)).toEqual([`${uid}.d1.json`, `${uid}.d2.json`]);
    expect((await rejection(a.acquire(1))).code).toBe('EXHAUSTED');
    expect((await rejection(a.reap(l1))).code).toBe('UNSAFE_UID');
    await a.release(l1);
    await a.release(l2);
    expect(records(a)).toEqual([]);
  });

  it('refuses to reap or attach to a lease that was released (its uid may serve another domain)', async () => {
    const a = allocator(FIRST + 80, 1);
    const old = await a.acquire(0);
    await a.release(old);
    const fresh = await a.acquire(0);
    expect(fresh.uid).toBe(old.uid);
    const e = await rejection(a.reap(old));
    expect(e.code).toBe('STALE_LEASE');
    expect(e.message).toBe(
      `lease ${old.leaseId} of uid ${old.uid}: expected it held in ${a.leaseDir}, found lease ${fresh.leaseId} (held)`,
    );
    expect((await rejection(a.attachDm(old, process.pid))).code).toBe('STALE_LEASE');
    expect(await a.release(old)).toMatchObject({ released: false });
    expect(records(a)).toEqual([`${fresh.uid}.json`]);
  });
});
