import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  fstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
} from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

// The libxl shim (shim/xen-depriv-dm.c) against a fake xen-deprivd: a unix-socket server in a
// temp dir that records every line the shim sends and answers as each test scripts. Nothing
// here measures time: waits only stop a hung run.
const pkg = join(import.meta.dirname, '..');
const shimPath = join(pkg, 'dist', 'xen-depriv-dm');
const T = 30_000;
const WAIT = 15_000;

/** What libxl passes (the parts that matter), plus an argument JSON must escape. */
const TRICKY = 'say "hi" C:\\dir\ttab \x01\x1f\x7f ünï ✓ 🐧';
const ARGV = [
  '-xen-domid',
  '7',
  '-no-shutdown',
  '-chardev',
  'socket,id=libxl-cmd,fd=3,server=on,wait=off',
  '-S',
  '-mon',
  'chardev=libxl-cmd,mode=control',
  '-name',
  TRICKY,
  '-append',
  '',
  '-machine',
  'xenfv,suppress-vmdesc=on',
  '-m',
  '120',
];

interface Rpc {
  jsonrpc?: string;
  id?: number | null;
  method?: string;
  params?: Record<string, unknown>;
}

interface Received {
  conn: Socket;
  raw: string;
  msg: Rpc;
}

async function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting for ${what}`)), WAIT);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  await within(
    (async () => {
      while (!cond()) await new Promise((r) => setTimeout(r, 10));
    })(),
    what,
  );
}

/** A scripted xen-deprivd: every line received, in order, across connections. */
class FakeService {
  server: Server | undefined;
  readonly conns: Socket[] = [];
  private readonly queue: Received[] = [];
  private wake: (() => void) | undefined;

  constructor(readonly path: string) {}

  async listen(): Promise<void> {
    const server = createServer((conn) => {
      this.conns.push(conn);
      let buf = '';
      conn.setEncoding('utf8');
      conn.on('error', () => {});
      conn.on('data', (d: string) => {
        buf += d;
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const raw = buf.slice(0, nl + 1);
          buf = buf.slice(nl + 1);
          this.queue.push({ conn, raw, msg: JSON.parse(raw) as Rpc });
          this.wake?.();
        }
      });
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, resolve);
    });
  }

  /** The next line any connection sent. */
  async next(what: string): Promise<Received> {
    return within(
      (async () => {
        while (this.queue.length === 0) await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
        return this.queue.shift()!;
      })(),
      what,
    );
  }

  send(conn: Socket, msg: object): void {
    conn.write(`${JSON.stringify(msg)}\n`);
  }

  /** Stops listening and drops every connection (a service restart). */
  async stop(): Promise<void> {
    for (const c of this.conns.splice(0)) c.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    rmSync(this.path, { force: true });
  }
}

interface Shim {
  child: ChildProcess;
  pid: number;
  stdout: string;
  stderr: string;
  /** Resolves when the shim has exited and its output is closed. */
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

let dir: string;
let fake: FakeService;
let qmpFd: number;
let children: ChildProcess[];

function startShim(args: readonly string[] = ARGV, socket = fake.path): Shim {
  const child = spawn(shimPath, args, {
    stdio: ['ignore', 'pipe', 'pipe', qmpFd],
    env: { ...process.env, XEN_DEPRIVD_SOCKET: socket },
  });
  children.push(child);
  if (child.pid === undefined) throw new Error('spawn failed');
  const shim: Shim = {
    child,
    pid: child.pid,
    stdout: '',
    stderr: '',
    done: new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (shim.stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (shim.stderr += d));
  return shim;
}

/** Descriptors >= 3 of pid that are sockets (the shim's connection to the service). */
function socketFds(pid: number): number[] {
  return readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .filter((fd) => {
      try {
        return fd >= 3 && readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
      } catch {
        return false;
      }
    });
}

function hasFd3(pid: number): boolean {
  try {
    statSync(`/proc/${pid}/fd/3`);
    return true;
  } catch {
    return false;
  }
}

/** Starts the shim, checks its launch line and answers it with a result; returns both. */
async function launched(): Promise<{ shim: Shim; conn: Socket }> {
  const shim = startShim();
  const { conn, msg } = await fake.next('launch');
  expect(msg.method).toBe('launch');
  fake.send(conn, { jsonrpc: '2.0', id: 1, result: { domid: 7, pid: 4242, uid: 131077 } });
  // The result makes the shim close libxl's descriptors: the sign it has read it.
  await waitFor(() => !hasFd3(shim.pid), 'the shim to close fd 3 after the launch result');
  return { shim, conn };
}

beforeAll(() => {
  const r = spawnSync(process.execPath, [join(pkg, 'shim', 'build.mjs')], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
});

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xd-shim-'));
  children = [];
  qmpFd = openSync(join(dir, 'qmp-listener'), 'w');
  fake = new FakeService(join(dir, 'xen-deprivd.sock'));
  await fake.listen();
});

afterEach(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
  }
  await fake.stop();
  closeSync(qmpFd);
  rmSync(dir, { recursive: true, force: true });
});

describe('xen-depriv-dm (the libxl shim)', () => {
  it('compiles warning-free with -std=gnu11 -Wall -Wextra -O2', () => {
    const r = spawnSync(
      'cc',
      [
        '-std=gnu11',
        '-Wall',
        '-Wextra',
        '-O2',
        '-Werror',
        '-o',
        join(dir, 'shim'),
        join(pkg, 'shim', 'xen-depriv-dm.c'),
      ],
      { encoding: 'utf8' },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it(
    'sends one launch line with libxl argv and its pid, keeps fd 3 open until the reply, then waits silently in < 2 MiB; SIGHUP → destroy → exited → 0',
    async () => {
      const shim = startShim();
      const { conn, raw, msg } = await fake.next('launch');
      expect(raw.endsWith('\n')).toBe(true);
      expect(raw.slice(0, -1)).not.toContain('\n');
      expect(msg).toEqual({
        jsonrpc: '2.0',
        id: 1,
        method: 'launch',
        params: { libxlArgv: ARGV, shimPid: shim.pid },
      });
      // Where the service's pidfd_getfd(shimPid, 3) would find libxl's QMP listener.
      expect(statSync(`/proc/${shim.pid}/fd/3`).ino).toBe(fstatSync(qmpFd).ino);

      fake.send(conn, { jsonrpc: '2.0', id: 1, result: { domid: 7, pid: 4242 } });
      await waitFor(() => !hasFd3(shim.pid), 'the shim to close fd 3 after the launch result');
      expect(shim.child.exitCode).toBeNull();
      const rss = Number(
        /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${shim.pid}/status`, 'utf8'))?.[1],
      );
      expect(rss).toBeGreaterThan(0);
      expect(rss).toBeLessThan(2048);

      process.kill(shim.pid, 'SIGHUP');
      const destroy = await fake.next('destroy');
      expect(destroy.conn).toBe(conn);
      expect(destroy.msg).toEqual({
        jsonrpc: '2.0',
        id: 2,
        method: 'destroy',
        params: { domid: 7 },
      });
      fake.send(conn, {
        jsonrpc: '2.0',
        method: 'exited',
        params: { domid: 7, reason: 'destroyed' },
      });
      expect(await shim.done).toEqual({ code: 0, signal: null });
      expect(shim.stdout).toBe('');
      expect(shim.stderr).toBe('');
    },
    T,
  );

  it(
    'the domid of the launch result is the one destroy names; the id-2 reply alone ends it (SIGTERM)',
    async () => {
      const shim = startShim();
      const { conn } = await fake.next('launch');
      fake.send(conn, { jsonrpc: '2.0', id: 1, result: { domid: 12, pid: 4242 } });
      await waitFor(() => !hasFd3(shim.pid), 'the launch result');
      process.kill(shim.pid, 'SIGTERM');
      expect((await fake.next('destroy')).msg.params).toEqual({ domid: 12 });
      fake.send(conn, { jsonrpc: '2.0', id: 2, result: {} });
      expect(await shim.done).toEqual({ code: 0, signal: null });
      expect(shim.stderr).toBe('');
    },
    T,
  );

  it(
    'a signal before the launch reply sends destroy with the -xen-domid of argv; a not-found reply ends it with 0',
    async () => {
      const shim = startShim();
      const { conn } = await fake.next('launch');
      process.kill(shim.pid, 'SIGINT');
      expect((await fake.next('destroy')).msg).toEqual({
        jsonrpc: '2.0',
        id: 2,
        method: 'destroy',
        params: { domid: 7 },
      });
      fake.send(conn, { jsonrpc: '2.0', id: 1, error: { code: -32000, message: 'destroyed' } });
      fake.send(conn, { jsonrpc: '2.0', id: 2, error: { code: -32002, message: 'not found' } });
      expect(await shim.done).toEqual({ code: 0, signal: null });
      expect(shim.stdout + shim.stderr).toBe('');
    },
    T,
  );

  it.each([
    ['no uid left in the pool', 'no uid left in the pool'],
    ['two\nlines\tand "quotes"', 'two lines and "quotes"'],
    ['✓'.repeat(200), '✓'.repeat(166)],
  ])(
    'an error reply to launch → exit 1 and one stderr line with the message (%#)',
    async (message, shown) => {
      const shim = startShim();
      const { conn } = await fake.next('launch');
      fake.send(conn, { jsonrpc: '2.0', id: 1, error: { code: -32000, message } });
      expect(await shim.done).toEqual({ code: 1, signal: null });
      expect(shim.stdout).toBe('');
      expect(shim.stderr).toBe(`xen-depriv-dm: ${shown}\n`);
    },
    T,
  );

  it(
    'no service → exit 1 with the "cannot reach" line',
    async () => {
      const path = join(dir, 'absent.sock');
      const shim = startShim(ARGV, path);
      expect(await shim.done).toEqual({ code: 1, signal: null });
      expect(shim.stdout).toBe('');
      expect(shim.stderr).toBe(
        `xen-depriv-dm: cannot reach xen-deprivd at ${path}: No such file or directory\n`,
      );
    },
    T,
  );

  it(
    'no -xen-domid → exit 1 before connecting',
    async () => {
      const shim = startShim(['-machine', 'xenfv']);
      expect(await shim.done).toEqual({ code: 1, signal: null });
      expect(shim.stderr).toBe('xen-depriv-dm: no -xen-domid in the arguments\n');
      expect(fake.conns).toHaveLength(0);
    },
    T,
  );

  it.each([
    ['a line over 1 MiB', `${'x'.repeat(1536 * 1024)}\n`, 'a reply line is over 1 MiB'],
    ['over 1 MiB without a newline', 'y'.repeat(1100 * 1024), 'a reply line is over 1 MiB'],
    ['a line that is not JSON', '{"jsonrpc":"2.0","id":1,"result":\n', 'a reply is not JSON'],
    ['a closed connection', '', 'connection closed'],
  ])(
    'before the launch reply, %s → exit 1 and one stderr line',
    async (_what, data, why) => {
      const shim = startShim();
      const { conn } = await fake.next('launch');
      if (data) conn.write(data);
      else conn.end();
      expect(await shim.done).toEqual({ code: 1, signal: null });
      expect(shim.stdout).toBe('');
      expect(shim.stderr).toBe(
        `xen-depriv-dm: lost xen-deprivd before it answered launch: ${why}\n`,
      );
    },
    T,
  );

  it(
    'service restart after the launch: reconnects and sends watch; a result keeps it (it watches again after the next restart); exited → 0',
    async () => {
      const { shim, conn } = await launched();
      conn.destroy();
      const watch = await fake.next('watch after the connection dropped');
      expect(watch.conn).not.toBe(conn);
      expect(watch.msg).toEqual({ jsonrpc: '2.0', id: 3, method: 'watch', params: { domid: 7 } });
      fake.send(watch.conn, { jsonrpc: '2.0', id: 3, result: { domid: 7, pid: 4242 } });

      // Still there: a second drop (here a reply line over the cap) brings a second watch.
      watch.conn.write(`${'z'.repeat(1100 * 1024)}\n`);
      const again = await fake.next('the second watch');
      expect(again.msg).toEqual({ jsonrpc: '2.0', id: 3, method: 'watch', params: { domid: 7 } });
      fake.send(again.conn, { jsonrpc: '2.0', id: 3, result: { domid: 7, pid: 4242 } });
      fake.send(again.conn, {
        jsonrpc: '2.0',
        method: 'exited',
        params: { domid: 7, reason: 'exit 0' },
      });
      expect(await shim.done).toEqual({ code: 0, signal: null });
      expect(shim.stdout + shim.stderr).toBe('');
    },
    T,
  );

  it(
    'service restart after the launch: a watch error (not found) → exit 0',
    async () => {
      const { shim, conn } = await launched();
      conn.destroy();
      const watch = await fake.next('watch');
      expect(watch.msg.method).toBe('watch');
      fake.send(watch.conn, {
        jsonrpc: '2.0',
        id: 3,
        error: { code: -32002, message: 'not found' },
      });
      expect(await shim.done).toEqual({ code: 0, signal: null });
      expect(shim.stdout + shim.stderr).toBe('');
    },
    T,
  );

  it(
    'a signal while the service is down is sent as destroy once it is back',
    async () => {
      const { shim } = await launched();
      await fake.stop();
      await waitFor(() => socketFds(shim.pid).length === 0, 'the shim to notice the drop');
      process.kill(shim.pid, 'SIGHUP');
      await fake.listen();
      const destroy = await fake.next('destroy after reconnecting');
      expect(destroy.msg).toEqual({
        jsonrpc: '2.0',
        id: 2,
        method: 'destroy',
        params: { domid: 7 },
      });
      fake.send(destroy.conn, {
        jsonrpc: '2.0',
        id: 2,
        error: { code: -32002, message: 'not found' },
      });
      expect(await shim.done).toEqual({ code: 0, signal: null });
      expect(shim.stdout + shim.stderr).toBe('');
    },
    T,
  );
});

