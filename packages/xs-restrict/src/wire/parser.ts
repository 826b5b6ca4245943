/** The one xenstore framer: bytes in, whole messages out, every length checked before it is trusted. */
import { XenstoreWireError, type XsMessage } from './codec.js';
import { XENSTORE_HEADER_SIZE, XENSTORE_PAYLOAD_MAX } from './constants.js';

export interface MessageParserOptions {
  /**
   * Return payloads as views of the chunk they arrived in instead of copies. For a
   * caller that is done with a message before the chunk's memory could matter (the
   * server handles a request before the next read; the proxy forwards it). Default false.
   */
  view?: boolean;
}

const EMPTY = Buffer.alloc(0);

const asBuffer = (b: Uint8Array): Buffer =>
  Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/**
 * Streaming parser: feed it arbitrary chunks, it returns whole messages.
 * Whole messages inside a chunk are taken from it directly; only a message
 * cut by the end of a chunk is held. Its length field is checked against
 * `maxPayload` as soon as its header is complete, before any payload byte is
 * buffered, so memory per parser stays below 16 + maxPayload bytes plus the
 * caller's current chunk. After an oversize length it stays failed.
 */
export class MessageParser {
  readonly maxPayload: number;
  private readonly view: boolean;
  /** A header cut by the end of a chunk; allocated the first time one is (most parsers never). */
  private header = EMPTY;
  private body: Buffer | undefined;
  /** Bytes held for the message cut by the end of the last chunk (header, then payload). */
  private held = 0;
  private failed: XenstoreWireError | undefined;

  constructor(maxPayload: number = XENSTORE_PAYLOAD_MAX, options: MessageParserOptions = {}) {
    this.maxPayload = maxPayload;
    this.view = options.view === true;
  }

  /** Bytes held for an incomplete message. */
  get buffered(): number {
    return this.held;
  }

  /** Parse `chunk`; throws XenstoreWireError (and stays failed) on an oversize length. */
  push(chunk: Uint8Array): XsMessage[] {
    if (this.failed) throw this.failed;
    const buf = asBuffer(chunk);
    const out: XsMessage[] = [];
    let off = this.held > 0 ? this.fill(buf, 0, out) : 0;
    while (buf.length - off >= XENSTORE_HEADER_SIZE) {
      const len = buf.readUInt32LE(off + 12);
      if (len > this.maxPayload) this.fail(len, buf.readUInt32LE(off), buf.readUInt32LE(off + 4));
      const end = off + XENSTORE_HEADER_SIZE + len;
      if (end > buf.length) break;
      const view = buf.subarray(off + XENSTORE_HEADER_SIZE, end);
      out.push({
        type: buf.readUInt32LE(off),
        reqId: buf.readUInt32LE(off + 4),
        txId: buf.readUInt32LE(off + 8),
        payload: this.view ? view : Buffer.from(view),
      });
      off = end;
    }
    if (off < buf.length) this.fill(buf, off, out);
    return out;
  }

  /** Add bytes from `off` to the held message; returns where it stopped (a message completed, or the chunk's end). */
  private fill(buf: Buffer, off: number, out: XsMessage[]): number {
    if (this.held < XENSTORE_HEADER_SIZE) {
      const n = Math.min(XENSTORE_HEADER_SIZE - this.held, buf.length - off);
      if (this.header.length === 0) this.header = Buffer.alloc(XENSTORE_HEADER_SIZE);
      buf.copy(this.header, this.held, off, off + n);
      this.held += n;
      off += n;
      if (this.held < XENSTORE_HEADER_SIZE) return off;
      const len = this.header.readUInt32LE(12);
      if (len > this.maxPayload)
        this.fail(len, this.header.readUInt32LE(0), this.header.readUInt32LE(4));
      this.body = Buffer.allocUnsafe(len);
    }
    const body = this.body as Buffer;
    const got = this.held - XENSTORE_HEADER_SIZE;
    const n = Math.min(body.length - got, buf.length - off);
    buf.copy(body, got, off, off + n);
    this.held += n;
    off += n;
    if (this.held - XENSTORE_HEADER_SIZE === body.length) {
      out.push({
        type: this.header.readUInt32LE(0),
        reqId: this.header.readUInt32LE(4),
        txId: this.header.readUInt32LE(8),
        payload: body,
      });
      this.held = 0;
      this.body = undefined;
    }
    return off;
  }

  private fail(len: number, type: number, reqId: number): never {
    this.held = 0;
    this.body = undefined;
    this.failed = new XenstoreWireError(
      'EPAYLOAD',
      `length field ${len} exceeds the payload limit ${this.maxPayload} (type ${type}, req_id ${reqId})`,
    );
    throw this.failed;
  }
}
