/**
 * The proxy's privileged upstream mode: one connection to the daemon as dom0
 * (the only way in on a real host is `/run/xenstored/socket`), on which the
 * proxy itself decides every request as C xenstored 4.17 decides it for an
 * unprivileged domain N (the rules of ../../rules: get_node /
 * errno_from_parents, construct_node, do_set_perms, watch_permitted and the
 * special-event check, the quotas), so a client sees the bytes a domain-N
 * connection would get. Reads and watches are here; changes (and rm) in writes.ts.
 */
import { permFor, type Requester } from '../../rules/perms.js';
import { transactionQuotaErrno, watchQuotaErrno } from '../../rules/quotas.js';
import { encodeMessage, type XsMessage } from '../../wire/codec.js';
import {
  XS_DIRECTORY,
  XS_DIRECTORY_PART,
  XS_ERROR,
  XS_GET_DOMAIN_PATH,
  XS_GET_PERMS,
  XS_MKDIR,
  XS_READ,
  XS_RESET_WATCHES,
  XS_RM,
  XS_SET_PERMS,
  XS_TRANSACTION_END,
  XS_TRANSACTION_START,
  XS_UNWATCH,
  XS_WATCH,
  XS_WRITE,
} from '../../wire/constants.js';
import { MessageParser } from '../../wire/parser.js';
import { XS_PERM_READ } from '../../wire/perms.js';
import { countNul, errnoOf, nulTerminated, oneArg, splitStrings } from '../../wire/strings.js';
import { getNode, type SessionContext } from './access.js';
import {
  type DomainBook,
  errReply,
  Fail,
  LinkClosed,
  newVirtualTx,
  type PrivilegedLink,
  type Req,
  relayReply,
  type VirtualTx,
} from './book.js';
import { Dom0Channel } from './channel.js';
import { answerNow, runNow } from './in-step.js';
import { SessionOutput, type WatchedPath } from './output.js';
import { PermsCache } from './perms-cache.js';
import { commit, rmOp, setPermsOp, settle, writeOp } from './writes.js';

/**
 * One client's emulated domain-N connection over a dom0 connection. It takes
 * the requests the proxy let through (absolute paths) and produces, in
 * order, the replies and watch events domain N would get.
 */
/** Most pipelined reads sent to the daemon together. */
const READ_BATCH_MAX = 64;

export class PrivilegedSession implements SessionContext {
  /** @internal */
  readonly chan: Dom0Channel;
  /** @internal */
  readonly out: SessionOutput;
  /** @internal */
  readonly who: Requester;
  /** @internal The session's own, or the proxy's shared one (shared-cache.ts). */
  readonly cache: PermsCache;
  private readonly parser = new MessageParser(undefined, { view: true });
  private readonly queue: XsMessage[] = [];
  private busy = false;
  /** The next reply placed in step is the first to a client's read of several requests. */
  private firstOfRead = false;
  private readonly vtx = new Map<number, VirtualTx>();
  private nextVtx = 1;
  /** Watches as registered upstream (absolute path, token). */
  private readonly watches: WatchedPath[] = [];
  private closed = false;

  constructor(
    readonly book: DomainBook,
    open: (
      onData: (b: Buffer) => void,
      onClose: () => void,
      onMessages: (msgs: XsMessage[]) => void,
    ) => PrivilegedLink,
    emit: (b: Buffer) => void,
    private readonly onClose: () => void,
    onOverflow: (detail: string) => void = () => undefined,
    /** Kept exact by the proxy's own link to an in-process server: no watches of the session's. */
    private readonly sharedCache?: PermsCache,
  ) {
    this.cache = sharedCache ?? new PermsCache();
    this.who = { domid: book.domid, target: undefined, privileged: false };
    this.chan = new Dom0Channel(
      open,
      (m, initial) => this.out.event(m, initial),
      () => this.linkClosed(),
      this.cache,
    );
    if (!sharedCache) void this.chan.watchForCache().catch(() => undefined);
    this.out = new SessionOutput(
      this.who,
      this.chan,
      this.watches,
      emit,
      onOverflow,
      () => this.isClosed(),
      book,
    );
    this.chan.onNoInitial = () => this.out.noInitial();
  }

  isClosed(): boolean {
    return this.closed;
  }

  /** Requests from the proxy (whole messages, already allowed). */
  write(b: Buffer): void {
    this.submit(this.parser.push(b));
  }

  /** The same, parsed. */
  submit(msgs: readonly XsMessage[]): void {
    if (this.closed) return;
    if (msgs.length > 1 && this.queue.length === 0) this.firstOfRead = true;
    for (const m of msgs) this.queue.push(m);
    if (!this.busy) void this.run();
  }

