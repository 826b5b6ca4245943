/**
 * The privileged session's dom0 connection to the daemon: requests out with
 * our own req_ids, replies matched in order, watch events handed on in the
 * order the daemon sent them, and the daemon's transaction ids predicted so a
 * transaction of ours and its first requests go out in one write.
 */
import { checkPayloadLength, encodeMessage, type XsMessage } from '../../wire/codec.js';
import {
  XS_TRANSACTION_END,
  XS_TRANSACTION_START,
  XS_WATCH,
  XS_WATCH_EVENT,
} from '../../wire/constants.js';
import { type StampedMessage, WatchEventMessage } from '../../wire/in-process.js';
import { MessageParser } from '../../wire/parser.js';
import { errnoOf } from '../../wire/strings.js';
import { Fail, LinkClosed, type PrivilegedLink, type Req } from './book.js';
import { CACHE_WATCH_PATHS, type PermsCache } from './perms-cache.js';

interface Pending {
  type: number;
  resolve: (m: XsMessage) => void;
  reject: (e: unknown) => void;
  /** A request of the session's own (the perms cache's watches): its initial event is not a client's. */
  internal?: boolean;
  /** A callNow request: its reply arrives now, so its arrival needs no record. */
  now?: boolean;
}

export class Dom0Channel {
  private readonly link: PrivilegedLink;
  private readonly upParser = new MessageParser(undefined, { view: true });
  private readonly pending: Pending[] = [];
  private nextReq = 1;
  /** Upstream transaction ids in use, and the daemon's next_transaction_id, to predict the next id. */
  private readonly upTx = new Set<number>();
  private nextUpTx = 1;
  private initialNext = false;
  private readonly inbox: XsMessage[] = [];
  private deferred = false;
  private closed = false;
  /** When each reply arrived, on the perms cache's clock. */
  private readonly arrivals = new WeakMap<XsMessage, number>();
  /** The cache's token as the bytes that end its events' payloads. */
  private readonly cacheTail: Buffer;
  /** Where the replies of the callNow under way go (one at a time: it returns before the next). */
  private nowReplies: XsMessage[] = [];
  private nowLost: unknown;
  /** Called with each reply of the callNow under way as it arrives (between the events before and after it). */
  private nowEach: ((m: XsMessage) => void) | undefined;
  private readonly nowResolve = (m: XsMessage): void => {
    this.nowReplies.push(m);
    this.nowEach?.(m);
  };
  private readonly nowReject = (e: unknown): void => {
    this.nowLost = e;
  };

  constructor(
    open: (
      onData: (b: Buffer) => void,
      onClose: () => void,
      onMessages: (msgs: XsMessage[]) => void,
    ) => PrivilegedLink,
    /** A watch event; `initial` for the one xenstored queues right behind a WATCH reply. */
    private readonly onEvent: (m: XsMessage, initial: boolean) => void,
    private readonly onClosed: () => void,
    /** Kept exact by this link's events (see perms-cache.ts). */
    readonly cache: PermsCache,
  ) {
    this.cacheTail = Buffer.from(`\0${cache.token}\0`);
    this.link = open(
      (b) => this.fromLink(b),
      () => this.onClosed(),
      (msgs) => this.fromMessages(msgs),
    );
  }

  /** What encodeMessage refuses, refused before anything is sent or awaited. */
  private static check(reqs: readonly Req[]): void {
    for (const [, , payload] of reqs)
      checkPayloadLength(typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length);
  }

  /** `reqs` to the daemon in one write (or one `send` of messages), with our next req_ids. */
  private transmit(reqs: readonly Req[]): void {
    if (this.link.send) {
      this.link.send(
        reqs.map(([type, tx, payload, path]) => ({
          type,
          reqId: this.nextReq++ >>> 0,
          txId: tx,
          payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
          path,
        })),
      );
      return;
    }
    const bufs = reqs.map(([type, tx, payload]) =>
      encodeMessage(type, this.nextReq++ >>> 0, tx, payload),
    );
    this.link.write(bufs.length === 1 ? (bufs[0] as Buffer) : Buffer.concat(bufs));
  }

  /** Called when a reply came where a WATCH reply's first event was expected (see drainInbox). */
  onNoInitial: (() => void) | undefined;

  /** A client's WATCH reply has come and its first event not yet: the next event is that one. */
  get initialPending(): boolean {
    return this.initialNext;
  }

  /** Requests sent in one write are handled as one step by the daemon (see PrivilegedLink). */
  get atomicWrites(): boolean {
    return this.link.atomicWrites === true;
  }

