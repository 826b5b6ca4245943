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
