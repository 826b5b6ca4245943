// xen-deprivd on this host (embedded defaults: a real confined qemu-system-x86_64 -M none per
// DM, the embedded xenstored behind a restricting proxy each), as a subprocess of the test,
// driven over its socket: many DMs, duplicates, a SIGKILLed service, a SIGKILLed DM.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidsOfUid } from '@xen-depriv/qemu-launcher';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DeprivdClient, RpcError } from '../src/service/client.js';
import { runCli } from './helpers.js';

const QEMU = '/usr/bin/qemu-system-x86_64';
const root = process.geteuid?.() === 0;
const canRun = root && existsSync(QEMU);
const why = !root ? 'needs root' : `needs ${QEMU}`;
const deprivd = join(import.meta.dirname, '..', 'dist', 'deprivd.js');
// This file's private uid range: pool 3,600,000..3,600,063, reaper 3,600,064.
const POOL = 3_600_000;
const COUNT = 64;
const uids = Array.from({ length: COUNT + 1 }, (_, i) => POOL + i);
const T = 180_000;

interface DmInfo {
  domid: number;
  pid: number;
  uid: number;
  state: string;
  adopted: boolean;
}

const dir = mkdtempSync(join(tmpdir(), 'xen-deprivd-test-'));
const sock = join(dir, 'deprivd.sock');
const stateDir = join(dir, 'state');
let service: ChildProcess | null = null;
const clients: DeprivdClient[] = [];

async function start(): Promise<void> {
  const child = spawn(
    process.execPath,
    [
      deprivd,
      '--socket',
      sock,
      '--state-dir',
      stateDir,
      '--pool',
      `${POOL}:${COUNT}`,
      '--target',
      'embedded',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  service = child;
  let log = '';
  child.stderr?.on('data', (d: Buffer) => {
    log += d.toString();
  });
  // Ready once it logs `listening` (it has recovered by then).
  await new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (log.includes('"event":"listening"')) {
        child.stderr?.off('data', onData);
        resolve();
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`xen-deprivd exited ${code}: ${log}`)));
  });
}

async function connect(): Promise<DeprivdClient> {
  const c = await DeprivdClient.connect(sock);
  if (!c) throw new Error(`nothing listens at ${sock}`);
  clients.push(c);
  return c;
}

function killService(): void {
  if (service?.pid && service.exitCode === null) service.kill('SIGKILL');
}

const exited = (p: ChildProcess) =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => p.once('exit', () => r()));

/** Everything a DM leaves on the host, for the pool's uids and the state directory. */
function leftBehind(): string[] {
  const left: string[] = [];
  for (const uid of uids) if (pidsOfUid(uid).length) left.push(`processes of uid ${uid}`);
  const ls = (d: string) => (existsSync(d) ? readdirSync(d) : []);
  for (const n of ls(join(stateDir, 'leases')).filter((x) => !x.startsWith('.')))
    left.push(`lease ${n}`);
  for (const n of ls(stateDir).filter((x) => /^dm-\d+$/.test(x))) left.push(`jail ${n}`);
  for (const n of ls(join(stateDir, 'state'))) left.push(`record ${n}`);
  for (const n of ls(join(stateDir, 'service'))) left.push(`service record ${n}`);
  for (const n of ls(join(stateDir, 'xs-proxy')).filter((x) => x.endsWith('.sock')))
    left.push(`proxy socket ${n}`);
  return left;
}

function pss(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return Number(m?.[1]) * 1024;
}

async function launchAll(domids: number[], connections: DeprivdClient[]): Promise<void> {
  let next = 0;
  await Promise.all(
    connections.map(async (c) => {
      for (;;) {
        const domid = domids[next++];
        if (domid === undefined) return;
        const r = await c.call<{ domid: number; status: string }>('launch', { domid });
        expect(r).toMatchObject({ domid, status: 'running' });
      }
    }),
  );
}

beforeAll(async () => {
  if (canRun) await start();
}, T);

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

