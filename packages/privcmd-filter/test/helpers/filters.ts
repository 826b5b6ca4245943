import type { SeccompAllowlist } from '../../src/index.js';

// asm-generic/ioctls.h: both handled by the VFS for any fd (ioctl_fionbio, ioctl_fioasync), so
// the kernel answers 0 and only the filter can make them fail.
export const FIONBIO = 0x5421;
export const FIOASYNC = 0x5452;

/** What ld.so and libc start-up need on bookworm before main(), plus what the child does. */
const STARTUP = [
  'execve',
  'brk',
  'arch_prctl',
  'mmap',
  'munmap',
  'mprotect',
  'access',
  'openat',
  'newfstatat',
  'fstat',
  'close',
  'read',
  'pread64',
  'set_tid_address',
  'set_robust_list',
  'rseq',
  'prlimit64',
  'getrandom',
  'write',
  'exit_group',
];

/** The filter test/seccomp-spawn.test.ts runs under the real kernel; its disassembly is snapshot-tested. */
export const spawnTestAllowlist: SeccompAllowlist = {
  syscalls: [...STARTUP, 'getpid', 'ioctl'],
  ioctls: [FIONBIO],
  defaultAction: 'kill_process',
  ioctlAction: { errno: 1 },
};
