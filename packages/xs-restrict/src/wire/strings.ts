/** Nul-terminated strings in payloads: the only place they are split and joined. */
import type { XsMessage } from './codec.js';
import { XS_ERROR, type XsErrno } from './constants.js';

const asBuffer = (b: Uint8Array): Buffer =>
  Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/**
 * Split a payload into its nul-terminated strings. A trailing unterminated part is dropped, as
 * xenstored's get_strings does, unless `keepTail` (a client reading a reply keeps what it got).
 */
export function splitStrings(payload: Uint8Array, keepTail = false): string[] {
  const p = asBuffer(payload);
  const out: string[] = [];
  let start = 0;
  for (let i = p.indexOf(0); i >= 0; i = p.indexOf(0, start)) {
    out.push(p.toString('utf8', start, i));
    start = i + 1;
  }
  if (keepTail && start < p.length) out.push(p.toString('utf8', start));
  return out;
}

/** Join strings, each followed by a nul (the DIRECTORY / GET_PERMS / WATCH form). */
export function joinStrings(parts: readonly string[]): Buffer {
  return Buffer.from(nulTerminated(parts), 'utf8');
}

/** The same as a string: each part followed by a nul. */
export function nulTerminated(parts: readonly string[]): string {
  let s = '';
  for (const p of parts) s += `${p}\0`;
  return s;
}

/** How many nuls `p` holds (xenstored's get_string count). */
export function countNul(p: Uint8Array): number {
  let n = 0;
  for (let i = p.indexOf(0); i >= 0; i = p.indexOf(0, i + 1)) n++;
  return n;
}

/**
 * onearg: the argument when the payload is exactly one string and its nul; else undefined.
 * `decoded`: that string, if the caller has it already (XsMessage.path).
 */
export function oneArg(p: Buffer, decoded?: string): string | undefined {
  return p.length > 0 && p.indexOf(0) === p.length - 1
    ? (decoded ?? p.toString('utf8', 0, p.length - 1))
    : undefined;
}

/** The first nul-terminated string, or the whole payload when it has no nul. */
export function firstString(p: Buffer): string {
  const z = p.indexOf(0);
  return p.toString('utf8', 0, z < 0 ? p.length : z);
}

/** The errno name of an XS_ERROR reply, or undefined for any other reply. */
export function errnoOf(m: XsMessage): XsErrno | undefined {
  if (m.type !== XS_ERROR) return undefined;
  return firstString(m.payload) as XsErrno;
}
