import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { canRunAsRoot, tempStateDir, UID_BASE } from './helpers.js';

// This file's uids: 3,100,400..3,100,499 (no process ever runs as them here).
const FIRST = UID_BASE + 400;
const COUNT = 6;
const WORKERS = 8;
/**
 * Cycles per worker. The acceptance count is 1000 (8 x 1000); each cycle scans /proc twice
 * under the lock, so npm test runs 8 x 100 and `node bench/uid-allocator/leases.mjs` runs
 * the full 8 x 1000 with the same workers and observer.
 */
const CYCLES = Number(process.env.UID_ALLOCATOR_CYCLES ?? 100);

const run = promisify(execFile);
const fixture = (name: string) => join(import.meta.dirname, 'fixtures', name);
const built = existsSync(join(import.meta.dirname, '..', 'dist', 'index.js'));

describe.skipIf(!canRunAsRoot || !built)(
  '8 launcher processes on one state directory (as root)',
  () => {
    it(`${WORKERS} x ${CYCLES} acquire/release cycles on a pool of ${COUNT}: no uid held twice (independent observer), final state empty`, async () => {
      const state = tempStateDir('conc');
      try {
        const markers = join(state.dir, 'markers');
        mkdirSync(markers);
        mkdirSync(join(state.dir, 'leases'));
        const stop = join(state.dir, 'stop');
        const env = {
          ...process.env,
          STATE_DIR: state.dir,
          FIRST: String(FIRST),
          COUNT: String(COUNT),
          CYCLES: String(CYCLES),
          MARKERS: markers,
          STOP: stop,
          MODE: 'cycles',
        };
        const observer = run(process.execPath, [fixture('observer.mjs')], { env });
        const workers = await Promise.all(
          Array.from({ length: WORKERS }, () =>
            run(process.execPath, [fixture('worker.mjs')], { env, maxBuffer: 1 << 20 }),
          ),
        );
        writeFileSync(stop, '');
        const seen = JSON.parse((await observer).stdout);
        const results = workers.map((w) => JSON.parse(w.stdout));
        expect(results.map((r) => [r.cycles, r.violations])).toEqual(
          Array.from({ length: WORKERS }, () => [CYCLES, 0]),
        );
        expect(seen.violations).toEqual([]);
        expect(seen.markersChecked).toBeGreaterThan(0);
        expect(seen.maxHeld).toBeLessThanOrEqual(COUNT);
        expect(readdirSync(join(state.dir, 'leases'))).toEqual([]);
        expect(readdirSync(markers)).toEqual([]);
      } finally {
        state.cleanup();
      }
    }, 300_000);
  },
);
