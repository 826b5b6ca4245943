/** One client of the embedded xenstored (xenstored_core.c struct connection): framing in, replies out. */
import { canonicalPath } from '../rules/paths.js';
import type { Requester } from '../rules/perms.js';
import { MessageWriter, type XsMessage } from '../wire/codec.js';
import {
  XENSTORE_PAYLOAD_MAX,
  XS_ERROR,
  XS_WATCH_EVENT,
  XSD_ERRORS,
  type XsErrno,
} from '../wire/constants.js';
import { type StampedMessage, WatchEventMessage } from '../wire/in-process.js';
import { MessageParser } from '../wire/parser.js';
import type { ServerCore } from './core.js';
import type { XenstoreServer } from './server.js';
import type { Transaction } from './transaction.js';
import type { Watch } from './watch.js';

/** The payloads of XS_ERROR replies, built once. */
const ERROR_PAYLOADS = new Map<string, Buffer>(
  [...XSD_ERRORS].map((e) => [e, Buffer.from(`${e}\0`)]),
);
const OK = Buffer.from('OK\0');

/** A payload as a Buffer (no copy). */
const asBuffer = (b: Uint8Array): Buffer =>
  Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.length);

/**
 * One client of the server. `domid` is who its requests act as: 0 for the
 * dom0 socket, N for domain N's socket (our stand-in for the ring page).
 */
export class XenstoreConnection implements Requester {
  readonly domid: number;
  /** dom0 or the server's privDomid: every right, no quota. */
  readonly privileged: boolean;
  /** Where relative paths point: `/local/domain/<domid>`. */
  readonly home: string;
  readonly watches: Watch[] = [];
  readonly transactions = new Map<number, Transaction>();
  nextTransactionId = 1;
  closed = false;
  private readonly core: ServerCore;
  private readonly parser = new MessageParser(XENSTORE_PAYLOAD_MAX, { view: true });
  private readonly out = new MessageWriter();
  private pendingEvents: string[] = [];
  /** The request being handled: replies copy its req_id and tx_id. */
  private request: XsMessage | undefined;
  /** With a message sink: the replies and events of the requests being handled, as messages. */
  private outMessages: XsMessage[] = [];

  constructor(
    readonly server: XenstoreServer,
    domid: number,
    private readonly sink: (b: Buffer) => boolean,
    private readonly closer: () => void,
    /** Replies and events as messages instead of bytes (XenstoreServer.attachMessages). */
    private readonly messageSink?: (msgs: XsMessage[]) => void,
    /** With a message sink: each reply is stamped with this clock's value as it is queued. */
    private readonly clock?: () => number,
  ) {
    this.domid = domid;
    this.core = server.core;
    this.privileged = !this.core.unprivileged(domid);
    this.home = `/local/domain/${domid}`;
  }

  /** The domain this one is the device model of (XS_SET_TARGET). */
  get target(): number | undefined {
    return this.core.domains.get(this.domid)?.target;
  }

  /** Bytes held for a partial request: at most 16 + XENSTORE_PAYLOAD_MAX. */
  get bufferedBytes(): number {
    return this.parser.buffered;
  }

  /** canonicalize: a relative name is under this connection's home. */
  canonical(name: string): string {
    return canonicalPath(this.home, name);
  }

  /** The request being handled's first string, if its in-process sender decoded it (XsMessage.path). */
  get requestPath(): string | undefined {
    return this.request?.path;
  }

  /** Feed bytes from the peer. A protocol violation closes only this connection. */
  receive(chunk: Uint8Array): void {
    if (this.closed) return;
    let msgs: XsMessage[];
    try {
      msgs = this.parser.push(chunk);
    } catch {
      this.close();
      return;
    }
    this.handleAll(msgs);
  }

  /**
   * @internal Whole requests, already parsed (an in-process peer that trusts its own
   * framing): each is handled as `receive` handles it. A payload over XENSTORE_PAYLOAD_MAX,
   * which no frame could carry, closes the connection as a malformed frame would.
   */
  deliver(msgs: readonly XsMessage[]): void {
    if (msgs.some((m) => m.payload.length > XENSTORE_PAYLOAD_MAX)) this.close();
    else this.handleAll(msgs);
  }

