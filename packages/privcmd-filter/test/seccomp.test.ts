import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IOCTL_PRIVCMD_DM_OP, IOCTL_PRIVCMD_HYPERCALL } from '@xen-depriv/dmop-abi';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  compileSeccomp,
  deviceModelAllowlist,
  PolicyError,
  type SeccompAllowlist,
} from '../src/index.js';
import {
  AUDIT_ARCH_X86_64,
  disassembleSeccomp,
  runSeccomp,
  SECCOMP_RET,
  X86_64_SYSCALLS,
} from '../src/seccomp-entry.js';
import { spawnTestAllowlist } from './helpers/filters.js';

const small: SeccompAllowlist = {
  syscalls: ['read', 'write', 'getpid', 'exit_group', 'ioctl'],
  ioctls: [IOCTL_PRIVCMD_DM_OP, 0x5401],
  defaultAction: 'kill_process',
  ioctlAction: { errno: 1 },
};

describe('compileSeccomp', () => {
  it('emits exact bytes for a one-syscall allowlist', () => {
    const bytes = compileSeccomp({ syscalls: ['getpid'], defaultAction: { errno: 38 } });
    expect(Buffer.from(bytes).toString('hex')).toBe(
      [
        '2000000004000000', // ld [4] arch
        '150001003e0000c0', // jeq AUDIT_ARCH_X86_64 jt+1
        '0600000000000080', // ret KILL_PROCESS
        '2000000000000000', // ld [0] nr
        '3500000100000040', // jge X32_SYSCALL_BIT jf+1
        '0600000000000080', // ret KILL_PROCESS
        '1500000127000000', // jeq 39 getpid
        '060000000000ff7f', // ret ALLOW
        '0600000026000500', // ret ERRNO(38)
      ].join(''),
    );
  });
  it('refuses an unknown syscall name, a bad errno and a bad ioctl with typed errors', () => {
    expect(() =>
      compileSeccomp({ syscalls: ['read', 'nosuch'], defaultAction: 'kill_process' }),
    ).toThrowError(
      new PolicyError(
        'UNKNOWN_SYSCALL',
        '/syscalls/1',
        'expected an x86-64 syscall name, got "nosuch"',
      ),
    );
    expect(() => compileSeccomp({ syscalls: [], defaultAction: { errno: 5000 } })).toThrow(
      '/defaultAction: expected errno 0..4095 (SECCOMP_RET_DATA), got 5000',
    );
    expect(() => compileSeccomp({ syscalls: [], ioctls: [-1], defaultAction: 'log' })).toThrow(
      PolicyError,
    );
    expect(() => compileSeccomp({ syscalls: ['toString'], defaultAction: 'log' })).toThrow(
      PolicyError,
    );
  });
  it('property: every syscall gets ALLOW iff listed, ioctls by request, other arches and x32 numbers the bad-arch action', () => {
    const names = Object.keys(X86_64_SYSCALLS);
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.constantFrom(...names), { maxLength: 40 }),
        fc.option(fc.uniqueArray(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 10 }), {
          nil: undefined,
        }),
        fc.integer({ min: 0, max: 4095 }),
        fc.integer({ min: 0, max: 0x3fffffff }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        (syscalls, ioctls, errno, nr, arg1) => {
          const list: SeccompAllowlist =
            ioctls === undefined
              ? { syscalls, defaultAction: { errno } }
              : { syscalls, ioctls, defaultAction: { errno }, ioctlAction: 'trap' };
          const prog = compileSeccomp(list);
          const listed = new Set<number>(
            syscalls.map((s) => X86_64_SYSCALLS[s as keyof typeof X86_64_SYSCALLS]),
          );
          const ret = runSeccomp(prog, { nr, arch: AUDIT_ARCH_X86_64, args: [0n, arg1] });
          let expected: number;
          if (nr === 16 && ioctls !== undefined) {
            expected = ioctls.includes(Number(arg1 & 0xffffffffn))
              ? SECCOMP_RET.ALLOW
              : SECCOMP_RET.TRAP;
          } else {
            expected = listed.has(nr) ? SECCOMP_RET.ALLOW : (SECCOMP_RET.ERRNO | errno) >>> 0;
          }
          expect(ret).toBe(expected);
          expect(runSeccomp(prog, { nr, arch: 0x40000003 })).toBe(SECCOMP_RET.KILL_PROCESS);
          expect(runSeccomp(prog, { nr: nr | 0x40000000, arch: AUDIT_ARCH_X86_64 })).toBe(
            SECCOMP_RET.KILL_PROCESS,
          );
        },
      ),
      { numRuns: 300 },
    );
  });
  it('the device-model allowlist compiles, allows DM_OP and refuses IOCTL_PRIVCMD_HYPERCALL and ptrace', () => {
    const prog = compileSeccomp(deviceModelAllowlist);
    const ioctl = (req: number) =>
      runSeccomp(prog, { nr: 16, arch: AUDIT_ARCH_X86_64, args: [3n, BigInt(req)] });
    expect(ioctl(IOCTL_PRIVCMD_DM_OP)).toBe(SECCOMP_RET.ALLOW);
    expect(ioctl(IOCTL_PRIVCMD_HYPERCALL)).toBe((SECCOMP_RET.ERRNO | 25) >>> 0);
    expect(runSeccomp(prog, { nr: X86_64_SYSCALLS.ptrace, arch: AUDIT_ARCH_X86_64 })).toBe(
      SECCOMP_RET.KILL_PROCESS,
    );
  });
  it('disassembly of the small allowlist program (snapshot)', () => {
    expect(disassembleSeccomp(compileSeccomp(small))).toMatchSnapshot();
  });
  it('disassembly of the program seccomp-spawn.test.ts runs under the kernel (snapshot)', () => {
    expect(disassembleSeccomp(compileSeccomp(spawnTestAllowlist))).toMatchSnapshot();
  });
  it('disassembly of the device-model allowlist program (snapshot)', () => {
    expect(disassembleSeccomp(compileSeccomp(deviceModelAllowlist))).toMatchSnapshot();
  });
  it('rules give single syscalls their own action; a syscall listed twice is refused', () => {
    const prog = compileSeccomp({
      syscalls: ['read'],
      rules: [{ syscall: 'io_uring_setup', action: { errno: 38 } }],
      defaultAction: 'kill_process',
    });
    const nr = (name: keyof typeof X86_64_SYSCALLS) =>
      runSeccomp(prog, { nr: X86_64_SYSCALLS[name], arch: AUDIT_ARCH_X86_64 });
    expect([nr('read'), nr('io_uring_setup'), nr('write')]).toEqual([
      SECCOMP_RET.ALLOW,
      (SECCOMP_RET.ERRNO | 38) >>> 0,
      SECCOMP_RET.KILL_PROCESS,
    ]);
    expect(() =>
      compileSeccomp({
        syscalls: ['read'],
        rules: [{ syscall: 'read', action: 'log' }],
        defaultAction: 'log',
      }),
    ).toThrow('/rules/0/syscall: expected a syscall not already listed, got read twice');
  });
  it('disassembleSeccomp refuses a program that is not whole instructions', () => {
    expect(() => disassembleSeccomp(new Uint8Array(12))).toThrow(
      'expected a non-empty multiple of 8 bytes (struct sock_filter), got 12',
    );
  });
});

