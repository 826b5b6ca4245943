import { Errno } from '@xen-depriv/dmop-abi';

/** The errno names a decision can carry: dmop-abi's table, the one errno table of the project. */
export type ErrnoCode = keyof typeof Errno;

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
  return { allowed: false, errno: Errno[code], code, reason };
}
