import {
  IOCTL_EVTCHN_BIND_INTERDOMAIN,
  IOCTL_EVTCHN_NOTIFY,
  IOCTL_EVTCHN_RESET,
  IOCTL_EVTCHN_RESTRICT_DOMID,
  IOCTL_EVTCHN_UNBIND,
  IOCTL_GNTDEV_GRANT_COPY,
  IOCTL_GNTDEV_MAP_GRANT_REF,
  IOCTL_GNTDEV_SET_MAX_GRANTS,
  IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
  IOCTL_GNTDEV_UNMAP_GRANT_REF,
  IOCTL_PRIVCMD_DM_OP,
  IOCTL_PRIVCMD_HYPERCALL,
  IOCTL_PRIVCMD_MMAP_RESOURCE,
  IOCTL_PRIVCMD_MMAPBATCH,
  IOCTL_PRIVCMD_MMAPBATCH_V2,
  IOCTL_PRIVCMD_RESTRICT,
} from '@xen-depriv/dmop-abi';
import { PolicyError, show } from './error.js';
import { compileSeccomp, type SeccompAllowlist } from './seccomp.js';

/** asm-generic/ioctls.h: glibc's isatty() and QEMU's chardev probes. */
const TCGETS = 0x5401;
const FIONBIO = 0x5421;
const FIOCLEX = 0x5451;
/** ENOTTY: what an ioctl outside the list gets, the answer a tty probe already copes with. */
const ENOTTY = 25;

/**
 * The tap ioctls QEMU 7.2 issues on a `-netdev tap,fd=N` it was handed (net/tap-linux.c:
 * tap_probe_vnet_hdr TUNGETIFF, tap_probe_has_ufo/tap_fd_set_offload TUNSETOFFLOAD,
 * tap_probe_vnet_hdr_len/tap_fd_set_vnet_hdr_len TUNGETVNETHDRSZ/TUNSETVNETHDRSZ,
 * tap_set_sndbuf TUNSETSNDBUF, tap_fd_set_vnet_le/be TUNSETVNETLE/BE, tap_fd_enable/disable
 * TUNSETQUEUE, TUNGETFEATURES); numbers from linux/if_tun.h (_IOR/_IOW('T', n, int|uint)),
 * checked against gcc in test/xen-dm-seccomp.test.ts. Not TUNSETIFF (only for a tap QEMU opens
 * itself) nor TUNSETSTEERINGEBPF (virtio-net's eBPF RSS). They act only on a tun/tap
 * descriptor, and the DM can open none itself (no /dev/net/tun in its root): they reach only the
 * tap its launcher made for it.
 */
export const TAP_IOCTLS: readonly number[] = [
  0x800454cf, // TUNGETFEATURES
  0x400454d0, // TUNSETOFFLOAD
  0x800454d2, // TUNGETIFF
  0x400454d4, // TUNSETSNDBUF
  0x800454d7, // TUNGETVNETHDRSZ
  0x400454d8, // TUNSETVNETHDRSZ
  0x400454d9, // TUNSETQUEUE
  0x400454dc, // TUNSETVNETLE
  0x400454de, // TUNSETVNETBE
];

/**
 * The syscalls a deprivileged QEMU device model makes once it runs (event loop, threads, memory,
 * its QMP/chardev sockets, files it was handed) plus its own execve, and the privcmd/evtchn/gntdev
 * ioctls of libxen* after `-xen-domid-restrict` (see docs/audits/privcmd-ops.md), and the tun/tap
 * ioctls of a NIC handed to it as a descriptor (`TAP_IOCTLS`). Not in it: execveat, ptrace,
 * mount, uid/gid changes, module and kexec loading, bpf, perf, keyctl, reboot, and
 * IOCTL_PRIVCMD_HYPERCALL (refused with ENOTTY before it reaches the kernel). Any other syscall
 * kills the process. `clone` flags are not filtered: the jail's namespaces and uid confine
 * what a new thread or process can do.
 */