// The real kernel runs the program: a C child installs it with seccomp(2) and makes one call.
const haveGcc = spawnSync('gcc', ['--version']).status === 0;
describe.skipIf(!haveGcc)(
  'compileSeccomp verified by the real kernel (C loader, needs gcc)',
  () => {
    let dir = '';
    let runner = '';
    let filter = '';
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'pf-seccomp-'));
      runner = join(dir, 'seccomp-run');
      execFileSync('gcc', ['-O1', '-o', runner, join(__dirname, 'fixtures', 'seccomp-run.c')]);
      filter = join(dir, 'filter.bpf');
      writeFileSync(filter, compileSeccomp(small));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const run = (...args: string[]) => spawnSync(runner, [filter, ...args], { encoding: 'utf8' });

    it('an allowed syscall runs', () => {
      const r = run('getpid');
      expect({ status: r.status, signal: r.signal, out: r.stdout }).toEqual({
        status: 0,
        signal: null,
        out: 'ret=1 errno=0\n',
      });
    });
    it('an allowed ioctl reaches the kernel (/dev/null answers ENOTTY itself)', () => {
      const r = run('ioctl', IOCTL_PRIVCMD_DM_OP.toString(16));
      expect({ status: r.status, out: r.stdout }).toEqual({ status: 0, out: 'ret=-1 errno=25\n' });
    });
    it('a denied ioctl gets ERRNO(EPERM) from the filter', () => {
      const r = run('ioctl', IOCTL_PRIVCMD_HYPERCALL.toString(16));
      expect({ status: r.status, out: r.stdout }).toEqual({ status: 0, out: 'ret=-1 errno=1\n' });
    });
    it('a denied syscall kills the process with SIGSYS', () => {
      const r = run('syscall', String(X86_64_SYSCALLS.getppid));
      expect({ status: r.status, signal: r.signal, out: r.stdout }).toEqual({
        status: null,
        signal: 'SIGSYS',
        out: '',
      });
    });
  },
);
