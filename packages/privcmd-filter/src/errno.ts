/** Linux x86-64 errno values the kernel's privcmd/evtchn handlers return (include/uapi/asm-generic/errno-base.h, errno.h). */
export const LINUX_ERRNO = {
  EPERM: 1,
  E2BIG: 7,
  EBADF: 9,
  EACCES: 13,
  EFAULT: 14,
  EINVAL: 22,
  ENOTTY: 25,
  ENOSYS: 38,
  ENOTCONN: 107,
} as const;

export type ErrnoCode = keyof typeof LINUX_ERRNO;

/** The outcome of one check: `errno` is 0 when allowed, else the positive errno the kernel (or policy) returns. */
export interface Decision {
  readonly allowed: boolean;
  readonly errno: number;
  readonly code: ErrnoCode | 'OK';
  readonly reason: string;
}

export function allow(reason: string): Decision {
  return { allowed: true, errno: 0, code: 'OK', reason };
}

export function deny(code: ErrnoCode, reason: string): Decision {
  return { allowed: false, errno: LINUX_ERRNO[code], code, reason };
}
