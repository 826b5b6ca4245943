import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LauncherError, QmpClient } from '../src/index.js';

const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}\r\n';

let dir: string;
let servers: Server[] = [];
let peers: Socket[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ql-qmp-'));
});
afterEach(() => {
  for (const p of peers) p.destroy();
  for (const s of servers) s.close();
  peers = [];
  servers = [];
  rmSync(dir, { recursive: true, force: true });
});

type Behaviour = (peer: Socket, command: { execute: string; id?: unknown }) => void;

/** A fake QMP peer: greets (unless told not to) and answers each command line with `behaviour`. */
async function fakePeer(behaviour: Behaviour, options: { greet?: boolean } = {}): Promise<string> {
  const path = join(dir, `peer-${servers.length}.sock`);
  const server = createServer((peer) => {
    peers.push(peer);
    peer.on('error', () => undefined);
    if (options.greet !== false) peer.write(GREETING);
    let buf = '';
    peer.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        behaviour(peer, JSON.parse(line) as { execute: string; id?: unknown });
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return path;
}

const answerCapabilities: Behaviour = (peer, c) => {
  if (c.execute === 'qmp_capabilities')
    peer.write(`{"return": {}, "id": ${JSON.stringify(c.id)}}\r\n`);
};

/** Writes `chunk` until the peer is gone: an endless line. */
function flood(peer: Socket, chunk: Buffer): void {
  const pump = () => {
    while (!peer.destroyed) {
      if (!peer.write(chunk)) {
        peer.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

async function failureOf(p: Promise<unknown>): Promise<LauncherError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(LauncherError);
  return e as LauncherError;
}

describe('QmpClient against fake QMP peers over unix sockets', () => {
  it('greets, negotiates capabilities, runs commands matched by id', async () => {
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'query-status') {
        peer.write(
          `{"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n`,
        );
        peer.write(
          `{"return": {"status": "running", "running": true}, "id": ${JSON.stringify(c.id)}}\r\n`,
        );
      } else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path);
    expect(qmp.greeting).toEqual({
      version: { major: 7, minor: 2, micro: 22 },
      package: 'fake',
      capabilities: ['oob'],
    });
    expect(await qmp.execute('query-status')).toEqual({ status: 'running', running: true });
    expect(qmp.takeEvents()).toEqual([
      { event: 'RESUME', data: {}, timestamp: { seconds: 1, microseconds: 2 } },
    ]);
    qmp.close();
    expect(qmp.failure).toBeNull();
  });

  it('an error reply rejects that command only (EQMP_ERROR)', async () => {
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'bogus') {
        peer.write(
          `{"error": {"class": "CommandNotFound", "desc": "nope"}, "id": ${JSON.stringify(c.id)}}\n`,
        );
      } else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path);
    const e = await failureOf(qmp.execute('bogus'));
    expect(e.code).toBe('EQMP_ERROR');
    expect(e.message).toBe('QMP bogus: CommandNotFound: nope');
    expect(qmp.failure).toBeNull();
    qmp.close();
  });

  it('an endless line ends the session at maxLineBytes (EQMP_OVERSIZE), memory bounded', async () => {
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'query-status') flood(peer, Buffer.alloc(65536, 0x61));
      else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path);
    const failures: LauncherError[] = [];
    qmp.onFailure((e) => failures.push(e));
    const e = await failureOf(qmp.execute('query-status'));
    expect(e.code).toBe('EQMP_OVERSIZE');
    expect(e.message).toContain(`at most ${10 << 20} bytes`);
    expect(failures).toEqual([e]);
    expect(qmp.stats.highWaterBytes).toBeLessThanOrEqual(10 << 20);
    expect(qmp.stats.highWaterBytes).toBeGreaterThan((10 << 20) - 65536);
    await expect(qmp.execute('query-status')).rejects.toBe(e);
  });

  it('a 20 MiB reply ends the session at the 10 MiB cap (EQMP_OVERSIZE)', async () => {
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'query-status') {
        const body = Buffer.alloc(20 << 20, 0x62);
        peer.write(
          Buffer.concat([
            Buffer.from(`{"id": ${JSON.stringify(c.id)}, "return": "`),
            body,
            Buffer.from('"}\r\n'),
          ]),
        );
      } else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path);
    const e = await failureOf(qmp.execute('query-status'));
    expect(e.code).toBe('EQMP_OVERSIZE');
    expect(qmp.stats.highWaterBytes).toBeLessThanOrEqual(10 << 20);
  });

  it('invalid JSON ends the session (EQMP_PROTOCOL)', async () => {
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'query-status') peer.write('{"return": {}, "id": \n');
      else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path);
    const e = await failureOf(qmp.execute('query-status'));
    expect(e.code).toBe('EQMP_PROTOCOL');
    expect(e.message).toContain('expected a JSON object per line');
  });

  it('a reply to no pending id ends the session (EQMP_PROTOCOL)', async () => {
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'query-status') peer.write('{"return": {}, "id": 999}\n');
      else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path);
    const e = await failureOf(qmp.execute('query-status'));
    expect(e.code).toBe('EQMP_PROTOCOL');
    expect(e.message).toContain('saw id 999');
  });

  it('a peer that sends nothing fails the greeting (EQMP_TIMEOUT)', async () => {
    const path = await fakePeer(() => undefined, { greet: false });
    const e = await failureOf(QmpClient.connect(path, { greetingTimeoutMs: 100 }));
    expect(e.code).toBe('EQMP_TIMEOUT');
    expect(e.step).toBe('qmp-greeting');
  });

  it('a peer that never answers a command fails it (EQMP_TIMEOUT) and ends the session', async () => {
    const path = await fakePeer(answerCapabilities);
    const qmp = await QmpClient.connect(path, { commandTimeoutMs: 100 });
    const e = await failureOf(qmp.execute('query-status'));
    expect(e.code).toBe('EQMP_TIMEOUT');
    expect(e.step).toBe('qmp:query-status');
    expect(qmp.failure).toBe(e);
  });

  it('a greeting that is not QMP is refused (EQMP_PROTOCOL)', async () => {
    const path = await fakePeer(() => undefined, { greet: false });
    servers[0]!.on('connection', (p: Socket) => p.write('{"hello": 1}\n'));
    const e = await failureOf(QmpClient.connect(path));
    expect(e.code).toBe('EQMP_PROTOCOL');
  });

  it('events before the greeting (QEMU start-up race) are queued, not mistaken for it', async () => {
    const path = await fakePeer(answerCapabilities, { greet: false });
    servers[0]!.on('connection', (peer: Socket) =>
      peer.write(
        `{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "RESUME"}\r\n${GREETING}`,
      ),
    );
    const qmp = await QmpClient.connect(path);
    expect(qmp.greeting.package).toBe('fake');
    expect(qmp.takeEvents().map((e) => e.event)).toEqual(['RESUME']);
    qmp.close();
  });

  it('an event flood keeps only maxEvents, counting the dropped ones', async () => {
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'query-status') {
        let s = '';
        for (let i = 0; i < 1000; i++) s += `{"event": "E${i}", "data": {}}\n`;
        peer.write(`${s}{"return": {}, "id": ${JSON.stringify(c.id)}}\n`);
      } else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path, { maxEvents: 16 });
    await qmp.execute('query-status');
    const events = qmp.takeEvents();
    expect(events.map((e) => e.event)).toEqual(Array.from({ length: 16 }, (_, i) => `E${984 + i}`));
    expect(qmp.stats.droppedEvents).toBe(984);
    qmp.close();
  });

  it('the peer closing fails pending commands (EQMP_CLOSED)', async () => {
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'query-status') peer.destroy();
      else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path);
    const e = await failureOf(qmp.execute('query-status'));
    expect(e.code).toBe('EQMP_CLOSED');
  });

  it('parses lines split at every byte offset', async () => {
    const reply = (id: unknown) =>
      `{"return": {"status": "paused"}, "id": ${JSON.stringify(id)}}\r\n`;
    const path = await fakePeer((peer, c) => {
      if (c.execute === 'query-status') {
        const bytes = Buffer.from(reply(c.id));
        let i = 0;
        const next = () => {
          if (i < bytes.length) {
            peer.write(bytes.subarray(i, i + 1));
            i++;
            setImmediate(next);
          }
        };
        next();
      } else answerCapabilities(peer, c);
    });
    const qmp = await QmpClient.connect(path);
    expect(await qmp.execute('query-status')).toEqual({ status: 'paused' });
    qmp.close();
  });
});

const X86 = '/usr/bin/qemu-system-x86_64';
describe.skipIf(!existsSync(X86))('QmpClient against the real QEMU (-M none, unconfined)', () => {
  it('reaches query-status and quits', async () => {
    const path = join(dir, 'qmp.sock');
    const child = spawn(
      X86,
      ['-M', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${path},server=on,wait=off`],
      { stdio: 'ignore' },
    );
    try {
      let qmp: QmpClient | undefined;
      for (let i = 0; i < 200 && !qmp; i++) {
        qmp = await QmpClient.connect(path).catch(async () => {
          await new Promise((r) => setTimeout(r, 25));
          return undefined;
        });
      }
      expect(qmp).toBeDefined();
      expect(qmp!.greeting.version).toEqual({ major: 7, minor: 2, micro: expect.any(Number) });
      expect(await qmp!.execute('query-status')).toMatchObject({ status: 'running' });
      const exited = new Promise((r) => child.once('exit', (code) => r(code)));
      await qmp!.execute('quit');
      expect(await exited).toBe(0);
      qmp!.close();
    } finally {
      child.kill('SIGKILL');
    }
  });
});
