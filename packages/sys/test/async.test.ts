import { readdirSync, readlinkSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import {
  close,
  constants,
  memfdCreate,
  pidfdSendSignal,
  REAPER_MIN_UID,
  reaperKillAsync,
  SpawnError,
  type SpawnSpec,
  spawnConfined,
  spawnConfinedAsync,
  waitPid,
} from '../src/index.js';
import { binding } from '../src/native.js';
import {
  canRun,
  canRunAsRoot,
  execDone,
  holdThreadPool,
  immediate,
  pollUntil,
  processesOfUid,
  TEST_UID_BASE,
  tempDir,
} from './helpers.js';

// A block of the sys package's private test uids (3,970,000+) no other test file uses.
const TARGET = TEST_UID_BASE + 400;
const REAPER = TEST_UID_BASE + 401;
const SLEEP: SpawnSpec = { file: '/bin/sleep', argv: ['sleep', '1000'], env: {} };

const running: { pid: number; pidfd: number }[] = [];
afterEach(() => {
  for (const child of running.splice(0)) {
    try {
      pidfdSendSignal(child.pidfd, constants.SIGKILL);
    } catch {
      // already gone
    }
    waitPid(child.pid);
    close(child.pidfd);
  }
});

function track(child: { pid: number; pidfd: number }): { pid: number; pidfd: number } {
  running.push(child);
  return child;
}

async function settledError(p: Promise<unknown>): Promise<unknown> {
  try {
    track((await p) as { pid: number; pidfd: number });
  } catch (e) {
    return e;
  }
  throw new Error('expected the call to fail');
}

function syncError(f: () => { pid: number; pidfd: number }): unknown {
  try {
    track(f());
  } catch (e) {
    return e;
  }
  throw new Error('expected the call to fail');
}

const shape = (e: unknown) => {
  const s = e as SpawnError;
  return { cls: s.constructor.name, step: s.step, errno: s.errno, code: s.code, msg: s.message };
};

describe('spawnConfinedAsync checks the spec as spawnConfined does, as a rejection', () => {
  const bad: [string, unknown, string][] = [
    ['empty file', { ...SLEEP, file: '' }, 'spawnConfined file: expected a non-empty path'],
    ['no argv', { ...SLEEP, argv: [] }, 'spawnConfined argv: expected at least argv[0]'],
    ['uid without gid', { ...SLEEP, uid: TARGET }, 'uid and gid given together'],
    ['not an object', 7, 'spawnConfined spec: expected an object, got 7'],
  ];
  it.each(bad)('%s', async (_, spec, message) => {
    const e = await settledError(spawnConfinedAsync(spec as SpawnSpec));
    expect(e).toBeInstanceOf(TypeError);
    expect((e as Error).message).toContain(message);
    if (canRun) expect(() => spawnConfined(spec as SpawnSpec)).toThrow(message);
  });
});

describe.skipIf(!canRunAsRoot)('spawnConfinedAsync (real processes, as root)', () => {
  it('the event loop keeps turning while the spawn waits for the thread pool; then /bin/sleep runs', async () => {
    using dir = tempDir('async');
    const pool = holdThreadPool(dir.path);
    let settled = false;
    let turns = 0;
    let pending: Promise<{ pid: number; pidfd: number }>;
    try {
      pending = spawnConfinedAsync(SLEEP);
      pending
        .then(track, () => {})
        .finally(() => {
          settled = true;
        });
      for (let i = 0; i < 100; i++) {
        await immediate();
        turns++;
      }
      expect({ turns, settled }).toEqual({ turns: 100, settled: false });
    } finally {
      await pool.release();
    }
    const child = await pending;
    expect(child.pid).toBeGreaterThan(0);
    expect(child.pidfd).toBeGreaterThan(2);
    await execDone(child.pid, 'sleep');
    expect(waitPid(child.pid, { noHang: true })).toBeNull();
  });

  const failures: [string, SpawnSpec][] = [
    ['a binary that does not exist (execve ENOENT)', { ...SLEEP, file: '/nonexistent/qemu' }],
    ['a cwd that does not exist (chdir ENOENT)', { ...SLEEP, cwd: '/nonexistent/dir' }],
  ];
  it.each(failures)('%s rejects with the SpawnError spawnConfined throws', async (_, spec) => {
    const fromSync = syncError(() => spawnConfined(spec));
    const fromAsync = await settledError(spawnConfinedAsync(spec));
    expect(fromAsync).toBeInstanceOf(SpawnError);
    expect(shape(fromAsync)).toEqual(shape(fromSync));
    expect(shape(fromAsync)).toMatchObject({ cls: 'SpawnError', code: 'ENOENT', errno: 2 });
  });

  it('keeps its own copies of the fds: the caller may close its fd as soon as the call returns', async () => {
    const memfd = memfdCreate('async-spawn-fd', constants.MFD_CLOEXEC);
    const pending = spawnConfinedAsync({ ...SLEEP, fds: [{ target: 3, source: memfd }] });
    close(memfd);
    const child = track(await pending);
    await execDone(child.pid, 'sleep');
    expect(readlinkSync(`/proc/${child.pid}/fd/3`)).toBe('/memfd:async-spawn-fd (deleted)');
    // Our copies were closed once the child had its own.
    const ours = readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).includes('async-spawn-fd');
      } catch {
        return false;
      }
    });
    expect(ours).toEqual([]);
  });

  it('runs eight spawns at once, each its own child', async () => {
    const children = await Promise.allSettled(
      Array.from({ length: 8 }, () => spawnConfinedAsync(SLEEP)),
    );
    for (const c of children) if (c.status === 'fulfilled') track(c.value);
    expect(children.map((c) => c.status)).toEqual(Array(8).fill('fulfilled'));
    const pids = running.map((c) => c.pid);
    expect(new Set(pids).size).toBe(8);
    for (const pid of pids) await execDone(pid, 'sleep');
  });
});

