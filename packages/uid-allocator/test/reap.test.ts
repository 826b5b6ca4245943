import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnConfined, waitPid } from '@xen-depriv/sys';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processesOfUid, reap, UidAllocatorError } from '../src/index.js';
import { canRunAsRoot, pollUntil, UID_BASE } from './helpers.js';

// This file's uids: 3,100,200..3,100,299.
const TARGET = UID_BASE + 200;
const REAPER = UID_BASE + 299;
const RANGE = (uid: number) => uid >= UID_BASE + 200 && uid < UID_BASE + 290;
const BOMB_RANGE = (uid: number) => uid >= 3_101_000 && uid < 3_102_000;

const hasGcc = (() => {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** Distinct session ids among the uid's processes (field 6 of /proc/PID/stat). */
function sessionsOf(uid: number): number {
  const ids = new Set<string>();
  for (const p of processesOfUid(uid)) {
    try {
      const stat = readFileSync(`/proc/${p.pid}/stat`, 'latin1');
      ids.add(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3] ?? '');
    } catch {
      // Gone.
    }
  }
  return ids.size;
}

async function refusal(p: () => Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p();
  } catch (e) {
    expect(e).toBeInstanceOf(UidAllocatorError);
    return { code: (e as UidAllocatorError).code, message: (e as Error).message };
  }
  throw new Error('expected a refusal');
}

describe('reap refuses unsafe requests without forking (kill primitive is a spy)', () => {
  const cases: [string, number, number, string][] = [
    ['target uid 0', 0, REAPER, 'UNSAFE_UID'],
    ['target uid 999 (system account)', 999, REAPER, 'UNSAFE_UID'],
    ['target uid 1', 1, REAPER, 'UNSAFE_UID'],
    ['reaper uid 0', TARGET, 0, 'UNSAFE_UID'],
    ['reaper uid 500', TARGET, 500, 'UNSAFE_UID'],
    ['reaper equal to the target', TARGET, TARGET, 'UNSAFE_UID'],
    ['target outside the configured range', UID_BASE + 290, REAPER, 'OUT_OF_RANGE'],
    ['reaper inside the configured range', TARGET, UID_BASE + 250, 'UNSAFE_UID'],
    ['target -1', -1, REAPER, 'UNSAFE_UID'],
    ['target (uid_t)-1', 0xffffffff, REAPER, 'UNSAFE_UID'],
  ];
  it.each(cases)('%s', async (_, target, reaperUid, code) => {
    const calls: number[][] = [];
    const r = await refusal(() =>
      reap(target, { reaperUid, allowed: RANGE, kill: (t, k) => calls.push([t, k]) }),
    );
    expect(r.code).toBe(code);
    expect(calls).toEqual([]);
  });

  it('says what it expected and what it saw', async () => {
    expect((await refusal(() => reap(0, { reaperUid: REAPER }))).message).toBe(
      'reap uid: expected a uid >= 1000 (never root or a system account), got 0',
    );
    expect((await refusal(() => reap(TARGET, { reaperUid: TARGET }))).message).toBe(
      `reap reaperUid: expected a uid other than the target ${TARGET}, got ${TARGET}`,
    );
  });
});