afterAll(async () => {
  killService();
  // Whatever a failed test left: by pid, only the pool's uids.
  for (const uid of uids) {
    for (const pid of pidsOfUid(uid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('xen-deprivd (subprocess, embedded defaults, real confined QEMU)', () => {
  it.skipIf(!canRun)(
    `32 DMs through the service: list shows 32, every check passes, destroy leaves nothing (${why})`,
    async () => {
      const c = await connect();
      const svc = service?.pid as number;
      const before = pss(svc);
      const domids = Array.from({ length: 32 }, (_, i) => i + 1);
      const four = [c, await connect(), await connect(), await connect()];
      await launchAll(domids, four);
      const after = pss(svc);
      const { dms } = await c.call<{ dms: DmInfo[] }>('list');
      expect(dms.map((d) => d.domid)).toEqual(domids);
      expect(dms.every((d) => d.state === 'running' && !d.adopted)).toBe(true);
      expect(new Set(dms.map((d) => d.uid)).size).toBe(32);
      for (const d of dms) expect(pidsOfUid(d.uid)).toEqual([d.pid]);
      for (const domid of domids) {
        const r = await c.call<{ ok: boolean; passed: number; checks: unknown[] }>('check', {
          domid,
        });
        expect(r.ok, `domain ${domid}`).toBe(true);
        expect(r.passed).toBe(r.checks.length);
      }
      console.log(
        `service PSS ${(before / 2 ** 20).toFixed(1)} MiB -> ${(after / 2 ** 20).toFixed(1)} MiB with 32 DMs: ${((after - before) / 32 / 1024).toFixed(0)} KiB per DM`,
      );
      // Four connections, one request in flight each (a connection may have 16 at most).
      await Promise.all(
        four.map(async (conn, i) => {
          for (const domid of domids.filter((_, j) => j % 4 === i)) {
            await conn.call('destroy', { domid });
          }
        }),
      );
      expect((await c.call<{ dms: DmInfo[] }>('list')).dms).toEqual([]);
      expect(leftBehind()).toEqual([]);
    },
    T,
  );

  it.skipIf(!canRun)(
    `a second launch of a live domid is refused, over RPC and from the CLI, with nothing started (${why})`,
    async () => {
      const c = await connect();
      const first = await c.call<{ pid: number; uid: number }>('launch', { domid: 40 });
      const dup = await c.call('launch', { domid: 40 }).catch((e: unknown) => e);
      expect(dup).toBeInstanceOf(RpcError);
      expect((dup as RpcError).code).toBe(-32001);
      expect((dup as RpcError).message).toBe(
        'domain 40 has a device model already (running); destroy it first',
      );
      const cfg = join(dir, 'dm40.json');
      writeFileSync(cfg, JSON.stringify({ domid: 40 }));
      const cli = runCli(['--json', 'launch', cfg], { XEN_DEPRIVD_SOCKET: sock });
      expect(cli.status).toBe(1);
      expect(JSON.parse(cli.stdout)).toMatchObject({
        ok: false,
        error:
          'launch of domain 40: domain 40 has a device model already (running); destroy it first',
      });
      // Nothing started: one QEMU, the first, under the pool's uids.
      expect(uids.flatMap((u) => pidsOfUid(u))).toEqual([first.pid]);
      const listed = runCli(['--json', 'list'], { XEN_DEPRIVD_SOCKET: sock });
      expect(JSON.parse(listed.stdout)).toMatchObject({
        ok: true,
        via: 'service',
        dms: [{ domid: 40, pid: first.pid }],
      });
      const destroyed = runCli(['destroy', '40'], { XEN_DEPRIVD_SOCKET: sock });
      expect(destroyed.stdout).toBe(
        `destroyed domain 40: pid ${first.pid} gone, uid ${first.uid} empty and released, jail removed (service)\n`,
      );
      expect(leftBehind()).toEqual([]);
    },
    T,
  );

  it.skipIf(!canRun)(
    `a SIGKILLed DM is noticed: watchers hear "exited", its lease is released, nothing is left (${why})`,
    async () => {
      const c = await connect();
      const launched = await c.call<{ pid: number }>('launch', { domid: 41 });
      const w = await connect();
      const heard = new Promise<unknown>((r) => w.onNotification((m, p) => m === 'exited' && r(p)));
      expect(await w.call('watch', { domid: 41 })).toMatchObject({ domid: 41, state: 'running' });
      process.kill(launched.pid, 'SIGKILL');
      expect(await heard).toMatchObject({
        domid: 41,
        pid: launched.pid,
        reason: 'qemu exited',
        errors: [],
      });
      expect((await c.call<{ dms: DmInfo[] }>('list')).dms).toEqual([]);
      expect(leftBehind()).toEqual([]);
      const gone = await c.call('watch', { domid: 41 }).catch((e: unknown) => e);
      expect((gone as RpcError).code).toBe(-32002);
    },
    T,
  );

  it.skipIf(!canRun)(
    `SIGKILL the service with 8 DMs: the restarted service adopts all 8, destroys each, nothing leaks (${why})`,
    async () => {
      const c = await connect();
      const domids = [51, 52, 53, 54, 55, 56, 57, 58];
      await launchAll(domids, [c, await connect()]);
      const before = (await c.call<{ dms: DmInfo[] }>('list')).dms;
      const old = service as ChildProcess;
      killService();
      await exited(old);
      // The DMs outlive their service.
      for (const d of before) expect(pidsOfUid(d.uid)).toEqual([d.pid]);
      await start();
      const c2 = await connect();
      const after = (await c2.call<{ dms: DmInfo[] }>('list')).dms;
      expect(after.map((d) => [d.domid, d.pid, d.uid, d.state, d.adopted])).toEqual(
        before.map((d) => [d.domid, d.pid, d.uid, 'running', true]),
      );
      for (const domid of domids) {
        expect((await c2.call<{ ok: boolean }>('check', { domid })).ok).toBe(true);
      }
      for (const domid of domids) {
        expect(await c2.call('destroy', { domid })).toMatchObject({
          domid,
          reason: 'destroyed',
          errors: [],
        });
      }
      expect(leftBehind()).toEqual([]);
    },
    T,
  );
});
