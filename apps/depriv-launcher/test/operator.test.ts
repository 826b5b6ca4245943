// What a new operator meets first: the CLI as any user, its exit codes and --json errors, the
// explicit check forms, its logs and version. Each case failed before issue 18's fixes.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TYPICAL_HVM_CFG } from './fixtures.js';
import { runCli, runCliAs } from './helpers.js';

const root = process.geteuid?.() === 0;
// This file's private uid for runs as a user that is not root.
const USER = 3_300_510;
const dir = mkdtempSync(join(tmpdir(), 'xd-operator-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cfg = (name: string, body: object) => {
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(body));
  return p;
};
const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as {
  version: string;
};

describe('as a user that is not root (from any checkout, even one that user cannot traverse)', () => {
  it.skipIf(!root)('launch --dry-run prints the plan and creates nothing', () => {
    const stateDir = join(dir, 'never-made', 'state');
    // A config file anyone can read: the user cannot traverse the test's temp dir.
    const path = join('/tmp', `xd-operator-${process.pid}.json`);
    writeFileSync(path, JSON.stringify({ domid: 5, stateDir }), { mode: 0o644 });
    try {
      const r = runCliAs(USER, ['--json', 'launch', '--dry-run', path]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout) as { ok: boolean; dryRun: boolean; plan: { domid: number } };
      expect(out).toMatchObject({ ok: true, dryRun: true, plan: { domid: 5 } });
      expect(existsSync(join(dir, 'never-made'))).toBe(false);
      // And with the default state directory, which this user could not create.
      const d = join('/tmp', `xd-operator-default-${process.pid}.json`);
      writeFileSync(d, JSON.stringify({ domid: 6 }), { mode: 0o644 });
      try {
        const before = existsSync('/run/xen-depriv');
        const r2 = runCliAs(USER, ['launch', '--dry-run', d]);
        expect(r2.stderr).toBe('');
        expect(r2.status).toBe(0);
        expect(existsSync('/run/xen-depriv')).toBe(before);
      } finally {
        rmSync(d, { force: true });
      }
    } finally {
      rmSync(path, { force: true });
    }
  });

  it.skipIf(!root)(
    'launch --dry-run of a typical HVM xl.cfg (disk, vif, vnc, serial) prints the plan, creates nothing',
    () => {
      const path = join('/tmp', `xd-operator-guest-${process.pid}.cfg`);
      const stateDir = join(dir, 'xl-never-made');
      writeFileSync(path, `${TYPICAL_HVM_CFG}xen_depriv_state_dir = "${stateDir}"\n`, {
        mode: 0o644,
      });
      try {
        const r = runCliAs(USER, ['launch', '--dry-run', path]);
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        expect(r.stdout).toContain('"-add-fd",');
        expect(r.stdout).toContain(
          'guest: disk hda: /srv/guest7/disk.img opened read-write by the launcher, fd 5',
        );
        expect(r.stdout).toContain(
          'guest: vif 0: tap vif7.0-emu on xenbr0 created by the launcher, fd 7',
        );
        expect(r.stdout).toContain(
          'guest: vnc: QEMU listens on 127.0.0.1:5907 in its own network namespace; the service listens on 127.0.0.1:5907',
        );
        expect(existsSync(stateDir)).toBe(false);
      } finally {
        rmSync(path, { force: true });
      }
    },
  );

  it.skipIf(!root)(
    'every command that needs root says so with the same exit code 3 and code "not-root"',
    () => {
      const path = join('/tmp', `xd-operator-nr-${process.pid}.json`);
      writeFileSync(path, JSON.stringify({ domid: 5 }), { mode: 0o644 });
      try {
        const runs = [
          ['launch', path],
          ['check', '5'],
          ['check', '--pid', '1'],
          ['destroy', '5'],
          ['recover'],
          ['storm', '--count', '1'],
        ].map((args) => {
          const r = runCliAs(USER, ['--json', ...args], { XEN_DEPRIVD_SOCKET: '/nonexistent' });
          return { args: args.join(' '), status: r.status, json: JSON.parse(r.stdout || '{}') };
        });
        for (const r of runs) {
          expect(r, r.args).toMatchObject({
            status: 3,
            json: { ok: false, code: 'not-root', exitCode: 3 },
          });
        }
      } finally {
        rmSync(path, { force: true });
      }
    },
  );

  it.skipIf(!root)('demo says what it cannot do and runs the rest', () => {
    const r = runCliAs(USER, ['demo'], { TMPDIR: '/tmp' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('not root: a confined launch changes uids, namespaces and mounts');
    expect(r.stdout).toMatch(/4\. confined QEMU {2}skipped {2}needs root/);
  });
});

describe('usage errors, --json and exit codes', () => {
  it("commander's own usage errors honour --json: one object, code usage, exit 2", () => {
    const r = runCli(['--json', 'launch']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      ok: false,
      error: "missing required argument 'config'",
      code: 'usage',
      exitCode: 2,
    });
    const u = runCli(['--json', 'lunch']);
    expect(u.status).toBe(2);
    expect(JSON.parse(u.stdout)).toMatchObject({ ok: false, code: 'usage', exitCode: 2 });
  });

  it('--help lists the exit codes every command uses', () => {
    const r = runCli(['--help']);
    expect(r.stdout).toContain(
      [
        'Exit codes (every command):',
        '  0  success',
        '  1  the operation failed: a launch, a destroy, a check that found a problem',
        '  2  bad usage or configuration, nothing was done (the error names the option or key)',
        '  3  this host or user cannot do it: not root, not a Xen dom0, no xen-deprivd running',
      ].join('\n'),
    );
  });

  it('--version is the package version', () => {
    expect(runCli(['--version']).stdout).toBe(`${pkg.version}\n`);
  });
});

describe('check says which it checks: a domain or a process', () => {
  it('refuses no target and two targets (usage, exit 2)', () => {
    for (const args of [
      ['check'],
      ['check', '7', '--pid', '1'],
      ['check', '--domid', '7', '--pid', '1'],
    ]) {
      const r = runCli(['--json', ...args]);
      expect(r.status, args.join(' ')).toBe(2);
      expect(JSON.parse(r.stdout)).toMatchObject({
        error: 'check: expected exactly one of DOMID, --domid N or --pid N',
        code: 'usage',
      });
    }
  });

  it.skipIf(!root)(
    'a domain without a device model is "not found", never a report on the pid of that number',
    () => {
      const stateDir = join(dir, 'empty-state');
      for (const args of [
        ['check', '1'],
        ['check', '--domid', '1'],
      ]) {
        const r = runCli(['--json', ...args, '--state-dir', stateDir], {
          XEN_DEPRIVD_SOCKET: '/nonexistent',
        });
        expect(r.status, args.join(' ')).toBe(1);
        expect(JSON.parse(r.stdout)).toMatchObject({
          ok: false,
          error: `domain 1 has no device model in ${stateDir}`,
          code: 'not-found',
        });
      }
    },
  );
});

describe('--log-json', () => {
  it("has one pid per line (the launcher's, pino's own); the DM's is dmPid", () => {
    const r = runCli(['--log-json', 'launch', '--dry-run', cfg('log.json', { domid: 4 })]);
    expect(r.status).toBe(0);
    for (const line of r.stderr.trimEnd().split('\n')) {
      expect(line.match(/"pid":/g)).toHaveLength(1);
    }
  });
});
