import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { close, reaperKill, spawnConfined, waitPid } from '../src/index.js';
import { binding } from '../src/native.js';
import { canRun, canRunAsRoot, pollUntil, processesOfUid, TEST_UID_BASE } from './helpers.js';

const TARGET = TEST_UID_BASE + 200;
const REAPER = TEST_UID_BASE + 201;

describe('reaperKill refuses unsafe uids before forking anything', () => {
  const unsafe: [string, number, number][] = [
    ['target root', 0, REAPER],
    ['reaper root', TARGET, 0],
    ['both root', 0, 0],
    ['target a system account', 999, REAPER],
    ['reaper a system account', TARGET, 1],
    ['equal uids', TARGET, TARGET],
    ['target -1', -1, REAPER],
    ['target (uid_t)-1', 2 ** 32 - 1, REAPER],
    ['reaper not an integer', TARGET, 3_000_000.5],
    ['target NaN', Number.NaN, REAPER],
  ];
  it.each(unsafe)('%s', (_, target, reaper) => {
    expect(() => reaperKill(target, reaper)).toThrow(TypeError);
  });

  it('names what it expected', () => {
    expect(() => reaperKill(0, REAPER)).toThrow(
      'reaperKill targetUid: expected a uid >= 1000 (never root or a system account), got 0',
    );
    expect(() => reaperKill(TARGET, TARGET)).toThrow(
      `reaperKill reaperUid: expected a uid other than the target ${TARGET}, got ${TARGET}`,
    );
  });

  it.skipIf(!canRun)(
    'the addon re-checks the same rules when called without the TypeScript layer',
    () => {
      for (const [target, reaper] of [
        [0, REAPER],
        [TARGET, 0],
        [999, REAPER],
        [TARGET, TARGET],
        [-1, REAPER],
      ] as const) {
        expect(() => binding().reaperKill(target, reaper)).toThrow(TypeError);
      }
    },
  );
});

describe.skipIf(!canRunAsRoot)(
  'reaperKill kills a real process tree of a test uid (as root)',
  () => {
    it('kills a setsid + double-forked tree of uid 3970200, leaving no live process of it', async () => {
      expect(processesOfUid(TARGET)).toEqual([]);
      // sh (our child) -> sleep, and a subshell that starts a setsid'd sh and exits at once,
      // so that sh (re-parented, in its own session) -> 2 x sleep.
      const script = '(setsid sh -c "sleep 1000 & sleep 1000 & wait" &); sleep 1000 & wait';
      const child = spawnConfined({
        file: '/bin/sh',
        argv: ['sh', '-c', script],
        env: {},
        uid: TARGET,
        gid: TARGET,
      });
      let reaped = false;
      try {
        const shape = (pids: number[]) => {
          const procs = pids.map((pid) => {
            try {
              const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
              const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
              return { name, session: stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3] };
            } catch {
              return { name: 'gone', session: '' };
            }
          });
          return {
            count: pids.length,
            names: procs.map((p) => p.name).sort(),
            sessions: new Set(procs.map((p) => p.session)).size,
          };
        };
        const want = { count: 5, names: ['sh', 'sh', 'sleep', 'sleep', 'sleep'], sessions: 2 };
        const before = await pollUntil(
          () => shape(processesOfUid(TARGET)),
          (s) => JSON.stringify(s) === JSON.stringify(want),
        );
        expect(before).toEqual(want);

        reaperKill(TARGET, REAPER);

        expect(waitPid(child.pid)).toEqual({ pid: child.pid, exitCode: null, signal: 9 });
        reaped = true;
        const after = await pollUntil(
          () => processesOfUid(TARGET),
          (p) => p.length === 0,
        );
        expect(after).toEqual([]);
      } finally {
        if (!reaped) {
          // Never leave the tree behind, even when an assertion failed.
          reaperKill(TARGET, REAPER);
          waitPid(child.pid);
        }
        close(child.pidfd);
      }
    });

    it('with nothing to kill it succeeds (ESRCH is not an error)', () => {
      expect(processesOfUid(TARGET + 50)).toEqual([]);
      expect(() => reaperKill(TARGET + 50, REAPER)).not.toThrow();
    });
  },
);
