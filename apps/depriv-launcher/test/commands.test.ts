import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { XenstoreClient } from '@xen-depriv/xs-restrict';
import { afterAll, describe, expect, it } from 'vitest';
import { cliPath, runCli } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'xd-cmd-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('xen-depriv audit seccomp (built CLI, subprocess)', () => {
  it('prints the disassembly, and the program as JSON with --json', () => {
    const text = runCli(['audit', 'seccomp']);
    expect(text.status).toBe(0);
    expect(text.stdout.split('\n')[1]).toBe(
      '0000: ld   [4]                                 ; arch',
    );
    const json = runCli(['--json', 'audit', 'seccomp']);
    expect(json.status).toBe(0);
    const parsed = JSON.parse(json.stdout) as {
      ok: boolean;
      instructions: number;
      programHex: string;
    };
    expect(parsed.ok).toBe(true);
    expect(parsed.programHex.length).toBe(parsed.instructions * 16);
    // the first instruction loads seccomp_data.arch: BPF_LD|BPF_W|BPF_ABS (0x20), k = 4
    expect(parsed.programHex.slice(0, 16)).toBe('2000000004000000');
  });
});

describe('xen-depriv xenstored (built CLI, subprocess)', () => {
  it('serves dom0 and a domain socket, then exits 0 on SIGTERM', async () => {
    const dom0 = join(dir, 'xs');
    const dom3 = join(dir, 'd3');
    const child = spawn(
      process.execPath,
      [cliPath, 'xenstored', '--socket', dom0, '--domain', `3=${dom3}`],
      {
        env: { ...process.env, NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    try {
      const first = await new Promise<string>((resolve) => {
        createInterface({ input: child.stdout }).once('line', resolve);
      });
      expect(first).toBe(`xenstored: serving ${dom0}, dom3 on ${dom3}`);
      const c0 = await XenstoreClient.connect({ path: dom0 });
      await c0.mkdir('/local/domain/3');
      await c0.setPerms('/local/domain/3', [{ domid: 3, perm: 'n' }]);
      const c3 = await XenstoreClient.connect({ path: dom3 });
      await c3.write('/local/domain/3/data/x', 'hello');
      expect(await c0.readString('/local/domain/3/data/x')).toBe('hello');
      await expect(c3.write('/local/domain/0/evil', 'x')).rejects.toMatchObject({ code: 'EACCES' });
      await c3.close();
      await c0.close();
    } finally {
      child.kill('SIGTERM');
    }
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
  });

  it('rejects a bad --domain with exit 2', () => {
    const r = runCli(['xenstored', '--socket', join(dir, 'x2'), '--domain', '0=/tmp/x']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^error: --domain 0=\/tmp\/x: expected N=PATH/);
  });
});

describe('xen-depriv audit privcmd and xenstore (built CLI, subprocess)', () => {
  it('privcmd: the qemu-xen-hvm profile, then the audit table, in 80 columns', () => {
    const r = runCli(['audit', 'privcmd']);
    expect(r.status).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe(
      '# DM_OP profile qemu-xen-hvm: 16 ops allowed, at most 2 buffers of 4096 bytes',
    );
    expect(r.stdout).toMatch(/\ninject_msi +msiAddress 0xfee00000\.\.0xfeefffff\n/);
    expect(r.stdout).toMatch(/\nset_mem_type +memTypes 0,1, maxPages 32768/);
    expect(r.stdout).toMatch(/\nIOCTL_PRIVCMD_DM_OP +dm_op +\d+\n/);
    expect(lines.filter((l) => [...l].length > 80)).toEqual([]);
    const json = JSON.parse(runCli(['--json', 'audit', 'privcmd']).stdout) as {
      profile: { ops: Record<string, { msiAddress?: string[] }> };
      audit: { entries: { name: string; class: string }[] } | null;
    };
    expect(json.profile.ops.inject_msi?.msiAddress).toEqual(['0xfee00000', '0xfeefffff']);
    expect(json.audit?.entries.find((e) => e.name === 'IOCTL_PRIVCMD_HYPERCALL')?.class).toBe(
      'unreachable',
    );
  });

  it('xenstore: the key catalogue with what the proxy allows, in 80 columns', () => {
    const r = runCli(['audit', 'xenstore']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/\n\/l\/d\/0\/device-model\/\{domid\}\/state +write +allowed\n/);
    expect(r.stdout).toMatch(/\n\/l\/d\/0\/device-model\/\{domid\} +- +refused\n/);
    expect(r.stdout.split('\n').filter((l) => [...l].length > 80)).toEqual([]);
    const json = JSON.parse(runCli(['--json', 'audit', 'xenstore']).stdout) as {
      catalogue: { id: string; deprivNeeds: boolean }[];
      allowlist: number;
    };
    expect(json.allowlist).toBe(json.catalogue.filter((e) => e.deprivNeeds).length);
  });
});

describe('colours', () => {
  it('are on with FORCE_COLOR, off with NO_COLOR or --no-color', () => {
    const run = (env: Record<string, string>, args: string[] = []) =>
      spawnSync(process.execPath, [cliPath, ...args, 'audit', 'xenstore'], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH ?? '', ...env },
      }).stdout;
    const esc = '\u001b[';
    expect(run({ FORCE_COLOR: '1' })).toContain(esc);
    expect(run({ FORCE_COLOR: '1', NO_COLOR: '1' })).not.toContain(esc);
    expect(run({ FORCE_COLOR: '1' }, ['--no-color'])).not.toContain(esc);
  });
});

describe('xen-depriv launch --dry-run (built CLI): the dom0 switch and structured logs', () => {
  const cfg = (name: string, body: object) => {
    const p = join(dir, name);
    writeFileSync(p, JSON.stringify({ stateDir: join(dir, 'st'), ...body }));
    return p;
  };

  it.skipIf(existsSync('/dev/xen/privcmd') || !existsSync('/usr/libexec/xen-qemu-system-i386'))(
    'target dom0 on a host that is not a dom0 is exit 3 naming what is missing (needs a host without Xen, with qemu-system-xen)',
    () => {
      const r = runCli(['launch', '--dry-run', cfg('dom0.json', { domid: 3, target: 'dom0' })]);
      expect(r.status).toBe(3);
      expect(r.stderr.split('\n')[0]).toBe(
        'error: target dom0: this host is not a Xen dom0 (no /dev/xen/privcmd, /dev/xen/xenbus)',
      );
    },
  );

  it('--log-json writes pino JSON lines on stderr, and nothing without it', () => {
    const path = cfg('log.json', { domid: 4 });
    const r = runCli(['--log-json', 'launch', '--dry-run', path]);
    expect(r.status).toBe(0);
    const lines = r.stderr
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      name: 'xen-depriv',
      msg: 'launch plan',
      domid: 4,
      uid: 3_000_004,
      dryRun: true,
    });
    expect(runCli(['launch', '--dry-run', path]).stderr).toBe('');
  });
});

