import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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
