/** Permission strings as xs_wire.h and libxenstore spell them (`n0`, `r5`, `b0x10`). */
import { XenstoreWireError } from './codec.js';

export type XsPermKind = 'n' | 'r' | 'w' | 'b';

/** One entry of a node's permission list; the first entry names the owner and the default for everyone else. */
export interface XsPerm {
  domid: number;
  perm: XsPermKind;
}

export const XS_PERM_NONE = 0;
export const XS_PERM_READ = 1;
export const XS_PERM_WRITE = 2;
export const XS_PERM_OWNER = 8;

export function permBits(kind: XsPermKind): number {
  switch (kind) {
    case 'n':
      return XS_PERM_NONE;
    case 'r':
      return XS_PERM_READ;
    case 'w':
      return XS_PERM_WRITE;
    case 'b':
      return XS_PERM_READ | XS_PERM_WRITE;
  }
}

export function formatPerm(p: XsPerm): string {
  return `${p.perm}${p.domid >>> 0}`;
}

/**
 * Parse one permission string (`r5`). Follows xs_strings_to_perms: a kind
 * letter, then a number as strtol(…, 0) reads it (decimal, 0x hex, 0 octal),
 * truncated to 32 bits.
 */
export function parsePerm(s: string): XsPerm {
  const kind = s[0];
  if (kind !== 'n' && kind !== 'r' && kind !== 'w' && kind !== 'b') {
    throw new XenstoreWireError(
      'EPERMS',
      `permission ${JSON.stringify(s)}: expected n, r, w or b first`,
    );
  }
  const num = s.slice(1);
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(num);
  if (!m || m[2] === undefined) {
    throw new XenstoreWireError(
      'EPERMS',
      `permission ${JSON.stringify(s)}: expected a domid after the letter`,
    );
  }
  const digits = m[2];
  let v: bigint;
  if (/^0[xX]/.test(digits)) v = BigInt(digits);
  else if (digits.length > 1 && digits.startsWith('0')) v = BigInt(`0o${digits.slice(1)}`);
  else v = BigInt(digits);
  if (m[1] === '-') v = -v;
  // strtol saturates at LONG_MAX/LONG_MIN (64-bit); the result is stored in an unsigned int.
  const LONG_MAX = (1n << 63n) - 1n;
  if (v > LONG_MAX) v = LONG_MAX;
  if (v < -LONG_MAX - 1n) v = -LONG_MAX - 1n;
  return { perm: kind, domid: Number(BigInt.asUintN(32, v)) };
}

export function formatPerms(perms: readonly XsPerm[]): string[] {
  return perms.map(formatPerm);
}

export function parsePerms(strings: readonly string[]): XsPerm[] {
  if (strings.length === 0)
    throw new XenstoreWireError('EPERMS', 'permission list: expected at least the owner entry');
  return strings.map(parsePerm);
}