describe('reaperKillAsync refuses unsafe uids before forking anything', () => {
  const unsafe: [string, number, number][] = [
    ['target root', 0, REAPER],
    ['reaper root', TARGET, 0],
    ['target a system account', REAPER_MIN_UID - 1, REAPER],
    ['reaper a system account', TARGET, 1],
    ['equal uids', TARGET, TARGET],
    ['target (uid_t)-1', 2 ** 32 - 1, REAPER],
    ['reaper not an integer', TARGET, 3_000_000.5],
  ];
  it.each(unsafe)('%s', async (_, target, reaper) => {
    await expect(reaperKillAsync(target, reaper)).rejects.toThrow(TypeError);
  });

  it('names what it expected', async () => {
    await expect(reaperKillAsync(0, REAPER)).rejects.toThrow(
      'reaperKillAsync targetUid: expected a uid >= 1000 (never root or a system account), got 0',
    );
  });

  it.skipIf(!canRun)('the addon re-checks the same rules synchronously, before queueing', () => {
    for (const [target, reaper] of [
      [0, REAPER],
      [TARGET, 0],
      [999, REAPER],
      [TARGET, TARGET],
      [-1, REAPER],
    ] as const) {
      expect(() => binding().reaperKillAsync(target, reaper)).toThrow(TypeError);
    }
  });
});

describe.skipIf(!canRunAsRoot)(
  'reaperKillAsync kills a real process tree of a test uid (as root)',
  () => {
    it(`kills every process of uid ${TARGET} off the event loop`, async () => {
      expect(processesOfUid(TARGET)).toEqual([]);
      const child = spawnConfined({
        file: '/bin/sh',
        argv: ['sh', '-c', '(setsid sleep 1000 &); sleep 1000 & wait'],
        env: {},
        uid: TARGET,
        gid: TARGET,
      });
      let reaped = false;
      try {
        const before = await pollUntil(
          () => processesOfUid(TARGET).length,
          (n) => n === 3,
        );
        expect(before).toBe(3);

        using dir = tempDir('reaper-async');
        const pool = holdThreadPool(dir.path);
        let settled = false;
        let killing: Promise<void>;
        try {
          killing = reaperKillAsync(TARGET, REAPER);
          killing
            .catch(() => {})
            .finally(() => {
              settled = true;
            });
          for (let i = 0; i < 100; i++) await immediate();
          // Queued behind the held pool: nothing killed yet, and the loop kept running.
          expect({ settled, alive: processesOfUid(TARGET).length }).toEqual({
            settled: false,
            alive: 3,
          });
        } finally {
          await pool.release();
        }
        await killing;

        expect(waitPid(child.pid)).toEqual({ pid: child.pid, exitCode: null, signal: 9 });
        reaped = true;
        expect(
          await pollUntil(
            () => processesOfUid(TARGET),
            (p) => p.length === 0,
          ),
        ).toEqual([]);
      } finally {
        if (!reaped) {
          await reaperKillAsync(TARGET, REAPER);
          waitPid(child.pid);
        }
        close(child.pidfd);
      }
    });

    it('with nothing to kill it resolves (ESRCH is not an error)', async () => {
      expect(processesOfUid(TARGET + 50)).toEqual([]);
      await expect(reaperKillAsync(TARGET + 50, REAPER)).resolves.toBeUndefined();
    });
  },
);