  /**
   * The daemon answers a write before `write` returns (an embedded server in process), nothing
   * of ours is in flight and every event it sent has been taken in: `callNow` may be used, and
   * the perms cache holds the daemon's state as of now.
   */
  get synchronous(): boolean {
    return (
      this.link.atomicWrites === true &&
      !this.closed &&
      this.pending.length === 0 &&
      this.inbox.length === 0
    );
  }

  /**
   * `call` on a synchronous link: the replies, there on return. Nothing else runs between the
   * daemon's handling of these requests and what the caller does with the replies, so a decision
   * made on them is still true when the next `callNow` acts on it, and the replies' arrival on
   * the perms cache's clock is `cache.now` (a change they make fires its event before the reply).
   */
  callNow(reqs: readonly Req[], each?: (m: XsMessage) => void, internal = false): XsMessage[] {
    Dom0Channel.check(reqs);
    const replies: XsMessage[] = [];
    this.nowReplies = replies;
    this.nowEach = each;
    this.nowLost = undefined;
    for (const [type] of reqs)
      this.pending.push({
        type,
        resolve: this.nowResolve,
        reject: this.nowReject,
        now: true,
        internal,
      });
    this.transmit(reqs);
    const lost = this.nowLost;
    this.nowReplies = [];
    this.nowEach = undefined;
    this.nowLost = undefined;
    if (lost !== undefined) throw lost;
    if (replies.length !== reqs.length) {
      // Only a link that broke its atomicWrites promise gets here: nothing can be decided on it,
      // so it is closed, and the client with it (upstream-closed), rather than left waiting.
      this.link.end();
      this.fail();
      this.onClosed();
      throw new LinkClosed();
    }
    return replies;
  }

  /** Close the link; every call still waiting fails with LinkClosed. */
  end(): void {
    this.link.end();
    this.fail();
  }

  /** The link is gone: fail every call still waiting. */
  fail(): void {
    this.closed = true;
    for (const p of this.pending.splice(0)) p.reject(new LinkClosed());
  }

  /** XS_RESET_WATCHES also ended the daemon's transactions on this connection. */
  forgetTransactions(): void {
    this.upTx.clear();
  }

  /** When the reply `m` arrived, on the perms cache's clock. */
  arrivedAt(m: XsMessage): number {
    return this.arrivals.get(m) ?? -1;
  }

  /** Set (again) the dom0 watches that keep the perms cache exact. */
  async watchForCache(): Promise<void> {
    const reqs = CACHE_WATCH_PATHS.map((p): Req => [XS_WATCH, 0, `${p}\0${this.cache.token}\0`]);
    if (this.synchronous) {
      // Their first events (cache events, counted as they come) follow the replies at once.
      const replies = this.callNow(reqs, undefined, true);
      if (replies.every((r) => r.type === XS_WATCH)) this.cache.watchingFrom(this.cache.now);
      return;
    }
    const replies = await Promise.all(this.call(reqs, true));
    if (replies.every((r) => r.type === XS_WATCH))
      this.cache.watchingFrom(this.arrivedAt(replies[replies.length - 1] as XsMessage));
  }

  /** An event of the cache's watches: its payload ends with the cache's token. */
  private cacheEventPath(m: XsMessage): string | undefined {
    if (m instanceof WatchEventMessage) return m.token === this.cache.token ? m.path : undefined;
    const p = m.payload;
    const tail = this.cacheTail;
    if (p.length < tail.length || p.compare(tail, 0, tail.length, p.length - tail.length) !== 0)
      return undefined;
    return p.toString('utf8', 0, p.length - tail.length);
  }

  call(reqs: readonly Req[], internal = false): Promise<XsMessage>[] {
    if (this.closed)
      return reqs.map(() => {
        const p = Promise.reject(new LinkClosed());
        p.catch(() => undefined);
        return p;
      });
    Dom0Channel.check(reqs);
    const promises = reqs.map(([type]) => {
      const p = new Promise<XsMessage>((resolve, reject) =>
        this.pending.push({ type, resolve, reject, internal }),
      );
      // A lost link rejects every pending call; those nobody awaits any more must not surface.
      p.catch(() => undefined);
      return p;
    });
    this.transmit(reqs);
    return promises;
  }

  one(type: number, tx: number, payload: Buffer | string): Promise<XsMessage> {
    return this.call([[type, tx, payload]])[0] as Promise<XsMessage>;
  }

  private fromLink(chunk: Buffer): void {
    let msgs: XsMessage[];
    try {
      msgs = this.upParser.push(chunk);
    } catch {
      this.link.end();
      this.onClosed();
      return;
    }
    this.fromMessages(msgs);
  }