describe('xen-depriv-dm --help and --version (only as the sole argument)', () => {
  const version = (
    JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as { version: string }
  ).version;

  it(
    '--help alone prints the usage on stdout and exits 0 without connecting to the service',
    async () => {
      const shim = startShim(['--help']);
      expect(await shim.done).toEqual({ code: 0, signal: null });
      expect(shim.stderr).toBe('');
      expect(shim.stdout).toMatch(/^Usage: xen-depriv-dm QEMU-ARGUMENT\.\.\.\n/);
      expect(shim.stdout).toContain('XEN_DEPRIVD_SOCKET');
      expect(shim.stdout).toContain('/run/xen-depriv/xen-deprivd.sock');
      expect(shim.stdout).toMatch(/^Exit status:$/m);
      expect(fake.conns).toEqual([]);
    },
    T,
  );

  it(
    "--version alone prints the package's version",
    async () => {
      const shim = startShim(['--version']);
      expect(await shim.done).toEqual({ code: 0, signal: null });
      expect(shim.stdout).toBe(`xen-depriv-dm ${version}\n`);
      expect(shim.stderr).toBe('');
      expect(fake.conns).toEqual([]);
    },
    T,
  );

  it(
    "--help or --version among other arguments is QEMU's command line, sent to the service as is",
    async () => {
      for (const flag of ['--help', '--version']) {
        const args = [...ARGV, flag];
        const shim = startShim(args);
        const { conn, msg } = await fake.next(`launch with ${flag}`);
        expect(msg.params).toEqual({ libxlArgv: args, shimPid: shim.pid });
        fake.send(conn, { jsonrpc: '2.0', id: 1, error: { code: -32000, message: 'refused' } });
        expect(await shim.done).toEqual({ code: 1, signal: null });
        expect(shim.stdout).toBe('');
        expect(shim.stderr).toBe('xen-depriv-dm: refused\n');
      }
    },
    T,
  );

  it(
    'no service: exit 1 and one line naming the socket',
    async () => {
      const missing = join(dir, 'no-such.sock');
      const shim = startShim(['-xen-domid', '3'], missing);
      expect(await shim.done).toEqual({ code: 1, signal: null });
      expect(shim.stdout).toBe('');
      expect(shim.stderr).toBe(
        `xen-depriv-dm: cannot reach xen-deprivd at ${missing}: No such file or directory\n`,
      );
    },
    T,
  );
});
