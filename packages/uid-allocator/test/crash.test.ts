import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dynamicPoolScheme, UidAllocator, UidAllocatorError } from '../src/index.js';
import { canRunAsRoot, tempStateDir, UID_BASE } from './helpers.js';

// This file's uids: 3,100,500..3,100,599 (no process ever runs as them here).
const FIRST = UID_BASE + 500;
const COUNT = 2;

const built = existsSync(join(import.meta.dirname, '..', 'dist', 'index.js'));

/** Runs a launcher that SIGKILLs itself at `step` of `phase`; resolves with how it ended. */
function launcher(stateDir: string, phase: string, step: string): Promise<string> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(import.meta.dirname, 'fixtures', 'worker.mjs')],
      {
        env: {
          ...process.env,
          MODE: 'crash',
          PHASE: phase,
          STEP: step,
          STATE_DIR: stateDir,
          FIRST: String(FIRST),
          COUNT: String(COUNT),
          DOMID: '0',
        },
      },
      (error, stdout) => resolve(error ? (error.signal ?? `error ${error.message}`) : stdout),
    );
  });
}

const steps: [string, string][] = [
  ...[
    'locked',
    'examined',
    'tmp-half-written',
    'tmp-written',
    'renamed',
    'written',
    'unlocked',
  ].map((s): [string, string] => ['acquire', s]),
  ...[
    'locked',
    'tmp-half-written',
    'tmp-written',
    'renamed',
    'marked-releasing',
    'verified',
    'removed',
    'unlocked',
  ].map((s): [string, string] => ['release', s]),
];

describe.skipIf(!canRunAsRoot || !built)('a launcher SIGKILLed at each step (as root)', () => {
  it.each(steps)(
    'killed during %s at step %s: the next launcher recovers, no uid leaks, none is double-allocated',
    async (phase, step) => {
      const state = tempStateDir('crash');
      try {
        expect(await launcher(state.dir, phase, step)).toBe('SIGKILL');
        const next = new UidAllocator({
          scheme: dynamicPoolScheme({ first: FIRST, count: COUNT, reaperUid: FIRST + COUNT }),
          stateDir: state.dir,
        });
        // Every uid of the pool comes back, each once.
        const a = await next.acquire(0);
        const b = await next.acquire(0);
        expect([a.uid, b.uid].sort()).toEqual([FIRST, FIRST + 1]);
        await expect(next.acquire(0)).rejects.toThrow(UidAllocatorError);
        expect(readdirSync(next.leaseDir).sort()).toEqual([`${FIRST}.json`, `${FIRST + 1}.json`]);
        await next.release(a);
        await next.release(b);
        expect(readdirSync(next.leaseDir)).toEqual([]);
      } finally {
        state.cleanup();
      }
    },
    30_000,
  );

  it('a launcher that is not killed completes (the hook really stops at a step)', async () => {
    const state = tempStateDir('crash');
    try {
      expect(JSON.parse(await launcher(state.dir, 'acquire', 'no-such-step'))).toEqual({
        survived: true,
        uid: FIRST,
      });
    } finally {
      state.cleanup();
    }
  });
});
