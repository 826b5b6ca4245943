/**
 * The xenstore wire format of Xen 4.17 (`xen/include/public/io/xs_wire.h`):
 * a 16-byte little-endian header `{type, req_id, tx_id, len}` followed by at
 * most XENSTORE_PAYLOAD_MAX bytes. This module is only about bytes.
 */

export const XS_CONTROL = 0;
/** Old name of XS_CONTROL, kept by xs_wire.h. */
export const XS_DEBUG = 0;
export const XS_DIRECTORY = 1;
export const XS_READ = 2;
export const XS_GET_PERMS = 3;
export const XS_WATCH = 4;
export const XS_UNWATCH = 5;
export const XS_TRANSACTION_START = 6;
export const XS_TRANSACTION_END = 7;
export const XS_INTRODUCE = 8;
export const XS_RELEASE = 9;
export const XS_GET_DOMAIN_PATH = 10;
export const XS_WRITE = 11;
export const XS_MKDIR = 12;
export const XS_RM = 13;
export const XS_SET_PERMS = 14;
export const XS_WATCH_EVENT = 15;
export const XS_ERROR = 16;
export const XS_IS_DOMAIN_INTRODUCED = 17;
export const XS_RESUME = 18;
export const XS_SET_TARGET = 19;
/** 20 was XS_RESTRICT; xs_wire.h defines XS_RESET_WATCHES as XS_SET_TARGET + 2. */
export const XS_RESET_WATCHES = 21;
export const XS_DIRECTORY_PART = 22;
export const XS_TYPE_COUNT = 23;
export const XS_INVALID = 0xffff;

/** Message type names as xenstored spells them (`sockmsg_string`), by number. */
export const XS_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'CONTROL',
  1: 'DIRECTORY',
  2: 'READ',
  3: 'GET_PERMS',
  4: 'WATCH',
  5: 'UNWATCH',
  6: 'TRANSACTION_START',
  7: 'TRANSACTION_END',
  8: 'INTRODUCE',
  9: 'RELEASE',
  10: 'GET_DOMAIN_PATH',
  11: 'WRITE',
  12: 'MKDIR',
  13: 'RM',
  14: 'SET_PERMS',
  15: 'WATCH_EVENT',
  16: 'ERROR',
  17: 'IS_DOMAIN_INTRODUCED',
  18: 'RESUME',
  19: 'SET_TARGET',
  21: 'RESET_WATCHES',
  22: 'DIRECTORY_PART',
};

export const XENSTORE_HEADER_SIZE = 16;
export const XENSTORE_PAYLOAD_MAX = 4096;
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

/** The errno names xenstored may send in XS_ERROR, in xs_wire.h's `xsd_errors` order. */
export const XSD_ERRORS = [
  'EINVAL',
  'EACCES',
  'EEXIST',
  'EISDIR',
  'ENOENT',
  'ENOMEM',
  'ENOSPC',
  'EIO',
  'ENOTEMPTY',
  'ENOSYS',
  'EROFS',
  'EBUSY',
  'EAGAIN',
  'EISCONN',
  'E2BIG',
  'EPERM',
] as const;
export type XsErrno = (typeof XSD_ERRORS)[number];

export function isXsErrno(name: string): name is XsErrno {
  return (XSD_ERRORS as readonly string[]).includes(name);
}

export interface XsHeader {
  type: number;
  reqId: number;
  txId: number;
  len: number;
}

export interface XsMessage {
  type: number;
  reqId: number;
  txId: number;
  payload: Buffer;
}

/** A malformed frame or argument; `code` says which rule was broken. */
export class XenstoreWireError extends Error {
  readonly code: 'EPAYLOAD' | 'EFIELD' | 'EPATH' | 'EPERMS';
  constructor(code: XenstoreWireError['code'], message: string) {
    super(message);
    this.name = 'XenstoreWireError';
    this.code = code;
  }
}

function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new XenstoreWireError('EFIELD', `${name}: expected an integer in 0..2^32-1, got ${v}`);
  }
}

/** Encode one message. Throws XenstoreWireError when the payload exceeds XENSTORE_PAYLOAD_MAX. */
export function encodeMessage(
  type: number,
  reqId: number,
  txId: number,
  payload: Uint8Array | string,
): Buffer {
  checkU32('type', type);
  checkU32('reqId', reqId);
  checkU32('txId', txId);
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (body.length > XENSTORE_PAYLOAD_MAX) {
    throw new XenstoreWireError(
      'EPAYLOAD',
      `payload of ${body.length} bytes exceeds XENSTORE_PAYLOAD_MAX (${XENSTORE_PAYLOAD_MAX})`,
    );
  }
  const out = Buffer.allocUnsafe(XENSTORE_HEADER_SIZE + body.length);
  out.writeUInt32LE(type, 0);
  out.writeUInt32LE(reqId, 4);
  out.writeUInt32LE(txId, 8);
  out.writeUInt32LE(body.length, 12);
  out.set(body, XENSTORE_HEADER_SIZE);
  return out;
}

export function decodeHeader(buf: Uint8Array, offset = 0): XsHeader {
  if (buf.length - offset < XENSTORE_HEADER_SIZE) {
    throw new XenstoreWireError('EFIELD', `header needs 16 bytes, got ${buf.length - offset}`);
  }
  const dv = new DataView(buf.buffer, buf.byteOffset + offset, XENSTORE_HEADER_SIZE);
  return {
    type: dv.getUint32(0, true),
    reqId: dv.getUint32(4, true),
    txId: dv.getUint32(8, true),
    len: dv.getUint32(12, true),
  };
}