export const deviceModelAllowlist: SeccompAllowlist = {
  syscalls: [
    // The filter is installed before execve (sys.spawnConfined), so the exec of QEMU itself and
    // ld.so's start-up (access of /etc/ld.so.preload) must pass; the jail holds no other binary.
    'execve',
    'access',
    // I/O on descriptors it holds
    'read',
    'write',
    'readv',
    'writev',
    'pread64',
    'pwrite64',
    'preadv',
    'pwritev',
    'preadv2',
    'pwritev2',
    'lseek',
    'close',
    'dup',
    'dup2',
    'dup3',
    'fcntl',
    'ioctl',
    'fstat',
    'newfstatat',
    'statx',
    'fstatfs',
    'statfs',
    'fchdir',
    'readlink',
    'unlink',
    'unlinkat',
    'fsync',
    'fdatasync',
    'fallocate',
    // On an incoming migration (`xl restore`: -incoming fd:N) QEMU 7.2 activates its block
    // devices and drops each image's page cache (block/file-posix.c raw_co_invalidate_cache:
    // posix_fadvise DONTNEED on the image's own fd); found by a SIGSYS in the lab (syscall 221).
    'fadvise64',
    'ftruncate',
    'sendfile',
    'copy_file_range',
    'getdents64',
    'openat',
    'readlinkat',
    'faccessat',
    'faccessat2',
    'memfd_create',
    'pipe2',
    'eventfd2',
    'timerfd_create',
    'timerfd_settime',
    'timerfd_gettime',
    'signalfd4',
    // event loop
    'poll',
    'ppoll',
    'pselect6',
    'epoll_create1',
    'epoll_ctl',
    'epoll_wait',
    'epoll_pwait',
    'epoll_pwait2',
    'io_setup',
    'io_destroy',
    'io_submit',
    'io_getevents',
    'io_cancel',
    // memory
    'mmap',
    'munmap',
    'mprotect',
    'madvise',
    'mremap',
    'brk',
    'mlock',
    'munlock',
    'mlockall',
    'membarrier',
    // QEMU's host memory backend probes the NUMA policy at start-up.
    'get_mempolicy',
    'set_mempolicy',
    'mbind',
    // threads, signals, time
    'clone',
    'clone3',
    'futex',
    'set_robust_list',
    'get_robust_list',
    'set_tid_address',
    'rseq',
    'exit',
    'exit_group',
    'rt_sigaction',
    'rt_sigprocmask',
    'rt_sigreturn',
    'rt_sigtimedwait',
    // How the kernel resumes a sleep (nanosleep, a futex or poll with a timeout) after the task
    // was stopped and continued, frozen or traced: without it, SIGSTOP + SIGCONT kill the DM.
    'restart_syscall',
    'sigaltstack',
    'tgkill',
    'getpid',
    'gettid',
    'getppid',
    'sched_yield',
    'sched_getaffinity',
    'sched_setaffinity',
    'sched_getparam',
    'sched_getscheduler',
    'clock_gettime',
    'clock_getres',
    'clock_nanosleep',
    'nanosleep',
    'gettimeofday',
    'getrandom',
    'getuid',
    'geteuid',
    'getgid',
    'getegid',
    'getresuid',
    'getresgid',
    'getgroups',
    'prctl',
    // QEMU probes seccomp for -sandbox; a filter can only narrow what this one allows.
    'seccomp',
    'arch_prctl',
    'prlimit64',
    'getrlimit',
    'getrusage',
    'uname',
    'sysinfo',
    'getcwd',
    // QMP, chardev and VNC sockets (unix or loopback)
    'socket',
    'bind',
    'listen',
    'accept',
    'accept4',
    'connect',
    'shutdown',
    'getsockname',
    'getpeername',
    'getsockopt',
    'setsockopt',
    'sendmsg',
    'recvmsg',
    'sendto',
    'recvfrom',
    'socketpair',
  ],
  ioctls: [
    IOCTL_PRIVCMD_DM_OP,
    IOCTL_PRIVCMD_RESTRICT,
    IOCTL_PRIVCMD_MMAPBATCH,
    IOCTL_PRIVCMD_MMAPBATCH_V2,
    IOCTL_PRIVCMD_MMAP_RESOURCE,
    IOCTL_EVTCHN_BIND_INTERDOMAIN,
    IOCTL_EVTCHN_UNBIND,
    IOCTL_EVTCHN_NOTIFY,
    IOCTL_EVTCHN_RESET,
    IOCTL_EVTCHN_RESTRICT_DOMID,
    IOCTL_GNTDEV_MAP_GRANT_REF,
    IOCTL_GNTDEV_UNMAP_GRANT_REF,
    IOCTL_GNTDEV_SET_MAX_GRANTS,
    IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
    IOCTL_GNTDEV_GRANT_COPY,
    TCGETS,
    FIONBIO,
    FIOCLEX,
    ...TAP_IOCTLS,
  ],
  // QEMU probes io_uring and falls back to the thread pool: refuse softly, never hand it the ring.
  rules: [{ syscall: 'io_uring_setup', action: { errno: 38 } }],
  defaultAction: 'kill_process',
  ioctlAction: { errno: ENOTTY },
  badArchAction: 'kill_process',
};