  /** A client's request arrived: see Dom0Channel.catchUp. */
  catchUp(): void {
    if (!this.closed) this.chan.catchUp();
  }

  /** Output the client is owed and has not got (a refusal of the proxy's must wait behind it). */
  owes(): boolean {
    return !this.closed && this.out.owed > 0;
  }

  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.book.watches -= this.watches.length;
    this.watches.length = 0;
    this.chan.end();
  }

  private linkClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.book.watches -= this.watches.length;
    this.watches.length = 0;
    this.chan.fail();
    this.onClose();
  }

  private async run(): Promise<void> {
    this.busy = true;
    try {
      for (;;) {
        if (this.chan.synchronous && this.queue.length > 0) {
          const n = this.inStep(() => runNow(this, this.queue, this.placeReply));
          if (n === null) return;
          if (n > 0) {
            this.queue.splice(0, n);
            continue;
          }
          const first = this.queue[0] as XsMessage;
          if (first.type === XS_WATCH) {
            const done = this.inStep(() => this.watchNow(first));
            if (done === null) return;
            if (done) {
              this.queue.shift();
              continue;
            }
          }
          const reply = this.inStep(() => answerNow(this, first));
          if (reply === null) return;
          if (reply) {
            this.queue.shift();
            this.placeReply(reply);
            continue;
          }
        }
        this.firstOfRead = false;
        this.out.flush();
        const batch = this.cachedReads();
        if (batch.length > 1) {
          if (!(await this.readBatch(batch))) return;
          continue;
        }
        const m = batch[0] ?? this.queue.shift();
        if (!m) break;
        const reply = await this.answer(m);
        if (reply === undefined) return;
        if (reply === null) this.out.flush();
        else this.out.reply(reply);
      }
    } finally {
      this.firstOfRead = false;
      this.out.flush();
      this.busy = false;
    }
  }

  /**
   * A reply decided in step: held for the one write of the client's read, but the first of a
   * read of several leaves at once, so a pipelining client starts on it while the rest are
   * decided (as the embedded server writes its replies).
   */
  private readonly placeReply = (b: Buffer): void => {
    const first = this.firstOfRead;
    this.firstOfRead = false;
    this.out.reply(b, !first);
  };

  /** What in-step.ts's `f` gives, or null once the link is gone. */
  private inStep<T>(f: () => T): T | null {
    try {
      return f();
    } catch (e) {
      if (e instanceof LinkClosed || this.closed) return null;
      throw e;
    }
  }

  /** The reply to `m` (null: placed already); undefined once the link is gone. */
  private async answer(m: XsMessage): Promise<Buffer | null | undefined> {
    try {
      return await this.handle(m);
    } catch (e) {
      if (e instanceof LinkClosed || this.closed) return undefined;
      return errReply(m, e instanceof Fail ? e.errno : 'EIO');
    }
  }

  /** The queue's leading run of plain reads the perms cache shows readable (at most READ_BATCH_MAX). */
  private cachedReads(): XsMessage[] {
    const batch: XsMessage[] = [];
    while (batch.length < READ_BATCH_MAX) {
      const m = this.queue[0];
      if (m?.txId !== 0) break;
      if (m.type !== XS_READ && m.type !== XS_DIRECTORY && m.type !== XS_GET_PERMS) break;
      const path = oneArg(m.payload);
      const known = path === undefined ? undefined : this.cache.get(path);
      if (!known || (permFor(this.who, known.perms) & XS_PERM_READ) === 0) break;
      batch.push(m);
      this.queue.shift();
    }
    return batch;
  }

  /**
   * Pipelined reads the cache can decide, sent in one write. Each reply is N's
   * if its node did not change before the reply came; from the first one that
   * may have, that read and every later one are decided anew, in order (a
   * read must not see an older state than a read the client sent before it).
   * False once the link is gone.
   */
  private async readBatch(batch: XsMessage[]): Promise<boolean> {
    const at = batch.map((m) => this.cache.get(oneArg(m.payload) as string)?.at ?? -1);
    const replies = await Promise.all(
      this.chan.call(batch.map((m): Req => [m.type, 0, m.payload])),
    ).catch(() => undefined);
    if (!replies) return false;
    for (let i = 0; i < batch.length; i++) {
      const m = batch[i] as XsMessage;
      const r = replies[i] as XsMessage;
      const path = oneArg(m.payload) as string;
      if (r.type !== XS_ERROR && this.cache.unchangedSince(path, at[i] as number)) {
        this.out.reply(relayReply(m, r), true);
        continue;
      }
      this.out.flush();
      for (const again of batch.slice(i)) {
        const reply = await this.answer(again);
        if (reply === undefined) return false;
        if (reply === null) this.out.flush();
        else this.out.reply(reply);
      }
      return true;
    }
    this.out.flush();
    return true;
  }

  private async handle(m: XsMessage): Promise<Buffer | null> {
    let tx: VirtualTx | undefined;
    if (m.type !== XS_WATCH && m.type !== XS_UNWATCH && m.txId !== 0) {
      tx = this.vtx.get(m.txId);
      if (!tx) return errReply(m, 'ENOENT');
    }
    switch (m.type) {
      case XS_READ:
      case XS_DIRECTORY:
      case XS_GET_PERMS:
      case XS_DIRECTORY_PART:
        return this.readOp(m, tx);
      case XS_WRITE:
      case XS_MKDIR:
        return writeOp(this, m, tx);
      case XS_RM:
        return rmOp(this, m, tx);
      case XS_SET_PERMS:
        return setPermsOp(this, m, tx);
      case XS_WATCH:
        return this.watchOp(m);
      case XS_UNWATCH: {
        const r = await this.chan.one(XS_UNWATCH, 0, m.payload);
        if (r.type === XS_UNWATCH) {
          const [path, token] = splitStrings(m.payload, true);
          const i = this.watches.findIndex((w) => w.path === path && w.token === token);
          if (i >= 0) {
            this.watches.splice(i, 1);
            this.book.watches--;
          }
        }
        return relayReply(m, r);
      }
      case XS_TRANSACTION_START:
        return this.txStart(m, tx);
      case XS_TRANSACTION_END:
        return this.txEnd(m, tx);
      case XS_RESET_WATCHES: {
        const r = await this.chan.one(XS_RESET_WATCHES, 0, m.payload);
        if (r.type === XS_RESET_WATCHES) {
          this.book.watches -= this.watches.length;
          this.watches.length = 0;
          this.vtx.clear();
          this.chan.forgetTransactions();
          this.out.forgetPerms();
          // The reset removed the cache's watches too (a shared cache's are on a link of its own).
          if (!this.sharedCache) {
            this.cache.reset();
            void this.chan.watchForCache().catch(() => undefined);
          }
        }
        return relayReply(m, r);
      }
      case XS_GET_DOMAIN_PATH:
        return relayReply(m, await this.chan.one(XS_GET_DOMAIN_PATH, 0, m.payload));
    }
    return errReply(m, 'ENOSYS');
  }

  private async readOp(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    let name: string | undefined;
    if (m.type === XS_DIRECTORY_PART) {
      // The daemon parses the arguments (its answer to dom0 is the one N gets): only the path here.
      if (countNul(m.payload) < 2) return errReply(m, 'EINVAL');
      name = m.payload.subarray(0, m.payload.indexOf(0)).toString('utf8');
    } else name = oneArg(m.payload);
    if (name === undefined) return errReply(m, 'EINVAL');
    const path = name;
    if (!tx) {
      const fast = await this.cachedRead(m, path);
      if (fast) return fast;
    }
    const reqs = (t: number): Req[] => [
      [XS_GET_PERMS, t, nulTerminated([path])],
      [m.type, t, m.payload],
    ];
    let t: number;
    let perms: XsMessage;
    let reply: XsMessage;
    if (tx || this.chan.atomicWrites) {
      t = tx?.up ?? 0;
      [perms, reply] = (await Promise.all(this.chan.call(reqs(t)))) as [XsMessage, XsMessage];
    } else {
      // A transaction of ours makes the perms and the data one snapshot of the node.
      const b = await this.chan.begin(reqs);
      t = b.tx;
      [perms, reply] = b.replies as [XsMessage, XsMessage];
    }
    try {
      // Arguments are checked before permissions, and the same for dom0 and N.
      if (errnoOf(reply) === 'EINVAL') return errReply(m, 'EINVAL');
      const got = await getNode(this, t, path, perms, XS_PERM_READ);
      if (!Array.isArray(got)) return errReply(m, got.errno);
      // The perms were the node's when their reply came (a transaction reads the tree at first access).
      if (!tx) this.cache.learn(path, got, this.chan.arrivedAt(perms));
      return relayReply(m, reply);
    } finally {
      if (t !== 0 && !tx) this.chan.abandonTx(t);
    }
  }

  /**
   * A read outside a transaction in one daemon request: when the cache knows
   * the node's perms let N read it, the request goes alone, and its reply is
   * N's if no event changed the node (or an ancestor) before the reply came,
   * that is before the daemon handled it. Otherwise undefined: decide anew.
   */
  private async cachedRead(m: XsMessage, path: string): Promise<Buffer | undefined> {
    const known = this.cache.get(path);
    if (!known || (permFor(this.who, known.perms) & XS_PERM_READ) === 0) return undefined;
    const reply = await this.chan.one(m.type, 0, m.payload);
    if (reply.type === XS_ERROR) return undefined;
    if (!this.cache.unchangedSince(path, known.at)) return undefined;
    return relayReply(m, reply);
  }

  /** XS_WATCH's answer without the daemon (EINVAL, EEXIST, the quota), or its path and token. */
  private watchCheck(m: XsMessage): Buffer | [string, string] {
    if (countNul(m.payload) < 2) return errReply(m, 'EINVAL');
    const [path, token] = splitStrings(m.payload) as [string, string];
    if (this.watches.some((w) => w.path === path && w.token === token))
      return errReply(m, 'EEXIST');
    const quota = watchQuotaErrno(this.book.quotas, this.book.watches);
    if (quota) return errReply(m, quota);
    return [path, token];
  }

  private watchAdded(path: string, token: string): void {
    this.watches.push({ path, token });
    this.book.watches++;
  }

  /** XS_WATCH the general way; null when the reply is placed already (see awaitInitial). */
  private async watchOp(m: XsMessage): Promise<Buffer | null> {
    const checked = this.watchCheck(m);
    if (Buffer.isBuffer(checked)) return checked;
    const [path, token] = checked;
    if (!path.startsWith('@')) await this.out.prime(path);
    const r = await this.chan.one(XS_WATCH, 0, m.payload);
    if (r.type !== XS_WATCH) return relayReply(m, r);
    this.watchAdded(path, token);
    if (!this.chan.initialPending) return relayReply(m, r);
    this.out.reply(relayReply(m, r), true);
    this.out.awaitInitial();
    return null;
  }

  /**
   * XS_WATCH on a synchronous link, in one step: the priming, then the WATCH, whose reply is
   * placed as it arrives, ahead of the watch's first event (which xenstored queues behind it).
   * False when the link stopped being synchronous before the WATCH was sent: do it the general way.
   */
  private watchNow(m: XsMessage): boolean {
    const checked = this.watchCheck(m);
    if (Buffer.isBuffer(checked)) {
      this.out.reply(checked, true);
      return true;
    }
    const [path, token] = checked;
    if (!path.startsWith('@') && !this.out.primeNow(path)) return false;
    if (!this.chan.synchronous) return false;
    this.chan.callNow([[XS_WATCH, 0, m.payload]], (r) => {
      if (r.type === XS_WATCH) this.watchAdded(path, token);
      this.out.reply(relayReply(m, r), true);
    });
    return true;
  }

  private async txStart(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    if (tx) return errReply(m, 'EBUSY');
    const quota = transactionQuotaErrno(this.book.quotas, this.vtx.size);
    if (quota) return errReply(m, quota);
    const r = await this.chan.one(XS_TRANSACTION_START, 0, m.payload);
    if (r.type !== XS_TRANSACTION_START) return relayReply(m, r);
    const up = Number.parseInt(r.payload.toString('latin1'), 10);
    let id = this.nextVtx;
    while (id === 0 || this.vtx.has(id)) id = (id + 1) >>> 0;
    this.nextVtx = (id + 1) >>> 0;
    this.vtx.set(id, newVirtualTx(up));
    return encodeMessage(XS_TRANSACTION_START, m.reqId, m.txId, `${id}\0`);
  }

  private async txEnd(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    const arg = oneArg(m.payload);
    if (arg !== 'T' && arg !== 'F') return errReply(m, 'EINVAL');
    if (!tx) return errReply(m, 'ENOENT');
    this.vtx.delete(m.txId);
    if (arg === 'F') return relayReply(m, await this.chan.endTx(tx.up, false));
    if (tx.failed) {
      this.chan.abandonTx(tx.up);
      return errReply(m, 'ENOMEM');
    }
    if (
      tx.created.length > 0 &&
      this.book.created.size + tx.created.length >= this.book.quotas.nodesPerDomain
    ) {
      this.chan.abandonTx(tx.up);
      return errReply(m, 'ENOSPC');
    }
    const r = await commit(this, tx.up, tx);
    if (r.type !== XS_ERROR) settle(this, tx);
    return relayReply(m, r);
  }
}
