import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DestroyStep,
  destroy,
  type LaunchStep,
  launch,
  pidsOfUid,
  plan,
  probeQemu,
  recover,
} from '../src/index.js';

const X86 = '/usr/bin/qemu-system-x86_64';
const DIST = new URL('../dist/index.js', import.meta.url).pathname;
const CHILD = new URL('./fixtures/crash-child.mjs', import.meta.url).pathname;
const runnable = process.getuid?.() === 0 && existsSync(X86) && existsSync('/usr/bin/unshare');

const LAUNCH_STEPS: LaunchStep[] = [
  'record-state',
  'prepare-dirs',
  'qmp-listen',
  'spawn',
  'qmp-connect',
  'qmp-ready',
  'seal-jail',
  'running',
];
const DESTROY_STEPS: DestroyStep[] = [
  'mark-destroying',
  'qmp-quit',
  'sigterm',
  'sigkill',
  'reap',
  'verify-empty',
  'remove-jail',
  'release-lease',
  'remove-state',
];

// The crashing launcher runs as its own node process from the built package (npm test builds first).
describe.skipIf(!runnable || !existsSync(DIST))(
  'recover after the launcher is SIGKILLed at every step',
  () => {
    let stateDir: string;
    let capsPath: string;
    beforeAll(async () => {
      stateDir = mkdtempSync(join(tmpdir(), 'ql-recover-'));
      capsPath = join(stateDir, 'caps.json');
      writeFileSync(capsPath, JSON.stringify(await probeQemu(X86)));
    });
    afterAll(async () => {
      const left = await recover(stateDir);
      for (const r of left.running) {
        await destroy({ plan: r.plan, pid: r.pid, startTime: r.startTime, lease: r.lease });
      }
      rmSync(stateDir, { recursive: true, force: true });
    });

    const cases = [
      ...LAUNCH_STEPS.map((s, i) => ['launch', s, 3_011_100 + i] as const),
      ...DESTROY_STEPS.map((s, i) => ['destroy', s, 3_011_120 + i] as const),
    ];
    it.each(cases)('%s killed before %s: recover leaves nothing', async (phase, step, uid) => {
      const domid = uid - 3_011_000;
      const r = spawnSync(
        process.execPath,
        [CHILD, stateDir, String(uid), String(domid), phase, step, capsPath],
        {
          encoding: 'utf8',
        },
      );
      expect(r.signal).toBe('SIGKILL');
      let result = await recover(stateDir);
      expect(result.errors).toEqual([]);
      if (step === 'mark-destroying') {
        // Killed before the destroy was recorded: to recover the DM is simply running, to be
        // adopted; the toolstack's destroy of that record then finishes the job.
        expect(result.running.map((x) => [x.domid, x.phase])).toEqual([[domid, 'running']]);
        const rec = result.running[0]!;
        await destroy({ plan: rec.plan, pid: rec.pid, startTime: rec.startTime, lease: rec.lease });
        result = await recover(stateDir);
      }
      expect(result.running).toEqual([]);
      expect(pidsOfUid(uid)).toEqual([]);
      expect(existsSync(join(stateDir, `dm-${domid}`))).toBe(false);
      expect(existsSync(join(stateDir, 'state', `dm-${domid}.json`))).toBe(false);
      expect(readdirSync(stateDir).filter((n) => n.startsWith('dm-'))).toEqual([]);
    });

    it('recover leaves a running DM alone and reports it for adoption', async () => {
      const caps = await probeQemu(X86);
      const uid = 3_011_140;
      const p = plan({ domid: 140, binary: X86, stateDir }, caps, { uid, gid: uid });
      const h = await launch(p);
      try {
        const result = await recover(stateDir);
        expect(result.running.map((x) => [x.domid, x.pid, x.phase])).toEqual([
          [140, h.pid, 'running'],
        ]);
        expect(pidsOfUid(uid)).toEqual([h.pid]);
      } finally {
        await destroy(h);
      }
      expect(pidsOfUid(uid)).toEqual([]);
    });
  },
);
