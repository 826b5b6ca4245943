import { spawnSync } from 'node:child_process';
import {
  closeSync,
  fstatSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  close,
  constants,
  memfdCreate,
  open,
  pidfdExited,
  pidfdGetfd,
  pidfdOpen,
  pidfdSendSignal,
  SysError,
  spawnConfined,
  waitPid,
  watchPidfd,
} from '../src/index.js';
import { canRunAsRoot, execDone, immediate, tempDir } from './helpers.js';

const SIGKILL = constants.SIGKILL;

const running: { pid: number; pidfd: number; reaped: boolean }[] = [];
afterEach(() => {
  for (const child of running.splice(0)) {
    if (!child.reaped) {
      try {
        pidfdSendSignal(child.pidfd, SIGKILL);
      } catch {
        // already gone
      }
      waitPid(child.pid);
    }
    close(child.pidfd);
  }
});

async function sleeper(
  fds: { target: number; source: number }[] = [],
): Promise<{ pid: number; pidfd: number; reaped: boolean }> {
  const child = {
    ...spawnConfined({ file: '/bin/sleep', argv: ['sleep', '1000'], env: {}, fds }),
    reaped: false,
  };
  running.push(child);
  await execDone(child.pid, 'sleep');
  return child;
}

function reap(child: { pid: number; reaped: boolean }) {
  const status = waitPid(child.pid);
  child.reaped = true;
  return status;
}

/** The open-file flags of one of our fds, from /proc/self/fdinfo (octal). */
function fdFlags(fd: number): number {
  const line = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/^flags:\s+([0-7]+)/m);
  return Number.parseInt(line?.[1] ?? 'x', 8);
}

describe.skipIf(!canRunAsRoot)('watchPidfd (real processes, as root)', () => {
  it('fires exactly once, after the child is SIGKILLed, and not while it lives', async () => {
    const child = await sleeper();
    let calls = 0;
    let exited!: (error: unknown) => void;
    const done = new Promise((resolve) => {
      exited = resolve;
    });
    const watch = watchPidfd(child.pidfd, (error) => {
      calls++;
      exited(error);
    });
    // Each turn polls the pidfd; a living process never makes it readable.
    for (let i = 0; i < 100; i++) await immediate();
    expect(calls).toBe(0);
    expect(waitPid(child.pid, { noHang: true })).toBeNull();

    pidfdSendSignal(child.pidfd, SIGKILL);
    expect(await done).toBeUndefined();
    for (let i = 0; i < 20; i++) await immediate();
    expect(calls).toBe(1);
    watch.close(); // after it fired: nothing to do
    // The watch does not reap: the exit status is still there for waitPid.
    expect(reap(child)).toEqual({ pid: child.pid, exitCode: null, signal: SIGKILL });
  });

  it('close() before the exit means onExit is never called', async () => {
    const child = await sleeper();
    let calls = 0;
    const watch = watchPidfd(child.pidfd, () => {
      calls++;
    });
    watch.close();
    watch.close();
    pidfdSendSignal(child.pidfd, SIGKILL);
    // A second watch on the same pidfd (allowed once the first is closed) sees the exit.
    await pidfdExited(child.pidfd);
    for (let i = 0; i < 20; i++) await immediate();
    expect(calls).toBe(0);
    reap(child);
  });

  it('close(), ref() and unref() from inside onExit are safe', async () => {
    const child = await sleeper();
    let calls = 0;
    const done = new Promise<void>((resolve) => {
      const watch = watchPidfd(child.pidfd, () => {
        calls++;
        watch.unref();
        watch.ref();
        watch.close();
        watch.close();
        // The pidfd may be closed here too: polling stopped before onExit ran.
        resolve();
      });
    });
    pidfdSendSignal(child.pidfd, SIGKILL);
    await done;
    for (let i = 0; i < 20; i++) await immediate();
    expect(calls).toBe(1);
    reap(child);
  });

  it('a process that already exited (and was reaped) fires on a later turn, never synchronously', async () => {
    const child = await sleeper();
    pidfdSendSignal(child.pidfd, SIGKILL);
    reap(child);
    let calls = 0;
    const done = new Promise<void>((resolve) => {
      watchPidfd(child.pidfd, () => {
        calls++;
        resolve();
      });
    });
    expect(calls).toBe(0);
    await done;
    expect(calls).toBe(1);
  });

  it("leaves the pidfd's O_NONBLOCK flag as it was", async () => {
    const child = await sleeper();
    const before = fdFlags(child.pidfd);
    const watch = watchPidfd(child.pidfd, () => {});
    expect(fdFlags(child.pidfd)).toBe(before);
    expect(before & constants.O_NONBLOCK).toBe(0);
    watch.close();
  });

  it('refuses a second watch on the same fd number (EEXIST) and a closed fd (EBADF)', async () => {
    const child = await sleeper();
    const watch = watchPidfd(child.pidfd, () => {});
    try {
      expect(() => watchPidfd(child.pidfd, () => {})).toThrow(
        expect.objectContaining({ name: 'SysError', code: 'EEXIST' }),
      );
    } finally {
      watch.close();
    }
    const fd = open('/dev/null', constants.O_RDONLY);
    close(fd);
    expect(() => watchPidfd(fd, () => {})).toThrow(
      expect.objectContaining({ name: 'SysError', code: 'EBADF' }),
    );
    await expect(pidfdExited(fd)).rejects.toThrow(SysError);
  });

  // Each of these runs a separate Node on the raw addon: it starts a sleep, prints its pid
  // first, and the test kills that pid afterwards, whatever happened.
  const addon = `require(${JSON.stringify(createRequire(import.meta.url).resolve('node-gyp-build'))})(${JSON.stringify(join(import.meta.dirname, '..'))})`;
  function runNode(body: string): { status: number | null; lines: string[]; stderr: string } {
    const script = `
      const { spawn } = require('node:child_process');
      const s = spawn('/bin/sleep', ['1000'], { stdio: 'ignore' });
      s.unref();
      process.stdout.write(s.pid + '\\n');
      ${body}
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    const pid = Number(lines[0]);
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    return { status: r.status, lines: lines.slice(1), stderr: r.stderr };
  }

  it('an unref()ed watch does not keep a Node process alive', () => {
    const r = runNode(`
      const b = ${addon};
      const w = b.pidfdWatch(b.pidfdOpen(s.pid), () => { process.exitCode = 3; });
      b.pidfdWatchRef(w, false);
    `);
    expect(r).toEqual({ status: 0, lines: [], stderr: '' });
  });

  it('a worker thread that exits with a live watch closes its handle (no open-handle abort)', () => {
    const r = runNode(`
      const { Worker } = require('node:worker_threads');
      const w = new Worker(\`
        const { workerData } = require('node:worker_threads');
        const b = ${addon.replaceAll('\\', '\\\\')};
        b.pidfdWatch(b.pidfdOpen(workerData.pid), () => {});
        setImmediate(() => process.exit(0));
      \`, { eval: true, workerData: { pid: s.pid } });
      w.on('exit', (code) => { s.kill('SIGKILL'); console.log('worker exit ' + code); });
    `);
    expect(r).toEqual({ status: 0, lines: ['worker exit 0'], stderr: '' });
  });

  it('an exception thrown by onExit reaches process uncaughtException', () => {
    const r = runNode(`
      const b = ${addon};
      process.on('uncaughtException', (e) => console.log('uncaught ' + e.message));
      const fd = b.pidfdOpen(s.pid);
      b.pidfdWatch(fd, () => { throw new Error('boom'); });
      b.pidfdSendSignal(fd, 9);
    `);
    expect(r).toEqual({ status: 0, lines: ['uncaught boom'], stderr: '' });
  });
});

