import net from 'node:net';
import {
  encodeMessage,
  MessageParser,
  nulTerminated,
  XS_TYPE_NAMES,
  type XsMessage,
} from '../../src/wire/index.js';

/** Strings, each followed by a nul: a request payload. */
export const z = (...s: string[]): string => nulTerminated(s);

/** A bare xenstore connection for tests: sends exact bytes, records exact replies. */
export class RawConn {
  readonly received: XsMessage[] = [];
  private parser = new MessageParser();
  private waiter: (() => void) | undefined;
  closed = false;
  readonly closedPromise: Promise<void>;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d) => {
      for (const m of this.parser.push(d)) this.received.push(m);
      this.waiter?.();
    });
    this.closedPromise = new Promise((resolve) => {
      sock.on('close', () => {
        this.closed = true;
        this.waiter?.();
        resolve();
      });
    });
    sock.on('error', () => undefined);
  }

  static async open(path: string): Promise<RawConn> {
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    return new RawConn(sock);
  }

  send(type: number, reqId: number, txId: number, payload: Buffer | string): void {
    this.sock.write(encodeMessage(type, reqId, txId, payload));
  }

  sendRaw(b: Uint8Array): void {
    this.sock.write(b);
  }

  /** Take every message received up to and including the first one `pred` accepts. */
  async until(
    pred: (m: XsMessage) => boolean,
    what = 'a reply',
    waitMs = 10000,
  ): Promise<XsMessage[]> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const i = this.received.findIndex(pred);
      if (i >= 0) return this.received.splice(0, i + 1);
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `no ${what} within ${waitMs} ms; received: ${this.received.map(show).join(' | ')}`,
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

/** One message as a line: every header field and the payload bytes (latin1 is lossless), for byte-exact diffs. */
export function show(m: XsMessage): string {
  const name = XS_TYPE_NAMES[m.type] ?? `type${m.type}`;
  return `${name} req=${m.reqId} tx=${m.txId} ${JSON.stringify(m.payload.toString('latin1'))}`;
}
