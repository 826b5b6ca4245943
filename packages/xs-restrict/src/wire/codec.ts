/** Encoding one message and reading a header: only bytes (xs_wire.h `struct xsd_sockmsg`). */
import { XENSTORE_HEADER_SIZE, XENSTORE_PAYLOAD_MAX } from './constants.js';

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
  /**
   * @internal A request's first string, already decoded by an in-process peer (the proxy's
   * decide()), so that the privileged session's perms cache and an embedded server do not
   * decode it again: exactly the UTF-8 decoding of the payload's bytes before its first nul.
   * Never set by the parser.
   */
  path?: string | undefined;
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

/** @internal Throws XenstoreWireError (EPAYLOAD) for a payload of `length` bytes over XENSTORE_PAYLOAD_MAX. */
export function checkPayloadLength(length: number): void {
  if (length > XENSTORE_PAYLOAD_MAX) {
    throw new XenstoreWireError(
      'EPAYLOAD',
      `payload of ${length} bytes exceeds XENSTORE_PAYLOAD_MAX (${XENSTORE_PAYLOAD_MAX})`,
    );
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
  const text = typeof payload === 'string';
  const len = text ? Buffer.byteLength(payload, 'utf8') : payload.length;
  checkPayloadLength(len);
  const out = Buffer.allocUnsafe(XENSTORE_HEADER_SIZE + len);
  writeHeader(out, 0, type, reqId, txId, len);
  // A string is encoded straight after the header: no intermediate buffer.
  if (text) out.write(payload, XENSTORE_HEADER_SIZE, 'utf8');
  else out.set(payload, XENSTORE_HEADER_SIZE);
  return out;
}

/** struct xsd_sockmsg at `off`: type, req_id, tx_id, len, each a little-endian uint32. */
function writeHeader(
  out: Buffer,
  off: number,
  type: number,
  reqId: number,
  txId: number,
  len: number,
): void {
  out.writeUInt32LE(type, off);
  out.writeUInt32LE(reqId, off + 4);
  out.writeUInt32LE(txId, off + 8);
  out.writeUInt32LE(len, off + 12);
}

/**
 * Messages written back to back into one reusable buffer, taken out as one
 * Buffer: a reply costs no allocation of its own, and the replies to one read
 * leave in one write. The caller keeps payloads within XENSTORE_PAYLOAD_MAX
 * (`add` checks) and header fields within 32 bits (its own request's).
 */
const EMPTY = Buffer.alloc(0);
/** A writer's first buffer: four largest messages. */
const WRITER_INITIAL = 4 * (XENSTORE_HEADER_SIZE + XENSTORE_PAYLOAD_MAX);

export class MessageWriter {
  /** Allocated at the first message: a connection that never writes bytes (one in process) has none. */
  private buf = EMPTY;
  private used = 0;

  /** Bytes written and not yet taken. */
  get length(): number {
    return this.used;
  }

  /** Append one message; false (nothing written) when the payload exceeds XENSTORE_PAYLOAD_MAX. */
  add(type: number, reqId: number, txId: number, payload: Uint8Array | string): boolean {
    const len = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
    if (len > XENSTORE_PAYLOAD_MAX) return false;
    const need = this.used + XENSTORE_HEADER_SIZE + len;
    if (need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.buf.length, WRITER_INITIAL));
      this.buf.copy(grown, 0, 0, this.used);
      this.buf = grown;
    }
    writeHeader(this.buf, this.used, type, reqId, txId, len);
    if (typeof payload === 'string') this.buf.write(payload, this.used + XENSTORE_HEADER_SIZE);
    else this.buf.set(payload, this.used + XENSTORE_HEADER_SIZE);
    this.used = need;
    return true;
  }

  /** What was written, as a Buffer of its own (the writer's buffer is reused); undefined when empty. */
  take(): Buffer | undefined {
    if (this.used === 0) return undefined;
    const out = Buffer.allocUnsafe(this.used);
    this.buf.copy(out, 0, 0, this.used);
    this.used = 0;
    return out;
  }
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