describe.skipIf(!canRunAsRoot)('pidfdGetfd (real processes, as root)', () => {
  it("duplicates the child's fd 5 (a pipe's write end): what we write to it comes out of the read end", async () => {
    using dir = tempDir('getfd');
    const fifo = join(dir.path, 'pipe');
    spawnSync('/usr/bin/mkfifo', [fifo]);
    // Two open file descriptions of one pipe: ours reads, the child's writes.
    const readEnd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writeEnd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    let dup = -1;
    try {
      const child = await sleeper([{ target: 5, source: writeEnd }]);
      closeSync(writeEnd);
      dup = pidfdGetfd(child.pidfd, 5);
      expect(readlinkSync(`/proc/self/fd/${dup}`)).toBe(readlinkSync(`/proc/${child.pid}/fd/5`));
      expect(fstatSync(dup).ino).toBe(fstatSync(readEnd).ino);
      // The same open file description as the child's fd 5 (its flags), close-on-exec here.
      expect(fdFlags(dup) & ~constants.O_CLOEXEC).toBe(
        Number.parseInt(
          readFileSync(`/proc/${child.pid}/fdinfo/5`, 'utf8').match(/^flags:\s+([0-7]+)/m)?.[1] ??
            'x',
          8,
        ),
      );
      expect(fdFlags(dup) & constants.O_CLOEXEC).toBe(constants.O_CLOEXEC);

      expect(writeSync(dup, 'hello from fd 5')).toBe(15);
      const buf = Buffer.alloc(64);
      const n = readSync(readEnd, buf);
      expect(buf.subarray(0, n).toString()).toBe('hello from fd 5');
    } finally {
      if (dup >= 0) closeSync(dup);
      closeSync(readEnd);
      try {
        closeSync(writeEnd);
      } catch {
        // closed above
      }
    }
  });

  it('EBADF for an fd number the child does not have open; ESRCH once it has exited and been reaped', async () => {
    const child = await sleeper();
    // spawnConfined closes every fd it was not told to keep, so 6 is free in the child.
    expect(() => pidfdGetfd(child.pidfd, 6)).toThrow(
      expect.objectContaining({ name: 'SysError', syscall: 'pidfd_getfd', code: 'EBADF' }),
    );
    pidfdSendSignal(child.pidfd, SIGKILL);
    reap(child);
    expect(() => pidfdGetfd(child.pidfd, 0)).toThrow(
      expect.objectContaining({ name: 'SysError', syscall: 'pidfd_getfd', code: 'ESRCH' }),
    );
  });

  it('works on a pidfd from pidfdOpen, given only the pid (as for the libxl shim)', async () => {
    const memfd = memfdCreate('getfd-by-pid', constants.MFD_CLOEXEC);
    const child = await sleeper([{ target: 5, source: memfd }]);
    close(memfd);
    const byPid = pidfdOpen(child.pid);
    try {
      const fd = pidfdGetfd(byPid, 5);
      expect(readlinkSync(`/proc/self/fd/${fd}`)).toBe('/memfd:getfd-by-pid (deleted)');
      closeSync(fd);
    } finally {
      close(byPid);
    }
  });
});
