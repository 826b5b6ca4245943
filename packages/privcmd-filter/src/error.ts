/** What kind of input was refused. */
export type PolicyErrorCode =
  | 'UNKNOWN_SYSCALL'
  | 'BAD_ACTION'
  | 'BAD_IOCTL'
  | 'PROGRAM_TOO_LONG'
  | 'BAD_PROGRAM'
  | 'BAD_PROFILE'
  | 'BAD_TRACE';

import { Errno } from '@xen-depriv/dmop-abi';

/**
 * Invalid input to a compiler, profile validator or trace parser: says what was expected and what
 * was seen. Like every error of this package and dmop-abi it has a `code` and a numeric `errno`
 * (EINVAL: the input is refused as invalid).
 */
export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  readonly code: PolicyErrorCode;
  readonly errno: number = Errno.EINVAL;
  /** Where in the input, as a JSON-pointer-like path ("/ops/inject_msi/msiAddress") or an offset. */
  readonly where: string;
  constructor(code: PolicyErrorCode, where: string, message: string) {
    super(`${where}: ${message}`);
    this.code = code;
    this.where = where;
  }
}

/** Prints a seen value for an error message; never throws (bigints, cycles). */
export function show(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  try {
    const s = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));
    return s === undefined ? String(value) : s.length > 120 ? `${s.slice(0, 117)}...` : s;
  } catch {
    return String(value);
  }
}