describe('xen-depriv launch --dry-run of an xl.cfg domain config (built CLI)', () => {
  const xl = (user: string) => {
    const p = join(dir, `${user}.cfg`);
    writeFileSync(
      p,
      `name = "guest7"\ndomid = 7\ntype = "hvm"\nmemory = 1024\ndm_restrict = 1\ndevice_model_user = "${user}"\nxen_depriv_state_dir = "${join(dir, 'xl')}"\n`,
    );
    return p;
  };

  it("plans with the uid of device_model_user's passwd entry", () => {
    const r = runCli(['--json', 'launch', '--dry-run', xl('nobody')]);
    expect(r.status).toBe(0);
    const { plan } = JSON.parse(r.stdout) as { plan: { uid: number; argv: string[] } };
    expect(plan.uid).toBe(65534);
    expect(plan.argv.slice(plan.argv.indexOf('-name'), plan.argv.indexOf('-name') + 2)).toEqual([
      '-name',
      'guest7',
    ]);
  });

  it('a device_model_user with no passwd entry is exit 2 naming the key; --debug adds the stack', () => {
    const r = runCli(['launch', '--dry-run', xl('xen-qemu-nosuch')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      "error: config: user: per-vm user: expected a passwd entry for 'xen-qemu-nosuch', none\n",
    );
    const d = runCli(['--debug', 'launch', '--dry-run', xl('xen-qemu-nosuch')]);
    expect(d.status).toBe(2);
    expect(d.stderr).toMatch(/^ConfigError: config: user: .*\n {4}at /m);
  });
});

describe('--help', () => {
  it.each([
    ['demo'],
    ['launch'],
    ['check'],
    ['destroy'],
    ['recover'],
    ['storm'],
    ['audit', 'privcmd'],
    ['audit', 'xenstore'],
    ['audit', 'seccomp'],
    ['xenstored'],
  ])('%s has usage and exits 0', (...cmd) => {
    const r = runCli([...cmd, '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: xen-depriv ${cmd.join(' ')} `));
    expect(r.stdout.split('\n').filter((l) => [...l].length > 80)).toEqual([]);
  });
});
