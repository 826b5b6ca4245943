// QEMU 7.2 sometimes mishandles a client that connected while it was starting (a second
// greeting, a session that never answers). launch() opens fresh QMP sessions, 3 in all. A fake DM
// (a node process accepting on the QMP listener the plan passes as fd 3) misbehaves on demand.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LauncherError, launch, plan, type Spawner, type UidOps } from '../src/index.js';
import { X86_CAPS } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'ql-qmp-retry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GREETING = JSON.stringify({
  QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'fake' }, capabilities: [] },
});

/**
 * A DM whose first `bad` QMP sessions greet twice (or, `silent`, never answer
 * qmp_capabilities); later sessions behave. Each session appends a line to `log`.
 */
const FAKE_DM = `
const net = require('node:net');
const fs = require('node:fs');
let n = 0;
const bad = Number(process.argv[1]);
const silent = process.argv[2] === 'silent';
const log = process.argv[3];
net.createServer((s) => {
  const mine = n++ < bad;
  fs.appendFileSync(log, 'session\\n');
  // The launcher drops a session it gave up on: an EPIPE here must not end the fake DM.
  s.on('error', () => {});
  s.write('${GREETING}\\r\\n');
  let buf = '';
  s.on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\\n')) >= 0; ) {
      const m = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      if (m.execute === 'qmp_capabilities') {
        if (mine && silent) continue;
        s.write(JSON.stringify({ return: {}, id: m.id }) + '\\r\\n');
        if (mine) s.write('${GREETING}\\r\\n');
      } else if (m.execute === 'query-status') {
        s.write(JSON.stringify({ return: { status: 'running', running: true }, id: m.id }) + '\\r\\n');
      } else if (m.execute === 'quit') {
        s.write(JSON.stringify({ return: {}, id: m.id }) + '\\r\\n');
        process.exit(0);
      }
    }
  });
}).listen({ fd: 3 });
`;

function fakeSpawner(
  bad: number,
  mode: 'greet-twice' | 'silent' = 'greet-twice',
  log = join(dir, 'sessions'),
): Spawner {
  return {
    name: 'fake',
    limitations: () => [],
    async spawn(_p, fds) {
      const child = spawn(process.execPath, ['-e', FAKE_DM, String(bad), mode, log], {
        stdio: ['ignore', 'ignore', 'ignore', fds['qmp-listener']],
      });
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      return {
        pid: child.pid as number,
        signal: (sig) => child.kill(sig),
        exited,
      };
    },
  };
}

const uids: UidOps = {
  name: 'none',
  reap: async () => true,
  verifyEmpty: async () => true,
  release: async () => {},
};

const planFor = (domid: number) =>
  plan(
    { domid, binary: X86_CAPS.binary, stateDir: join(dir, `s${domid}`), mode: 'libxl-compat' },
    X86_CAPS,
    { uid: 3_670_000 + domid, gid: 3_670_000 + domid },
  );

describe('launch: a QMP session QEMU mishandles at start-up is opened again, 3 sessions in all', () => {
  /** Launches with a fake DM, which is ready after exactly `sessions` QMP sessions. */
  async function readyAfter(
    domid: number,
    bad: number,
    mode: 'greet-twice' | 'silent',
    sessions: number,
  ): Promise<void> {
    const log = join(dir, `sessions-${domid}`);
    const h = await launch(planFor(domid), {
      spawner: fakeSpawner(bad, mode, log),
      uids,
      readyTimeoutMs: mode === 'silent' ? 300 : 5000,
      qmpLimits: { commandTimeoutMs: 300 },
    });
    try {
      expect(await h.qmp?.execute('query-status')).toEqual({ status: 'running', running: true });
      expect(readFileSync(log, 'utf8')).toBe('session\n'.repeat(sessions));
    } finally {
      h.signal?.('SIGKILL');
    }
  }

  it('a second greeting on the first session: the second session succeeds', async () => {
    await readyAfter(1, 1, 'greet-twice', 2);
  });

  it('two bad sessions in a row: the third session succeeds', async () => {
    await readyAfter(3, 2, 'greet-twice', 3);
  });

  it('a silent first session (no reply to qmp_capabilities): the second succeeds', async () => {
    await readyAfter(5, 1, 'silent', 2);
  });

  it('silent sessions: all of them within twice the ready timeout, so the third is never opened', async () => {
    const log = join(dir, 'sessions-silent');
    const e = await launch(planFor(4), {
      spawner: fakeSpawner(3, 'silent', log),
      uids,
      readyTimeoutMs: 300,
      qmpLimits: { commandTimeoutMs: 300 },
    }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'EQMP_TIMEOUT', step: 'qmp-connect' });
    expect((e as LauncherError).message).toContain(
      'QMP qmp_capabilities: expected a reply within 300 ms',
    );
    // Two sessions of 300 ms spend the 600 ms budget.
    expect(readFileSync(log, 'utf8')).toBe('session\nsession\n');
  });

  it('three bad sessions in a row: the launch fails with the protocol error, naming what was seen', async () => {
    const e = await launch(planFor(2), {
      spawner: fakeSpawner(3),
      uids,
      readyTimeoutMs: 5000,
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(LauncherError);
    // The session failed on the stray greeting; the command in flight sees it closed.
    expect(['EQMP_PROTOCOL', 'EQMP_CLOSED']).toContain((e as LauncherError).code);
    expect((e as LauncherError).message).toMatch(
      /^launch of domid 2 failed at qmp-(connect|ready): /,
    );
  });
});
