import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidsOfUid } from '@xen-depriv/qemu-launcher';
import { afterAll, describe, expect, it } from 'vitest';
import { cliPath, runCli } from './helpers.js';

// End-to-end: the built CLI as a subprocess, on the real QEMU, as root. Every uid used here is
// 3,000,000 and up; each test kills by pid what it started if it fails half-way. The timeouts
// only stop a hung run; nothing here measures time.
const T = 120_000;
const QEMU = '/usr/bin/qemu-system-x86_64';
const root = process.geteuid?.() === 0;
const canLaunch = root && existsSync(QEMU);
const why = !root ? 'needs root' : `needs ${QEMU}`;

const dir = mkdtempSync(join(tmpdir(), 'xd-e2e-'));

/** SIGKILL by pid every live process of `uids`: the cleanup of a test that failed half-way. */
function killUids(uids: readonly number[]): void {
  for (const uid of uids) {
    for (const pid of pidsOfUid(uid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
  }
}

const range = (first: number, n: number) => Array.from({ length: n }, (_, i) => first + i);

/** What a destroy must leave: no process of the uid, no lease, no jail, no socket, no record. */
function leftBehind(stateDir: string, domid: number, uids: readonly number[]): string[] {
  const left: string[] = [];
  for (const uid of uids) if (pidsOfUid(uid).length) left.push(`process of uid ${uid}`);
  const leases = existsSync(join(stateDir, 'leases'))
    ? readdirSync(join(stateDir, 'leases')).filter((n) => !n.startsWith('.'))
    : [];
  left.push(...leases.map((n) => `lease ${n}`));
  for (const p of [`dm-${domid}`, `dm-${domid}/run/qmp.sock`, `state/dm-${domid}.json`]) {
    if (existsSync(join(stateDir, p))) left.push(p);
  }
  return left;
}

const tooWide = (text: string, width = 80) => text.split('\n').filter((l) => [...l].length > width);

const demoDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith('xen-depriv-demo-'));

afterAll(() => {
  killUids(range(3_300_000, 65));
  killUids(range(3_300_200, 17));
  killUids(range(3_300_300, 17));
  rmSync(dir, { recursive: true, force: true });
});

describe('xen-depriv demo (built CLI, subprocess)', () => {
  it.skipIf(!canLaunch)(
    `runs every step as root, fits 80 columns and leaves nothing behind (${why})`,
    () => {
      const before = demoDirs();
      const r = runCli(['demo']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      for (const n of [1, 2, 3, 4, 5]) expect(r.stdout).toContain(`[${n}/5] `);
      const summary = r.stdout.slice(r.stdout.indexOf('\nsummary\n'));
      expect(summary.split('\n').slice(4, 9)).toEqual([
        '1. xenstore       ok      4 refused by the proxy, 1 by xenstored',
        '2. DM_OP policy   ok      5 allowed, 5 denied',
        '3. guest memory   ok      bytes match both ways',
        expect.stringMatching(/^4\. confined QEMU {2}ok {6}\d+\/\d+ checks pass.*; uid 33000\d\d$/),
        '5. teardown       ok      nothing left',
      ]);
      expect(r.stdout).toMatch(
        /denied {2}DM write \/local\/domain\/0\/device-model\/1\/evil\n {10}EACCES.*\n.*not-in-allowlist:write\)/,
      );
      expect(r.stdout).toMatch(/denied {2}inject_msi addr 0xfed00000.*\n {10}EPERM/);
      expect(r.stdout).toContain('"written by the device model"');
      expect(r.stdout).toMatch(/destroy pid \d+: quit, reap uid \d+, release → nothing left/);
      expect(tooWide(r.stdout)).toEqual([]);
      expect(range(3_300_000, 65).filter((u) => pidsOfUid(u).length)).toEqual([]);
      expect(demoDirs()).toEqual(before);
    },
    T,
  );

  it.skipIf(!canLaunch)(
    `--json reports each step and its decisions (${why})`,
    () => {
      const r = runCli(['--json', 'demo']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const parsed = JSON.parse(r.stdout) as {
        ok: boolean;
        root: boolean;
        steps: {
          outcome: string;
          events: { allowed: boolean; what: string; result: string }[];
        }[];
      };
      expect(parsed.ok).toBe(true);
      expect(parsed.steps.map((s) => s.outcome)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
      const xs = parsed.steps[0]?.events ?? [];
      const refused = xs.filter((e) => !e.allowed);
      expect(refused.map((e) => /\(([^()]+)\)$/.exec(e.result)?.[1])).toEqual([
        'proxy rule not-in-allowlist:read',
        'proxy rule not-in-allowlist:write',
        'proxy rule not-in-allowlist:read',
        'proxy rule privileged-op:SET_TARGET',
        'the daemon refused it',
      ]);
      expect(refused.every((e) => e.result.startsWith('EACCES: '))).toBe(true);
      const dmop = parsed.steps[1]?.events ?? [];
      expect(dmop.filter((e) => e.allowed)).toHaveLength(5);
      expect(dmop.filter((e) => !e.allowed).every((e) => e.result.startsWith('EPERM:'))).toBe(true);
    },
    T,
  );
});

describe('xen-depriv launch / check / destroy on a real confined QEMU (built CLI)', () => {
  const stateDir = join(dir, 'state-launch');
  const config = join(dir, 'dm7.json');
  const uids = range(3_300_200, 17);
  writeFileSync(
    config,
    JSON.stringify({ domid: 7, stateDir, user: { scheme: 'pool', first: 3_300_200, count: 16 } }),
  );
  let pid: number | null = null;
  afterAll(() => {
    if (pid !== null && existsSync(`/proc/${pid}`))
      runCli(['destroy', '7', '--state-dir', stateDir]);
    if (pid !== null) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
    killUids(uids);
  });

  it(
    '--dry-run prints the launch plan as JSON, as any user',
    () => {
      const r = runCli(['--json', 'launch', '--dry-run', config]);
      expect(r.status).toBe(0);
      const parsed = JSON.parse(r.stdout) as {
        ok: boolean;
        dryRun: boolean;
        plan: { domid: number; uid: number; argv: string[]; mode: string };
      };
      expect(parsed).toMatchObject({
        ok: true,
        dryRun: true,
        plan: { domid: 7, uid: 3_300_207, mode: 'jail' },
      });
      expect(parsed.plan.argv[0]).toBe(QEMU);
      expect(parsed.plan.argv).toContain('none');
      expect(existsSync(join(stateDir, 'state'))).toBe(false);
      const text = runCli(['launch', '--dry-run', config]);
      expect(text.status).toBe(0);
      expect(JSON.parse(text.stdout)).toEqual(parsed.plan);
    },
    T,
  );

  it.skipIf(!canLaunch)(
    `launches, checks and destroys; nothing is left (${why})`,
    () => {
      const launched = runCli(['--json', 'launch', config]);
      expect(launched.stderr).toBe('');
      expect(launched.status).toBe(0);
      const l = JSON.parse(launched.stdout) as {
        ok: boolean;
        pid: number;
        uid: number;
        status: string;
      };
      pid = l.pid;
      expect(l).toMatchObject({ ok: true, uid: 3_300_207, status: 'running' });
      // The DM outlives the launcher: it is alive and runs as its uid.
      expect(pidsOfUid(3_300_207)).toEqual([l.pid]);

      const check = runCli(['--json', 'check', '7', '--state-dir', stateDir]);
      expect(check.status).toBe(0);
      const c = JSON.parse(check.stdout) as {
        ok: boolean;
        pid: number;
        failed: string[];
        checks: { name: string; ok: boolean; actual: string }[];
      };
      expect(c).toMatchObject({ ok: true, pid: l.pid, failed: [] });
      expect(c.checks.find((x) => x.name === 'uid')?.actual).toBe(
        '3300207 3300207 3300207 3300207',
      );
      expect(c.checks.find((x) => x.name === 'noNewPrivs')).toMatchObject({
        ok: true,
        actual: '1',
      });
      const table = runCli(['check', '7', '--state-dir', stateDir]);
      expect(table.stdout.split('\n')[0]).toMatch(
        /^pid \d+ \(domain 7\): confined, \d+\/\d+ checks pass$/,
      );
      expect(tooWide(table.stdout)).toEqual([]);

      // Any pid works: the launcher's own process is not confined, exit 1.
      const self = runCli(['--json', 'check', '--pid', String(process.pid)]);
      expect(self.status).toBe(1);
      expect((JSON.parse(self.stdout) as { failed: string[] }).failed).toContain('uid');

      const destroyed = runCli(['destroy', '7', '--state-dir', stateDir]);
      expect(destroyed.stderr).toBe('');
      expect(destroyed.status).toBe(0);
      expect(destroyed.stdout).toMatch(/^destroyed domain 7: pid \d+ gone, uid 3300207 empty/);
      expect(leftBehind(stateDir, 7, uids)).toEqual([]);
      expect(runCli(['destroy', '7', '--state-dir', stateDir]).status).toBe(1);
    },
    T,
  );
});

describe('xen-depriv recover after a launch killed mid-way (built CLI)', () => {
  const stateDir = join(dir, 'state-recover');
  const config = join(dir, 'dm9.json');
  const uids = range(3_300_300, 17);
  writeFileSync(
    config,
    JSON.stringify({ domid: 9, stateDir, user: { scheme: 'pool', first: 3_300_300, count: 16 } }),
  );
  afterAll(() => killUids(uids));

  it.skipIf(!canLaunch)(
    `finishes the launch's teardown: nothing is left (${why})`,
    () => {
      // SIGKILLed before the jail is sealed: QEMU runs, the record says 'launching'.
      const crashed = runCli(['launch', config], { XEN_DEPRIV_TEST_CRASH_AT: 'seal-jail' });
      expect(crashed.status).toBe(null);
      expect(pidsOfUid(3_300_309)).toHaveLength(1);
      expect(existsSync(join(stateDir, 'state', 'dm-9.json'))).toBe(true);

      const r = runCli(['--json', 'recover', '--state-dir', stateDir]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, finished: [9], adopted: [] });
      expect(leftBehind(stateDir, 9, uids)).toEqual([]);
      const again = runCli(['recover', '--state-dir', stateDir]);
      expect(again.stdout).toBe(
        'recover (in-process): 0 half-done launch(es) or destroy(s) finished\n',
      );
    },
    T,
  );
});

describe('xen-depriv storm (built CLI)', () => {
  afterAll(() => killUids(range(3_400_000, 17)));

  it.skipIf(!canLaunch)(
    `--count 16 fits 80 columns and leaves nothing behind (${why})`,
    () => {
      const r = runCli(['storm', '--count', '16', '--concurrency', '4']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines[0]).toBe('[########################################] 16/16 done, 0 failed');
      expect(lines[1]).toMatch(/^storm: 16\/16 ready, 0 failed, concurrency 4, \d+ ms wall$/);
      expect(lines[2]).toMatch(/^launch to QMP-ready {2}p50 +p90 +p99 +max$/);
      expect(lines[4]).toMatch(/^latency {14}\d+ ms +\d+ ms +\d+ ms +\d+ ms$/);
      // 8 histogram rows whose counts add up to 16
      const counts = lines.slice(5, 13).map((l) => Number(/ (\d+)$/.exec(l)?.[1]));
      expect(counts.reduce((a, b) => a + b, 0)).toBe(16);
      expect(lines[13]).toMatch(/^destroyed 16 in \d+ ms: no process of their uids left$/);
      expect(tooWide(r.stdout)).toEqual([]);
      expect(range(3_400_000, 17).filter((u) => pidsOfUid(u).length)).toEqual([]);
      expect(readdirSync(tmpdir()).filter((n) => n.startsWith('xen-depriv-storm-'))).toEqual([]);
    },
    T,
  );

  it.skipIf(!canLaunch)(
    `--json gives the latencies and percentiles (${why})`,
    () => {
      const r = runCli(['--json', 'storm', '--count', '4', '--concurrency', '2']);
      expect(r.status).toBe(0);
      const s = JSON.parse(r.stdout) as {
        ok: boolean;
        ready: number;
        latenciesMs: number[];
        p50: number;
        p99: number;
        leftBehind: { uids: number[]; leases: number };
      };
      expect(s).toMatchObject({ ok: true, ready: 4, leftBehind: { uids: [], leases: 0 } });
      expect(s.latenciesMs).toHaveLength(4);
      expect(s.p50).toBeLessThanOrEqual(s.p99);
    },
    T,
  );

  it(
    'rejects a bad --count with exit 2',
    () => {
      const r = runCli(['storm', '--count', '0']);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/^error: --count: expected an integer 1\.\.1024, saw "0"/);
    },
    T,
  );
});