/** Which `IOCTL_PRIVCMD_HYPERCALL` policy the Xen device model's filter has. */
export type XenDeviceModelSeccompMode = 'init-hypercall' | 'strict';

export interface XenDeviceModelSeccompOptions {
  /**
   * `init-hypercall` (default): `deviceModelAllowlist` plus `IOCTL_PRIVCMD_HYPERCALL`, because
   * Xen's QEMU 7.2 issues hypercalls through it during init, before `-xen-domid-restrict`
   * (libxenctrl's `xc_domain_populate_physmap_exact` for stdvga's VRAM, seen in the lab); once
   * QEMU restricts its fds the kernel refuses every HYPERCALL with EPERM (privcmd_ioctl_hypercall).
   * `strict`: `deviceModelAllowlist` alone, for a QEMU that needs no hypercall (no stdvga, or a
   * toolstack that populates VRAM itself). Both modes allow the tun/tap ioctls (`TAP_IOCTLS`,
   * part of `deviceModelAllowlist`): a DM with a NIC needs them whether or not it hypercalls.
   */
  readonly mode?: XenDeviceModelSeccompMode;
}

export interface XenDeviceModelSeccomp {
  /** Where the program came from, for a printed launch plan. */
  readonly profile: string;
  /** Classic BPF, 8 bytes per instruction, as `seccomp(SECCOMP_SET_MODE_FILTER)` takes it. */
  readonly program: Uint8Array;
  /** The allow-list it was compiled from, for audits of a recorded trace. */
  readonly allowlist: SeccompAllowlist;
}

/** The allow-list of Xen's device model in `mode` (see `XenDeviceModelSeccompOptions`). */
export function xenDeviceModelAllowlist(
  options: XenDeviceModelSeccompOptions = {},
): SeccompAllowlist {
  const mode = options.mode ?? 'init-hypercall';
  if (mode === 'strict') return deviceModelAllowlist;
  if (mode !== 'init-hypercall') {
    throw new PolicyError(
      'BAD_PROFILE',
      '/mode',
      `expected 'init-hypercall' or 'strict', got ${show(mode)}`,
    );
  }
  return {
    ...deviceModelAllowlist,
    ioctls: [...(deviceModelAllowlist.ioctls ?? []), IOCTL_PRIVCMD_HYPERCALL],
  };
}

/**
 * The seccomp program of Xen's QEMU device model: the one function every launch path (jail mode,
 * libxl-compat, the libxl shim) takes its filter from.
 */
export function xenDeviceModelSeccomp(
  options: XenDeviceModelSeccompOptions = {},
): XenDeviceModelSeccomp {
  const allowlist = xenDeviceModelAllowlist(options);
  const strict = allowlist === deviceModelAllowlist;
  return {
    profile: strict
      ? 'privcmd-filter/deviceModelAllowlist'
      : 'privcmd-filter/deviceModelAllowlist+IOCTL_PRIVCMD_HYPERCALL',
    program: compileSeccomp(allowlist),
    allowlist,
  };
}
