// Xen's public/errno.h uses the Linux x86 numbers for every errno DM_OP and privcmd return.
const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: 'EPERM',
  2: 'ENOENT',
  3: 'ESRCH',
  4: 'EINTR',
  5: 'EIO',
  6: 'ENXIO',
  7: 'E2BIG',
  9: 'EBADF',
  11: 'EAGAIN',
  12: 'ENOMEM',
  13: 'EACCES',
  14: 'EFAULT',
  16: 'EBUSY',
  17: 'EEXIST',
  19: 'ENODEV',
  22: 'EINVAL',
  25: 'ENOTTY',
  28: 'ENOSPC',
  34: 'ERANGE',
  38: 'ENOSYS',
  95: 'EOPNOTSUPP',
  107: 'ENOTCONN',
};

/** errno numbers by name, for the errnos DM_OP, privcmd and the model return. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  ENOSPC: 28,
  ERANGE: 34,
  ENOSYS: 38,
  EOPNOTSUPP: 95,
  ENOTCONN: 107,
} as const;

/** The symbolic name of an errno number (`EINVAL`), or `E<number>` when it has none here. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E${errno}`;
}

/** A hypercall or library call refused with an errno, as libxendevicemodel reports it. */
export class XenError extends Error {
  override readonly name = 'XenError';
  /** Positive errno number. */
  readonly errno: number;
  /** Its symbolic name, such as `EINVAL`. */
  readonly code: string;
  /** The call that failed, such as `xendevicemodel_create_ioreq_server`. */
  readonly syscall: string;

  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}: ${code} (errno ${errno})${detail ? `: ${detail}` : ''}`);
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}