describe('reap against a fake /proc (model of a process that survives)', () => {
  const root = mkdtempSync(join(tmpdir(), 'uid-allocator-reap-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, '4242'));
  writeFileSync(
    join(root, '4242', 'status'),
    `Name:\tqemu\nState:\tS (sleeping)\nUid:\t${TARGET}\t${TARGET}\t${TARGET}\t${TARGET}\n`,
  );

  it('gives up with REAP_INCOMPLETE after maxRounds, one kill per round', async () => {
    const calls: number[][] = [];
    const r = await refusal(() =>
      reap(TARGET, {
        reaperUid: REAPER,
        procRoot: root,
        maxRounds: 3,
        kill: (t, k) => calls.push([t, k]),
      }),
    );
    expect(r.code).toBe('REAP_INCOMPLETE');
    expect(r.message).toBe(
      `reap uid ${TARGET}: expected no process left, 1 remain (4242 qemu uids ${TARGET}/${TARGET}/${TARGET}/${TARGET} state S) after 3 rounds`,
    );
    expect(calls).toEqual([
      [TARGET, REAPER],
      [TARGET, REAPER],
      [TARGET, REAPER],
    ]);
  });

  it('makes no kill round for an empty uid', async () => {
    const calls: number[][] = [];
    const report = await reap(TARGET + 1, {
      reaperUid: REAPER,
      procRoot: root,
      kill: (t, k) => calls.push([t, k]),
    });
    expect(report).toEqual({
      uid: TARGET + 1,
      rounds: 0,
      processesSeen: 0,
      perRound: [],
      retries: 0,
    });
    expect(calls).toEqual([]);
  });
});

const TRIALS = Math.min(Number(process.env.UID_ALLOCATOR_BOMB_TRIALS ?? 100), 900);
/** RLIMIT_NPROC of the bomb's uid: the kernel refuses its forks beyond this many processes. */
const NPROC = 48;
/**
 * Each trial's bomb runs as its own uid (3,101,000 + trial): the killed bomb's orphans are
 * zombies until init reaps them, and zombies still count against RLIMIT_NPROC of their uid.
 */
const BOMB_UID_BASE = 3_101_000;

describe.skipIf(!canRunAsRoot || !hasGcc)(
  'reap on a real fork bomb (as root, uids 3101000 and up)',
  () => {
    let dir = '';
    let bombPath = '';
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'uid-allocator-bomb-'));
      bombPath = join(dir, 'bomb');
      execFileSync('gcc', ['-O2', '-o', bombPath, join(import.meta.dirname, 'fixtures', 'bomb.c')]);
      chmodSync(dir, 0o755);
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it(`leaves 0 processes of the uid in ${TRIALS} of ${TRIALS} trials (setsid, double fork, RLIMIT_NPROC ${NPROC})`, async () => {
      let emptied = 0;
      let minSeen = Number.POSITIVE_INFINITY;
      let sessions = 0;
      for (let trial = 0; trial < TRIALS; trial++) {
        const uid = BOMB_UID_BASE + trial;
        expect(processesOfUid(uid)).toEqual([]);
        const bomb = spawnConfined({
          file: bombPath,
          argv: ['bomb'],
          env: {},
          uid,
          gid: uid,
          rlimits: [{ resource: 'RLIMIT_NPROC', soft: NPROC, hard: NPROC }],
        });
        try {
          // Let it spread into new sessions and orphans before the reaper comes.
          await pollUntil(() => processesOfUid(uid).length >= NPROC / 2);
          sessions = Math.max(sessions, sessionsOf(uid));
          const report = await reap(uid, { reaperUid: REAPER, allowed: BOMB_RANGE });
          minSeen = Math.min(minSeen, report.processesSeen);
          if (processesOfUid(uid).length === 0) emptied++;
        } finally {
          try {
            process.kill(bomb.pid, 'SIGKILL');
          } catch {
            // Killed by the reaper already.
          }
          waitPid(bomb.pid);
        }
      }
      expect(emptied).toBe(TRIALS);
      expect(minSeen).toBeGreaterThanOrEqual(NPROC / 2);
      // The bomb did spread over many sessions, not one process group.
      expect(sessions).toBeGreaterThan(NPROC / 4);
    }, 120_000);
  },
);

const CGROUP2_ROOT = '/sys/fs/cgroup/unified';
const hasCgroup2 = (() => {
  try {
    return canRunAsRoot && readFileSync(`${CGROUP2_ROOT}/cgroup.procs`, 'latin1') !== undefined;
  } catch {
    return false;
  }
})();

describe.skipIf(!hasCgroup2)(
  'reap with the DM in its own cgroup v2 (as root, uids 3100210-3100211)',
  () => {
    it('writes cgroup.kill and waits until cgroup.procs is empty, a member of another uid included', async () => {
      const uid = UID_BASE + 210;
      const other = UID_BASE + 211;
      const cgroup = mkdtempSync(join(CGROUP2_ROOT, 'uid-allocator-test-'));
      const children: number[] = [];
      try {
        for (const u of [uid, other]) {
          const c = spawnConfined({
            file: '/bin/sleep',
            argv: ['sleep', '1000'],
            env: {},
            uid: u,
            gid: u,
          });
          children.push(c.pid);
          writeFileSync(join(cgroup, 'cgroup.procs'), String(c.pid));
        }
        expect(
          readFileSync(join(cgroup, 'cgroup.procs'), 'latin1')
            .trim()
            .split('\n')
            .map(Number)
            .sort(),
        ).toEqual([...children].sort());
        const report = await reap(uid, { reaperUid: REAPER, allowed: RANGE, cgroup });
        expect(report.perRound[0]).toBe(3); // 1 process of the uid + 2 cgroup members
        expect(readFileSync(join(cgroup, 'cgroup.procs'), 'latin1')).toBe('');
        expect(processesOfUid(uid)).toEqual([]);
        expect(processesOfUid(other)).toEqual([]);
      } finally {
        for (const pid of children) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Killed by the reaper.
          }
          waitPid(pid);
        }
        rmdirSync(cgroup);
      }
    });
  },
);