  private handleAll(msgs: readonly XsMessage[]): void {
    for (const m of msgs) {
      if (this.closed) return;
      this.request = m;
      this.server.handle(this, m);
      this.request = undefined;
      // xenstored writes its queue out between requests, so only events of one request merge.
      this.pendingEvents = [];
      // The first reply leaves at once: a pipelining client starts on it while the rest are
      // handled. A polling server with one busy client writes every reply at once, as
      // xenstored's loop does: the client's next requests then overlap the replies (poll.ts).
      if (msgs.length > 1 && !this.messageSink && (m === msgs[0] || this.server.soloPolling(this)))
        this.flush();
    }
    // Otherwise the rest of the replies to one read in one write: pipelined clients cost two
    // syscalls a read, not one per reply.
    this.flush();
  }

  queue(type: number, reqId: number, txId: number, payload: Uint8Array | string): void {
    if (this.messageSink) {
      const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
      const fits = body.length <= XENSTORE_PAYLOAD_MAX;
      const m: StampedMessage = {
        type: fits ? type : XS_ERROR,
        reqId,
        txId,
        payload: fits ? asBuffer(body) : (ERROR_PAYLOADS.get('E2BIG') as Buffer),
        at: this.clock ? this.clock() : -1,
      };
      this.outMessages.push(m);
      return;
    }
    if (!this.out.add(type, reqId, txId, payload))
      this.out.add(XS_ERROR, reqId, txId, ERROR_PAYLOADS.get('E2BIG') as Buffer);
  }

  /** @internal Answer the request being handled; a reply over XENSTORE_PAYLOAD_MAX becomes E2BIG. */
  reply(type: number, payload: Uint8Array | string): void {
    const m = this.request as XsMessage;
    this.queue(type, m.reqId, m.txId, payload);
  }

  /** @internal */
  replyOk(): void {
    const m = this.request as XsMessage;
    this.queue(m.type, m.reqId, m.txId, OK);
  }

  /** @internal xenstored's error reply copies the request's header: same req_id and tx_id. */
  replyError(errno: XsErrno): void {
    const m = this.request as XsMessage;
    this.queue(XS_ERROR, m.reqId, m.txId, ERROR_PAYLOADS.get(errno) ?? Buffer.from(`${errno}\0`));
  }

  queueEvent(path: string, token: string): void {
    const payload = `${path}\0${token}\0`;
    if (Buffer.byteLength(payload) > XENSTORE_PAYLOAD_MAX) return;
    // xenstored drops an event identical to one still queued (send_event): within one request here.
    if (!path.startsWith('@') && this.pendingEvents.includes(payload)) return;
    this.pendingEvents.push(payload);
    if (this.messageSink) this.outMessages.push(new WatchEventMessage(path, token, payload));
    else this.out.add(XS_WATCH_EVENT, 0, 0, payload);
  }

  flush(): void {
    if (this.closed) return;
    if (this.messageSink) {
      const msgs = this.outMessages;
      if (msgs.length === 0) return;
      this.outMessages = [];
      this.pendingEvents = [];
      this.messageSink(msgs);
      return;
    }
    const out = this.out.take();
    if (out === undefined) return;
    this.pendingEvents = [];
    if (!this.sink(out)) this.close();
  }

  /** @internal */
  addWatch(w: Watch): void {
    this.watches.push(w);
    this.core.watchCount++;
  }

  /** @internal Remove the watch on `path` with `token`; false when there is none. */
  removeWatch(path: string, token: string): boolean {
    const i = this.watches.findIndex((w) => w.path === path && w.token === token);
    if (i < 0) return false;
    this.watches.splice(i, 1);
    this.core.watchCount--;
    return true;
  }

  /** @internal XS_RESET_WATCHES, domain_conn_reset and a closed connection. */
  dropWatchesAndTransactions(): void {
    this.core.watchCount -= this.watches.length;
    this.watches.length = 0;
    this.transactions.clear();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.forget(this);
    this.closer();
  }
}
