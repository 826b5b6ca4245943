import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  close,
  constants,
  netnsConnect,
  openPty,
  pidfdSendSignal,
  SysError,
  spawnConfined,
  waitPid,
} from '../src/index.js';
import { canRun, canRunAsRoot, pollUntil, tempDir } from './helpers.js';

const running: { pid: number; pidfd: number }[] = [];
afterEach(() => {
  for (const child of running.splice(0)) {
    try {
      pidfdSendSignal(child.pidfd, constants.SIGKILL);
    } catch {
      // already gone
    }
    waitPid(child.pid);
    close(child.pidfd);
  }
});

const PORT = 47_613;
// A one-shot echo server on 127.0.0.1:PORT that says "ready" (to its stdout, a pipe we hold).
const ECHO = `import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", ${PORT})); s.listen(1); print("ready", flush=True)
c,_=s.accept(); c.sendall(b"echo:" + c.recv(64)); c.close()`;

const dirs: { [Symbol.dispose](): void }[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d[Symbol.dispose]();
});

/** python3 in a new network namespace; `ready` resolves with its output once it listens or fails. */
function listenerInNetns(loopbackUp: boolean): { pid: number; ready: Promise<string> } {
  const dir = tempDir('xd-netns-');
  dirs.push(dir);
  const log = join(dir.path, 'out');
  const out = openSync(log, 'w');
  const child = spawnConfined({
    file: '/usr/bin/python3',
    argv: ['python3', '-c', ECHO],
    env: {},
    fds: [
      { target: 1, source: out },
      { target: 2, source: out },
    ],
    namespaces: ['net'],
    loopbackUp,
  });
  running.push(child);
  closeSync(out);
  const ready = pollUntil(
    () => readFileSync(log, 'utf8'),
    (text) => /ready|Error/.test(text),
  );
  return { pid: child.pid, ready };
}

describe.skipIf(!canRunAsRoot)('netnsConnect (real network namespaces)', () => {
  it('reaches a loopback listener inside the namespace (lo brought up by loopbackUp), and the host cannot', async () => {
    const l = listenerInNetns(true);
    expect(await l.ready).toContain('ready');
    // The host's own 127.0.0.1:PORT is another stack: nothing listens there.
    const hostErr = await new Promise<string>((resolve) => {
      const s = connect(PORT, '127.0.0.1');
      s.on('connect', () => resolve('connected'));
      s.on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? 'error'));
    });
    expect(hostErr).toBe('ECONNREFUSED');
    const fd = netnsConnect(l.pid, '127.0.0.1', PORT);
    const s = new Socket({ fd, readable: true, writable: true });
    s.write('hi');
    const got = await new Promise<string>((resolve) => {
      let out = '';
      s.on('data', (b) => {
        out += b;
      });
      s.on('close', () => resolve(out));
    });
    expect(got).toBe('echo:hi');
  });

  it('without loopbackUp the namespace has lo down: a listener binds, but nothing reaches it', async () => {
    const l = listenerInNetns(false);
    expect(await l.ready).toContain('ready');
    const e = (() => {
      try {
        netnsConnect(l.pid, '127.0.0.1', PORT);
      } catch (err) {
        return err;
      }
    })();
    expect(e).toBeInstanceOf(SysError);
    expect((e as SysError).syscall).toBe('connect');
    expect((e as SysError).code).toBe('ENETUNREACH');
  });

  it('ECONNREFUSED when nothing listens; ENOENT for a process that does not exist', async () => {
    const l = listenerInNetns(true);
    expect(await l.ready).toContain('ready');
    const refused = (() => {
      try {
        netnsConnect(l.pid, '127.0.0.1', PORT + 1);
      } catch (e) {
        return e;
      }
    })();
    expect(refused).toBeInstanceOf(SysError);
    expect((refused as SysError).code).toBe('ECONNREFUSED');
    expect((refused as SysError).syscall).toBe('connect');
    const gone = (() => {
      try {
        netnsConnect(4_194_000, '127.0.0.1', PORT);
      } catch (e) {
        return e;
      }
    })();
    expect((gone as SysError).code).toBe('ENOENT');
  });
});

describe.skipIf(!canRun)('loopbackUp and netnsConnect: bad input', () => {
  it('loopbackUp without the net namespace is refused before anything runs', () => {
    expect(() =>
      spawnConfined({ file: '/bin/true', argv: ['true'], env: {}, loopbackUp: true }),
    ).toThrow(/loopbackUp: expected the 'net' namespace/);
  });
  it('netnsConnect wants an IPv4 address, a port 1..65535 and a pid', () => {
    expect(() => netnsConnect(1, 'localhost', 80)).toThrow(/expected an IPv4 address/);
    expect(() => netnsConnect(1, '127.0.0.1', 0)).toThrow(TypeError);
    expect(() => netnsConnect(0, '127.0.0.1', 80)).toThrow(TypeError);
  });
});

describe.skipIf(!canRun)('openPty', () => {
  it('a raw pair: bytes written to the master reach the slave unchanged; the slave does not echo', async () => {
    const pty = openPty();
    try {
      expect(pty.path).toMatch(/^\/dev\/pts\/\d+$/);
      writeSync(pty.master, 'a\r\nb\x03');
      const buf = Buffer.alloc(16);
      const n = readSync(pty.slave, buf);
      // Raw: no ICRNL (\r stays \r), no ISIG (^C is a byte, not a signal).
      expect(buf.subarray(0, n)).toEqual(Buffer.from('a\r\nb\x03'));
      writeSync(pty.slave, 'out\n');
      const m = readSync(pty.master, buf);
      // No OPOST (no \n -> \r\n), and no echo of the bytes the master wrote before.
      expect(buf.subarray(0, m)).toEqual(Buffer.from('out\n'));
    } finally {
      closeSync(pty.slave);
      closeSync(pty.master);
    }
  });
});
