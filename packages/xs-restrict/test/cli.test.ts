// The xs-restrict bin as a subprocess: --help, usage errors, and `serve` + `proxy` together.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { XenstoreClient, XenstoreError } from '../src/index.js';

const CLI = path.join(import.meta.dirname, '..', 'dist', 'cli.js');
const run = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
const dir = mkdtempSync(path.join(tmpdir(), 'xs-cli-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function start(...args: string[]): Promise<ChildProcess> {
  const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(c);
  return new Promise((resolve, reject) => {
    c.stdout?.once('data', () => resolve(c));
    c.once('exit', (code) => reject(new Error(`xs-restrict ${args[0]} exited ${code}`)));
  });
}

describe('xs-restrict bin', () => {
  it('--help names both commands and exits 0; -v prints the version', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: xs-restrict <command> \[options\]/);
    expect(r.stdout).toContain('\n  serve ');
    expect(r.stdout).toContain('\n  proxy ');
    expect(run('proxy', '--help').status).toBe(0);
    const pkg = JSON.parse(
      readFileSync(path.join(import.meta.dirname, '..', 'package.json'), 'utf8'),
    );
    expect(run('-v').stdout).toBe(`${pkg.version}\n`);
  });

  it.each([
    [['proxy'], 'proxy: --domid N is required'],
    [['proxy', '--domid', '0', '--listen', '/x'], '--domid: expected a domid 1..32751, got "0"'],
    [['serve'], 'serve: --socket PATH is required'],
    [['serve', '--sockt', '/x'], "Unknown option '--sockt'"],
    [['bogus'], 'unknown command "bogus" (serve or proxy)'],
    [
      ['serve', '--socket', '/x', '--poll-us', '1e3'],
      '--poll-us: expected microseconds 0..1000000, got "1e3"',
    ],
    [
      ['proxy', '--domid', '5', '--listen', '/x', '--poll-us', 'x'],
      '--poll-us: expected microseconds 0..1000000, got "x"',
    ],
  ])('%j is a usage error naming the problem (exit 2)', (args, message) => {
    const r = run(...args);
    expect(r.status).toBe(2);
    expect(r.stderr.split('\n')[0]).toContain(message);
  });

  it('serve --poll-us 200 answers pipelined requests in order, each its own', async () => {
    const dom0 = path.join(dir, 'xs-poll.sock');
    await start('serve', '--socket', dom0, '--poll-us', '200');
    const c = await XenstoreClient.connect({ path: dom0 });
    const keys = Array.from({ length: 32 }, (_, i) => `/poll/k${i}`);
    await Promise.all(keys.map((k, i) => c.write(k, `v${i}`)));
    expect(await Promise.all(keys.map((k) => c.readString(k)))).toEqual(
      keys.map((_, i) => `v${i}`),
    );
    c.close();
  });

  it('proxy in front of serve: domain 5 reads and writes its keys; others are refused (EACCES)', async () => {
    const dom0 = path.join(dir, 'xs.sock');
    const dom5 = path.join(dir, 'dom5.sock');
    const proxySock = path.join(dir, 'proxy.sock');
    await start('serve', '--socket', dom0, '--domain', `5=${dom5}`);
    const proxy = await start('proxy', '--domid', '5', '--listen', proxySock, '--upstream', dom5);
    let refusals = '';
    proxy.stderr?.on('data', (d: Buffer) => {
      refusals += d.toString();
    });
    const admin = await XenstoreClient.connect({ path: dom0 });
    await admin.mkdir('/local/domain/0/device-model/5');
    await admin.setPerms('/local/domain/0/device-model/5', [
      { domid: 0, perm: 'n' },
      { domid: 5, perm: 'b' },
    ]);
    await admin.write('/local/domain/0/name', 'Domain-0');
    const dm = await XenstoreClient.connect({ path: proxySock });
    await dm.write('/local/domain/0/device-model/5/state', 'running');
    expect(await admin.readString('/local/domain/0/device-model/5/state')).toBe('running');
    const refused = await dm.read('/local/domain/0/name').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(XenstoreError);
    expect((refused as XenstoreError).code).toBe('EACCES');
    await new Promise((r) => setTimeout(r, 50));
    expect(JSON.parse(refusals.trim().split('\n')[0] as string)).toMatchObject({
      event: 'refused',
      domid: 5,
      request: { type: 'READ', path: '/local/domain/0/name' },
    });
    // One "time" key, the record's ISO 8601 time (pino's own would make it two).
    const line = refusals.trim().split('\n')[0] as string;
    expect(line.match(/"time":/g)).toHaveLength(1);
    expect(JSON.parse(line)).toMatchObject({
      level: 40,
      name: 'xs-restrict-proxy',
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      msg: 'proxy',
    });
    dm.close();
    admin.close();
  });
});