/**
 * Streaming parser: feed it arbitrary chunks, it returns whole messages.
 * The length field is checked against `maxPayload` as soon as the header is
 * complete, before any payload byte is buffered, so memory per parser stays
 * below 16 + maxPayload bytes plus the caller's current chunk.
 */
export class MessageParser {
  readonly maxPayload: number;
  private header = Buffer.alloc(XENSTORE_HEADER_SIZE);
  private headerUsed = 0;
  private current: XsHeader | undefined;
  private body: Buffer | undefined;
  private bodyUsed = 0;
  private failed: XenstoreWireError | undefined;

  constructor(maxPayload: number = XENSTORE_PAYLOAD_MAX) {
    this.maxPayload = maxPayload;
  }

  /** Bytes held for an incomplete message. */
  get buffered(): number {
    return this.current ? XENSTORE_HEADER_SIZE + this.bodyUsed : this.headerUsed;
  }

  /** Parse `chunk`; throws XenstoreWireError (and stays failed) on an oversize length. */
  push(chunk: Uint8Array): XsMessage[] {
    if (this.failed) throw this.failed;
    const out: XsMessage[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (!this.current) {
        const n = Math.min(XENSTORE_HEADER_SIZE - this.headerUsed, chunk.length - off);
        this.header.set(chunk.subarray(off, off + n), this.headerUsed);
        this.headerUsed += n;
        off += n;
        if (this.headerUsed < XENSTORE_HEADER_SIZE) break;
        const h = decodeHeader(this.header);
        if (h.len > this.maxPayload) {
          this.headerUsed = 0;
          this.failed = new XenstoreWireError(
            'EPAYLOAD',
            `length field ${h.len} exceeds the payload limit ${this.maxPayload} (type ${h.type}, req_id ${h.reqId})`,
          );
          throw this.failed;
        }
        this.current = h;
        this.body = Buffer.allocUnsafe(h.len);
        this.bodyUsed = 0;
      }
      const cur = this.current;
      const body = this.body as Buffer;
      const n = Math.min(cur.len - this.bodyUsed, chunk.length - off);
      body.set(chunk.subarray(off, off + n), this.bodyUsed);
      this.bodyUsed += n;
      off += n;
      if (this.bodyUsed === cur.len) {
        out.push({ type: cur.type, reqId: cur.reqId, txId: cur.txId, payload: body });
        this.current = undefined;
        this.body = undefined;
        this.headerUsed = 0;
      }
    }
    return out;
  }
}

// ---- strings in payloads ----

/** Split a payload into its nul-terminated strings; a trailing unterminated part is dropped, as xenstored's get_strings does. */
export function splitStrings(payload: Uint8Array): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === 0) {
      out.push(Buffer.from(payload.subarray(start, i)).toString('utf8'));
      start = i + 1;
    }
  }
  return out;
}

/** Join strings, each followed by a nul (the DIRECTORY / GET_PERMS / WATCH form). */
export function joinStrings(parts: readonly string[]): Buffer {
  return Buffer.from(parts.map((p) => `${p}\0`).join(''), 'utf8');
}

// ---- paths ----

const VALID_PATH_CHARS = /^[A-Za-z0-9\-/_@]*$/;
const LOCAL_DOMAIN_PREFIX = /^\/local\/domain\/(\d{1,5})\//;

export type PathProblem =
  | 'empty'
  | 'not-absolute'
  | 'trailing-slash'
  | 'double-slash'
  | 'bad-char'
  | 'too-long';

/**
 * Why `path` is not a valid canonical node name per xenstored's
 * is_valid_nodename (starts with `/`, no trailing or double slash, only
 * `[A-Za-z0-9-/_@]`, at most `maxRelLen` bytes after a `/local/domain/N/`
 * prefix, and at most XENSTORE_ABS_PATH_MAX bytes in all), or undefined when
 * it is valid.
 */
export function nodePathProblem(
  path: string,
  maxRelLen: number = XENSTORE_REL_PATH_MAX,
): PathProblem | undefined {
  if (path.length === 0) return 'empty';
  if (!path.startsWith('/')) return 'not-absolute';
  if (path.endsWith('/') && path !== '/') return 'trailing-slash';
  if (path.includes('//')) return 'double-slash';
  const bytes = Buffer.byteLength(path, 'utf8');
  const m = LOCAL_DOMAIN_PREFIX.exec(path);
  const localOff = m ? m[0].length : 0;
  if (bytes > localOff + maxRelLen || bytes > XENSTORE_ABS_PATH_MAX) return 'too-long';
  if (!VALID_PATH_CHARS.test(path)) return 'bad-char';
  return undefined;
}

/** True for the special watch paths (`@introduceDomain`, `@releaseDomain`, any `@…`). */
export function isSpecialPath(path: string): boolean {
  return path.startsWith('@');
}

/** Check a path a client is about to send (absolute, relative or `@special`); throws XenstoreWireError. */
export function checkClientPath(path: string): void {
  if (isSpecialPath(path)) {
    if (Buffer.byteLength(path) > XENSTORE_REL_PATH_MAX) {
      throw new XenstoreWireError(
        'EPATH',
        `special path longer than ${XENSTORE_REL_PATH_MAX} bytes`,
      );
    }
    return;
  }
  const abs = path.startsWith('/') ? path : `/local/domain/0/${path}`;
  const problem = nodePathProblem(abs);
  if (problem)
    throw new XenstoreWireError(
      'EPATH',
      `invalid xenstore path ${JSON.stringify(path)}: ${problem}`,
    );
}

// ---- permissions ----

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
