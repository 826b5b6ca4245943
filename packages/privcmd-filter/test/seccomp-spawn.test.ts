import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { close, constants, isAvailable, open, spawnConfined, waitPid } from '@xen-depriv/sys';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileSeccomp, deviceModelAllowlist, type SeccompAllowlist } from '../src/index.js';
import { X86_64_SYSCALLS } from '../src/seccomp-entry.js';
import { FIOASYNC, FIONBIO, spawnTestAllowlist } from './helpers/filters.js';

const isRoot = process.getuid?.() === 0;
const haveGcc = spawnSync('gcc', ['--version']).status === 0;
const ready = isAvailable() && isRoot && haveGcc;

interface Outcome {
  exitCode: number | null;
  signal: number | null;
  out: string;
}

describe.skipIf(!ready)(
  'compiled filters verified by the real kernel through sys.spawnConfined (needs root, gcc, the sys addon)',
  () => {
    let dir = '';
    let child = '';
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'pf-spawn-'));
      child = join(dir, 'seccomp-child');
      execFileSync('gcc', ['-O1', '-o', child, join(__dirname, 'fixtures', 'seccomp-child.c')]);
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    async function run(
      list: SeccompAllowlist,
      args: string[],
      during?: (pid: number) => Promise<void>,
    ): Promise<Outcome> {
      const outPath = join(dir, `out-${args.join('-')}`);
      const out = open(outPath, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o600);
      const devNull = open('/dev/null', constants.O_RDWR);
      let pidfd = -1;
      try {
        const spawned = spawnConfined({
          file: child,
          argv: ['seccomp-child', ...args],
          env: {},
          fds: [
            { target: 0, source: devNull },
            { target: 1, source: out },
            { target: 2, source: devNull },
          ],
          noNewPrivs: true,
          seccomp: compileSeccomp(list),
        });
        pidfd = spawned.pidfd;
        await during?.(spawned.pid);
        // The child makes one call and exits; poll without blocking the event loop forever.
        for (let i = 0; i < 2000; i++) {
          const st = waitPid(spawned.pid, { noHang: true });
          if (st)
            return { exitCode: st.exitCode, signal: st.signal, out: readFileSync(outPath, 'utf8') };
          await new Promise((r) => setTimeout(r, 5));
        }
        throw new Error(`seccomp-child ${args.join(' ')} (pid ${spawned.pid}) did not exit`);
      } finally {
        if (pidfd >= 0) close(pidfd);
        close(out);
        close(devNull);
      }
    }

    const small = spawnTestAllowlist;

    it('an allowed syscall runs: getpid', async () => {
      expect(await run(small, ['getpid'])).toEqual({
        exitCode: 0,
        signal: null,
        out: 'ret=1 errno=0\n',
      });
    });
    it('an allowed ioctl reaches the kernel: FIONBIO returns 0', async () => {
      expect(await run(small, ['ioctl', FIONBIO.toString(16)])).toEqual({
        exitCode: 0,
        signal: null,
        out: 'ret=0 errno=0\n',
      });
    });
    it('a denied ioctl number gets the configured ERRNO(EPERM)', async () => {
      expect(await run(small, ['ioctl', FIOASYNC.toString(16)])).toEqual({
        exitCode: 0,
        signal: null,
        out: 'ret=-1 errno=1\n',
      });
    });
    it('a denied syscall is KILL_PROCESS: the child dies of SIGSYS', async () => {
      expect(await run(small, ['syscall', String(X86_64_SYSCALLS.getppid)])).toEqual({
        exitCode: null,
        signal: constants.SIGSYS ?? 31,
        out: '',
      });
    });
    it('a denied syscall with LOG as default action is allowed and runs', async () => {
      const logging = { ...small, defaultAction: 'log' as const };
      expect(await run(logging, ['syscall', String(X86_64_SYSCALLS.getppid)])).toEqual({
        exitCode: 0,
        signal: null,
        out: 'ret=1 errno=0\n',
      });
    });
    it('the device-model allowlist: the child starts, FIONBIO passes, FIOASYNC gets ENOTTY, ptrace kills', async () => {
      expect(await run(deviceModelAllowlist, ['ioctl', FIONBIO.toString(16)])).toEqual({
        exitCode: 0,
        signal: null,
        out: 'ret=0 errno=0\n',
      });
      expect(await run(deviceModelAllowlist, ['ioctl', FIOASYNC.toString(16)])).toEqual({
        exitCode: 0,
        signal: null,
        out: 'ret=-1 errno=25\n',
      });
      expect(
        await run(deviceModelAllowlist, ['syscall', String(X86_64_SYSCALLS.ptrace)]),
      ).toMatchObject({ exitCode: null, signal: 31 });
    });

    /** Resolves once `pred` holds for the child's `/proc/<pid>/<file>`. */
    async function until(pid: number, file: string, pred: (text: string) => boolean) {
      for (let i = 0; i < 2000; i++) {
        if (pred(readFileSync(`/proc/${pid}/${file}`, 'utf8'))) return;
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error(`/proc/${pid}/${file}: the condition never held`);
    }
    /**
     * Stops the child while it sleeps in clock_nanosleep (syscall 230, what glibc's nanosleep
     * calls) and continues it: the kernel resumes the sleep with restart_syscall (219), which
     * the filter sees like any other syscall.
     */
    const stopAndContinue = async (pid: number) => {
      await until(pid, 'syscall', (t) => t.startsWith('230 '));
      process.kill(pid, 'SIGSTOP');
      await until(pid, 'stat', (t) => / T /.test(t.slice(t.lastIndexOf(')'))));
      process.kill(pid, 'SIGCONT');
    };

    it('the device-model allowlist: a DM stopped and continued in a sleep lives on (restart_syscall)', async () => {
      expect(await run(deviceModelAllowlist, ['sleep', '300'], stopAndContinue)).toEqual({
        exitCode: 0,
        signal: null,
        out: 'ret=0 errno=0\n',
      });
      // The same filter without restart_syscall: SIGSTOP and SIGCONT kill the sleeper.
      const without = {
        ...deviceModelAllowlist,
        syscalls: deviceModelAllowlist.syscalls.filter((s) => s !== 'restart_syscall'),
      };
      expect(without.syscalls.length).toBe(deviceModelAllowlist.syscalls.length - 1);
      expect(await run(without, ['sleep', '300'], stopAndContinue)).toEqual({
        exitCode: null,
        signal: constants.SIGSYS ?? 31,
        out: '',
      });
    });
  },
);