  private fromMessages(msgs: readonly XsMessage[]): void {
    // The common case of another connection's write: one event of the cache's watches, nothing
    // waiting before it. It counts at once, as drainInbox would count it.
    if (msgs.length === 1 && this.inbox.length === 0 && !this.closed) {
      const changed = this.cacheEventPath(msgs[0] as XsMessage);
      if (changed !== undefined) {
        this.cache.changed(changed);
        return;
      }
    }
    for (const m of msgs) this.inbox.push(m);
    if (!this.deferred) this.drainInbox();
  }

  /**
   * Take in now the events held back behind replies (drainInbox). For a client's request as it
   * arrives: a new task, so the handlers those replies resolved have run, and the events the
   * daemon sent before them must reach the client ahead of this request's reply (a reply the
   * session gives without the daemon, such as EEXIST for a watch it has, could overtake them).
   */
  catchUp(): void {
    if (this.deferred && !this.closed) this.drainInbox();
  }

  /**
   * Replies resolve the handlers waiting for them; an event that follows a
   * reply waits until the handlers have run (setImmediate comes after every
   * pending promise job), so a reply they complete is queued before it, as
   * the daemon sent them.
   */
  private drainInbox(): void {
    this.deferred = false;
    let resolved = false;
    for (;;) {
      const m = this.inbox[0];
      if (!m || this.closed) return;
      if (m.type === XS_WATCH_EVENT) {
        // The cache's events count at once, in the order they came with the replies.
        const changed = this.cacheEventPath(m);
        if (changed !== undefined) {
          this.inbox.shift();
          this.cache.changed(changed);
          continue;
        }
      }
      if (m.type === XS_WATCH_EVENT && resolved) {
        this.deferred = true;
        setImmediate(() => this.drainInbox());
        return;
      }
      this.inbox.shift();
      if (m.type === XS_WATCH_EVENT) {
        const initial = this.initialNext;
        this.initialNext = false;
        this.onEvent(m, initial);
        continue;
      }
      if (this.initialNext) {
        // A reply where a watch's first event belonged (no xenstored does this): release its place.
        this.initialNext = false;
        this.onNoInitial?.();
      }
      const p = this.pending.shift();
      if (!p) continue;
      if (p.type === XS_TRANSACTION_START && m.type === XS_TRANSACTION_START) {
        const id = Number.parseInt(m.payload.toString('latin1'), 10);
        this.upTx.add(id);
        this.nextUpTx = (id + 1) >>> 0;
      }
      // xenstored queues a watch's first event right behind the WATCH reply: that one is unconditional.
      if (p.type === XS_WATCH && m.type === XS_WATCH && !p.internal) this.initialNext = true;
      // A reply stamped as the daemon queued it (an in-process server, shared-cache.ts) arrived then.
      const at = (m as Partial<StampedMessage>).at;
      if (!p.now) this.arrivals.set(m, at !== undefined && at >= 0 ? at : this.cache.now);
      p.resolve(m);
      // A callNow reply is placed in the client's output as it arrives: what follows need not wait.
      if (!p.now) resolved = true;
    }
  }

  /** The id the daemon will give our next transaction (do_transaction_start's search). */
  private predictTx(): number {
    let id = this.nextUpTx;
    while (id === 0 || this.upTx.has(id)) id = (id + 1) >>> 0;
    return id;
  }

  endTx(up: number, commit: boolean): Promise<XsMessage> {
    this.upTx.delete(up);
    return this.one(XS_TRANSACTION_END, up, commit ? 'T\0' : 'F\0');
  }

  /** End a transaction of ours without waiting for, or caring about, the answer. */
  abandonTx(up: number): void {
    void this.endTx(up, false).catch(() => undefined);
  }

  /** Start a transaction of ours and send `reqs` in it, in one write (the id is predicted). */
  async begin(reqs: (tx: number) => Req[]): Promise<{ tx: number; replies: XsMessage[] }> {
    for (;;) {
      const guess = this.predictTx();
      const [start, ...rest] = this.call([[XS_TRANSACTION_START, 0, '\0'], ...reqs(guess)]);
      const s = await (start as Promise<XsMessage>);
      const replies = await Promise.all(rest);
      if (s.type !== XS_TRANSACTION_START) throw new Fail(errnoOf(s) ?? 'EIO');
      const id = Number.parseInt(s.payload.toString('latin1'), 10);
      if (id === guess) return { tx: id, replies };
      this.abandonTx(id);
    }
  }
}
