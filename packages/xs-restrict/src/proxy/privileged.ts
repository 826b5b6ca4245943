/**
 * The proxy's privileged upstream mode: one connection to the daemon as dom0
 * (the only way in on a real host is `/run/xenstored/socket`), on which the
 * proxy itself decides every request as C xenstored 4.17 decides it for an
 * unprivileged domain N (xenstored_core.c get_node / errno_from_parents /
 * construct_node / do_set_perms, xenstored_watch.c watch_permitted and the
 * special-event check, quotas from xenstored_domain.c and
 * xenstored_transaction.c), so a client sees the bytes a domain-N connection
 * would get.
 */

import { nodeRecordSize, parentPath, permForDomain } from '../rules/perms.js';
import { DEFAULT_QUOTAS, type XenstoreQuotas } from '../server/server.js';
import {
  encodeMessage,
  formatPerm,
  MessageParser,
  parsePerm,
  XS_DIRECTORY,
  XS_DIRECTORY_PART,
  XS_ERROR,
  XS_GET_DOMAIN_PATH,
  XS_GET_PERMS,
  XS_MKDIR,
  XS_PERM_OWNER,
  XS_PERM_READ,
  XS_PERM_WRITE,
  XS_READ,
  XS_RESET_WATCHES,
  XS_RM,
  XS_SET_PERMS,
  XS_TRANSACTION_END,
  XS_TRANSACTION_START,
  XS_UNWATCH,
  XS_WATCH,
  XS_WATCH_EVENT,
  XS_WRITE,
  type XsErrno,
  type XsMessage,
  type XsPerm,
} from '../wire/wire.js';

/** What all the privileged sessions of one proxy (one domain N) share: N's per-domain counts. */
export class DomainBook {
  /** Nodes created through the proxy and owned by N (the entries-quota approximation, see README). */
  readonly created = new Set<string>();
  /** Watches N holds through the proxy. */
  watches = 0;
  private tail: Promise<void> = Promise.resolve();
  constructor(
    readonly domid: number,
    readonly quotas: XenstoreQuotas = DEFAULT_QUOTAS,
  ) {}

  /**
   * Runs the proxy's own write transactions one at a time: the clients of one
   * proxy then never make each other's commits fail with EAGAIN (a direct
   * domain connection never sees EAGAIN outside a transaction).
   */
  async serialize<T>(f: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release = (): void => undefined;
    this.tail = new Promise<void>((r) => {
      release = r;
    });
    await prev;
    try {
      return await f();
    } finally {
      release();
    }
  }
}

/** The dom0 connection to the daemon: bytes out, and `end` to close it. */
export interface PrivilegedLink {
  write(b: Buffer): void;
  end(): void;
  /**
   * The daemon handles all the requests of one `write` before anyone else's (an embedded server
   * attached in process): requests sent together are then one atomic step without a transaction.
   */
  atomicWrites?: boolean;
}

/** The special nodes' permissions as xenstored starts with them: dom0 owns them, nobody else reads. */
const SPECIAL_PERMS: readonly XsPerm[] = [{ domid: 0, perm: 'n' }];

/** Most node permissions cached per session for watch-event decisions on deleted nodes. */
export const PERMS_CACHE_MAX = 4096;

/**
 * Most output slots (replies and watch events) waiting for a decision per session. Each event
 * costs a perms lookup; a burst the daemon fires faster than those lookups come back would
 * otherwise queue without bound, so beyond this the client is closed (`event-overflow`).
 * C xenstored serves one request per connection per loop, so a fair daemon never gets near it.
 */
export const PENDING_OUTPUT_MAX = 1024;

/**
 * A node's data plus its children's names (each NUL-terminated), from its READ and DIRECTORY
 * replies, as node size quotas count them; infinite when either failed, so the check refuses.
 */
function valueAndChildBytes(value: XsMessage, dir: XsMessage): number {
  return value.type === XS_READ && dir.type === XS_DIRECTORY
    ? value.payload.length + dir.payload.length
    : Number.POSITIVE_INFINITY;
}

/** Commits of ours that met EAGAIN this often are retried after a random pause. */
const BACKOFF_AFTER = 8;

class LinkClosed {}

class Fail {
  constructor(readonly errno: XsErrno) {}
}

interface VirtualTx {
  /** The transaction id on the dom0 connection. */
  up: number;
  /** A create failed half way: C xenstored fails the transaction, its commit answers ENOMEM. */
  failed: boolean;
  /** Nodes created (owned by N) and removed in the transaction, applied to the book on commit. */
  created: string[];
  removed: string[];
  /** Intermediate nodes our perms fix-up touched: their commit events are not N's. */
  suppress: Set<string>;
  /** Nodes N itself fired watches for in the transaction. */
  fired: Set<string>;
}

interface Slot {
  bytes: Buffer | null | undefined;
  path?: string;
  /** Held while a commit of ours is answered: its events for `suppress` paths are dropped. */
  held?: boolean;
  /** Dropped for good: a permission decision arriving later does not bring it back. */
  dropped?: boolean;
}

interface Pending {
  type: number;
  resolve: (m: XsMessage) => void;
  reject: (e: unknown) => void;
}

type Req = [type: number, tx: number, payload: Buffer | string];

const z = (...s: string[]): string => s.map((x) => `${x}\0`).join('');

function errnoOf(m: XsMessage): XsErrno | undefined {
  if (m.type !== XS_ERROR) return undefined;
  return m.payload.toString('latin1').replace(/\0.*$/s, '') as XsErrno;
}

function parsePermsReply(m: XsMessage): XsPerm[] {
  const out: XsPerm[] = [];
  let start = 0;
  for (let i = 0; i < m.payload.length; i++) {
    if (m.payload[i] === 0) {
      out.push(parsePerm(m.payload.subarray(start, i).toString('latin1')));
      start = i + 1;
    }
  }
  return out;
}

function countNul(p: Buffer): number {
  let n = 0;
  for (const b of p) if (b === 0) n++;
  return n;
}

/** onearg: exactly one nul, at the end. */
function oneArg(p: Buffer): string | undefined {
  return p.length > 0 && p.indexOf(0) === p.length - 1
    ? p.subarray(0, p.length - 1).toString('utf8')
    : undefined;
}

function isChild(child: string, parent: string): boolean {
  if (parent === '/') return true;
  if (!child.startsWith(parent)) return false;
  const c = child[parent.length];
  return c === undefined || c === '/';
}

const baseName = (path: string): string => path.slice(path.lastIndexOf('/') + 1);

/**
 * One client's emulated domain-N connection over a dom0 connection. It takes
 * the requests the proxy let through (absolute paths) and produces, in
 * order, the replies and watch events domain N would get.
 */
export class PrivilegedSession {
  private readonly parser = new MessageParser();
  private readonly upParser = new MessageParser();
  private readonly queue: XsMessage[] = [];
  private busy = false;
  private readonly pending: Pending[] = [];
  private nextReq = 1;
  private readonly out: Slot[] = [];
  /** Upstream transaction ids in use, and the daemon's next_transaction_id, to predict the next id. */
  private readonly upTx = new Set<number>();
  private nextUpTx = 1;
  private readonly vtx = new Map<number, VirtualTx>();
  private nextVtx = 1;
  /** Watches as registered upstream (absolute path, token). */
  private readonly watches: { path: string; token: string }[] = [];
  private readonly perms = new Map<string, XsPerm[]>();
  private initialNext = false;
  private readonly inbox: XsMessage[] = [];
  private deferred = false;
  /** Paths whose events, arriving while a commit of ours is answered, are ours to drop. */
  private window: { suppress: Set<string>; slots: Slot[] } | undefined;
  private closed = false;
  private overflowed = false;
  private readonly link: PrivilegedLink;

  constructor(
    private readonly book: DomainBook,
    open: (onData: (b: Buffer) => void, onClose: () => void) => PrivilegedLink,
    private readonly emit: (b: Buffer) => void,
    private readonly onClose: () => void,
    private readonly onOverflow: (detail: string) => void = () => undefined,
  ) {
    this.link = open(
      (b) => this.fromLink(b),
      () => this.linkClosed(),
    );
  }

  private get domid(): number {
    return this.book.domid;
  }

  private get quotas(): XenstoreQuotas {
    return this.book.quotas;
  }

  /** Requests from the proxy (whole messages, already allowed). */
  write(b: Buffer): void {
    if (this.closed) return;
    for (const m of this.parser.push(b)) this.queue.push(m);
    if (!this.busy) void this.run();
  }

  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.book.watches -= this.watches.length;
    this.watches.length = 0;
    this.link.end();
    this.failPending();
  }

  private linkClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.book.watches -= this.watches.length;
    this.watches.length = 0;
    this.failPending();
    this.onClose();
  }

  private failPending(): void {
    for (const p of this.pending.splice(0)) p.reject(new LinkClosed());
  }

  // ---------- the dom0 connection ----------

  private call(reqs: readonly Req[]): Promise<XsMessage>[] {
    if (this.closed)
      return reqs.map(() => {
        const p = Promise.reject(new LinkClosed());
        p.catch(() => undefined);
        return p;
      });
    const bufs: Buffer[] = [];
    const promises = reqs.map(([type, tx, payload]) => {
      bufs.push(encodeMessage(type, this.nextReq++ >>> 0, tx, payload));
      const p = new Promise<XsMessage>((resolve, reject) =>
        this.pending.push({ type, resolve, reject }),
      );
      // A lost link rejects every pending call; those nobody awaits any more must not surface.
      p.catch(() => undefined);
      return p;
    });
    this.link.write(bufs.length === 1 ? (bufs[0] as Buffer) : Buffer.concat(bufs));
    return promises;
  }

  private async one(type: number, tx: number, payload: Buffer | string): Promise<XsMessage> {
    return this.call([[type, tx, payload]])[0] as Promise<XsMessage>;
  }

  private fromLink(chunk: Buffer): void {
    let msgs: XsMessage[];
    try {
      msgs = this.upParser.push(chunk);
    } catch {
      this.link.end();
      this.linkClosed();
      return;
    }
    for (const m of msgs) this.inbox.push(m);
    if (!this.deferred) this.drainInbox();
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
      if (m.type === XS_WATCH_EVENT && resolved) {
        this.deferred = true;
        setImmediate(() => this.drainInbox());
        return;
      }
      this.inbox.shift();
      if (m.type === XS_WATCH_EVENT) {
        const initial = this.initialNext;
        this.initialNext = false;
        this.event(m, initial);
        continue;
      }
      this.initialNext = false;
      const p = this.pending.shift();
      if (!p) continue;
      if (p.type === XS_TRANSACTION_START && m.type === XS_TRANSACTION_START) {
        const id = Number.parseInt(m.payload.toString('latin1'), 10);
        this.upTx.add(id);
        this.nextUpTx = (id + 1) >>> 0;
      }
      // xenstored queues a watch's first event right behind the WATCH reply: that one is unconditional.
      if (p.type === XS_WATCH && m.type === XS_WATCH) this.initialNext = true;
      p.resolve(m);
      resolved = true;
    }
  }

  /** The id the daemon will give our next transaction (do_transaction_start's search). */
  private predictTx(): number {
    let id = this.nextUpTx;
    while (id === 0 || this.upTx.has(id)) id = (id + 1) >>> 0;
    return id;
  }

  private endTx(up: number, commit: boolean): Promise<XsMessage> {
    this.upTx.delete(up);
    return this.one(XS_TRANSACTION_END, up, commit ? 'T\0' : 'F\0');
  }

  /** Start a transaction of ours and send `reqs` in it, in one write (the id is predicted). */
  private async begin(reqs: (tx: number) => Req[]): Promise<{ tx: number; replies: XsMessage[] }> {
    for (;;) {
      const guess = this.predictTx();
      const [start, ...rest] = this.call([[XS_TRANSACTION_START, 0, '\0'], ...reqs(guess)]);
      const s = await (start as Promise<XsMessage>);
      const replies = await Promise.all(rest);
      if (s.type !== XS_TRANSACTION_START) throw new Fail(errnoOf(s) ?? 'EIO');
      const id = Number.parseInt(s.payload.toString('latin1'), 10);
      if (id === guess) return { tx: id, replies };
      void this.endTx(id, false).catch(() => undefined);
    }
  }

  // ---------- output, in order ----------

  private push(slot: Slot): void {
    this.out.push(slot);
    this.flush();
  }

  private flush(): void {
    let n = 0;
    const ready: Buffer[] = [];
    for (const s of this.out) {
      if (s.bytes === undefined || s.held) break;
      if (s.bytes) ready.push(s.bytes);
      n++;
    }
    if (n === 0) return;
    this.out.splice(0, n);
    if (ready.length > 0 && !this.closed)
      this.emit(ready.length === 1 ? (ready[0] as Buffer) : Buffer.concat(ready));
  }

  // ---------- watch events ----------

  private event(m: XsMessage, initial: boolean): void {
    if (this.overflowed) return;
    if (this.out.length >= PENDING_OUTPUT_MAX) {
      // The client is closed: what it was owed is dropped, and so is every later event.
      this.overflowed = true;
      this.out.length = 0;
      this.onOverflow(
        `${PENDING_OUTPUT_MAX} replies and watch events waited for a decision, limit ${PENDING_OUTPUT_MAX}`,
      );
      return;
    }
    const nul = m.payload.indexOf(0);
    const path = m.payload.subarray(0, nul < 0 ? m.payload.length : nul).toString('utf8');
    const raw = encodeMessage(XS_WATCH_EVENT, m.reqId, m.txId, m.payload);
    const slot: Slot = { bytes: undefined, path };
    if (this.window) {
      slot.held = true;
      this.window.slots.push(slot);
    }
    this.out.push(slot);
    if (initial) {
      slot.bytes = raw;
      this.flush();
      return;
    }
    if (path.startsWith('@')) {
      // check_perms_special: N reads the special nodes only if their perms say so (never by default).
      slot.bytes = this.readable(SPECIAL_PERMS) ? raw : null;
      this.flush();
      return;
    }
    const token = m.payload.subarray(nul + 1, m.payload.indexOf(0, nul + 1)).toString('utf8');
    const root = this.watches.find((w) => w.token === token && isChild(path, w.path))?.path ?? path;
    // The perms before this change: read now, before a lookup for an earlier event updates them.
    const before = this.perms.get(path);
    const parentBefore = this.perms.get(parentPath(path));
    this.permitted(path, root, before, parentBefore).then(
      (ok) => {
        slot.bytes = ok && !slot.dropped ? raw : null;
        this.flush();
      },
      () => {
        // No answer to decide on (the link went away, or perms we cannot parse): not N's event.
        slot.bytes = null;
        this.flush();
      },
    );
  }

  private readable(perms: readonly XsPerm[] | undefined): boolean {
    return (
      perms !== undefined && (permForDomain(this.domid, undefined, perms) & XS_PERM_READ) !== 0
    );
  }

  /**
   * watch_permitted for N, one round trip after the daemon fired: N gets the
   * event if it can read the node's old perms (cached before the change),
   * its current perms, or its parent's; for a deleted node the cached perms
   * stand in for the node as it was when rm fired.
   */
  private async permitted(
    path: string,
    root: string,
    old: XsPerm[] | undefined,
    parentOld: XsPerm[] | undefined,
  ): Promise<boolean> {
    const ask = [path, parentPath(path)];
    for (let p = parentPath(path); p !== root && isChild(p, root) && p !== '/'; p = parentPath(p)) {
      if (!this.perms.has(p) && !ask.includes(p)) ask.push(p);
    }
    const replies = await Promise.all(this.call(ask.map((p) => [XS_GET_PERMS, 0, z(p)])));
    const cur = new Map<string, XsPerm[]>();
    replies.forEach((r, i) => {
      if (r.type === XS_GET_PERMS) cur.set(ask[i] as string, parsePermsReply(r));
    });
    const parentPerms = cur.get(parentPath(path)) ?? parentOld;
    const now = cur.get(path);
    const ok = this.readable(old) || this.readable(now) || this.readable(parentPerms);
    for (const [p, perms] of cur) if (isChild(p, root)) this.cache(p, perms);
    // rm fires exact events for the descendants, which a watch above does not match: forget them too.
    if (!now) for (const p of [...this.perms.keys()]) if (isChild(p, path)) this.perms.delete(p);
    return ok;
  }

  private cache(path: string, perms: XsPerm[]): void {
    if (this.perms.size >= PERMS_CACHE_MAX && !this.perms.has(path)) return;
    this.perms.set(path, perms);
  }

  /** Learn the perms of every node under a path about to be watched (bounded by PERMS_CACHE_MAX). */
  private async prime(path: string): Promise<void> {
    let level = [path];
    while (level.length > 0 && this.perms.size < PERMS_CACHE_MAX) {
      const replies = await Promise.all(
        this.call(
          level.flatMap((p): Req[] => [
            [XS_GET_PERMS, 0, z(p)],
            [XS_DIRECTORY, 0, z(p)],
          ]),
        ),
      );
      const next: string[] = [];
      level.forEach((p, i) => {
        const perms = replies[2 * i] as XsMessage;
        const dir = replies[2 * i + 1] as XsMessage;
        if (perms.type !== XS_GET_PERMS) return;
        try {
          this.cache(p, parsePermsReply(perms));
        } catch {
          return;
        }
        if (dir.type !== XS_DIRECTORY) return;
        for (const c of dir.payload.toString('utf8').split('\0')) {
          if (c !== '') next.push(p === '/' ? `/${c}` : `${p}/${c}`);
        }
      });
      level = next.slice(0, Math.max(0, PERMS_CACHE_MAX - this.perms.size));
    }
  }

  // ---------- requests ----------

  private async run(): Promise<void> {
    this.busy = true;
    try {
      for (;;) {
        const m = this.queue.shift();
        if (!m) break;
        let reply: Buffer;
        try {
          reply = await this.handle(m);
        } catch (e) {
          if (e instanceof LinkClosed || this.closed) return;
          reply = this.err(m, e instanceof Fail ? e.errno : 'EIO');
        }
        this.push({ bytes: reply });
      }
    } finally {
      this.busy = false;
    }
  }

  private err(m: XsMessage, errno: XsErrno): Buffer {
    return encodeMessage(XS_ERROR, m.reqId, m.txId, `${errno}\0`);
  }

  private relay(m: XsMessage, r: XsMessage): Buffer {
    return encodeMessage(r.type, m.reqId, m.txId, r.payload);
  }

  private ok(m: XsMessage): Buffer {
    return encodeMessage(m.type, m.reqId, m.txId, 'OK\0');
  }

  private async handle(m: XsMessage): Promise<Buffer> {
    let tx: VirtualTx | undefined;
    if (m.type !== XS_WATCH && m.type !== XS_UNWATCH && m.txId !== 0) {
      tx = this.vtx.get(m.txId);
      if (!tx) return this.err(m, 'ENOENT');
    }
    switch (m.type) {
      case XS_READ:
      case XS_DIRECTORY:
      case XS_GET_PERMS:
      case XS_DIRECTORY_PART:
        return this.readOp(m, tx);
      case XS_WRITE:
      case XS_MKDIR:
        return this.writeOp(m, tx);
      case XS_RM:
        return this.rmOp(m, tx);
      case XS_SET_PERMS:
        return this.setPermsOp(m, tx);
      case XS_WATCH:
        return this.watchOp(m);
      case XS_UNWATCH: {
        const r = await this.one(XS_UNWATCH, 0, m.payload);
        if (r.type === XS_UNWATCH) {
          const [path, token] = m.payload.toString('utf8').split('\0');
          const i = this.watches.findIndex((w) => w.path === path && w.token === token);
          if (i >= 0) {
            this.watches.splice(i, 1);
            this.book.watches--;
          }
        }
        return this.relay(m, r);
      }
      case XS_TRANSACTION_START:
        return this.txStart(m, tx);
      case XS_TRANSACTION_END:
        return this.txEnd(m, tx);
      case XS_RESET_WATCHES: {
        const r = await this.one(XS_RESET_WATCHES, 0, m.payload);
        if (r.type === XS_RESET_WATCHES) {
          this.book.watches -= this.watches.length;
          this.watches.length = 0;
          this.vtx.clear();
          this.upTx.clear();
          this.perms.clear();
        }
        return this.relay(m, r);
      }
      case XS_GET_DOMAIN_PATH:
        return this.relay(m, await this.one(XS_GET_DOMAIN_PATH, 0, m.payload));
    }
    return this.err(m, 'ENOSYS');
  }

  private may(perms: readonly XsPerm[], perm: number): boolean {
    return (permForDomain(this.domid, undefined, perms) & perm) === perm;
  }

  /**
   * errno_from_parents: `errnum` if the nearest existing ancestor grants any
   * bit of `perm`, else EACCES; also returns that ancestor and its perms.
   */
  private async fromParents(
    tx: number,
    name: string,
    errnum: XsErrno,
    perm: number,
  ): Promise<{ errno: XsErrno; ancestor: string; perms: XsPerm[] }> {
    let p = name;
    for (;;) {
      p = parentPath(p);
      const r = await this.one(XS_GET_PERMS, tx, z(p));
      if (r.type === XS_GET_PERMS) {
        const perms = parsePermsReply(r);
        const bits = permForDomain(this.domid, undefined, perms);
        return { errno: bits & perm ? errnum : 'EACCES', ancestor: p, perms };
      }
      if (errnoOf(r) !== 'ENOENT' || p === '/') throw new Fail(errnoOf(r) ?? 'EIO');
    }
  }

  /** get_node's decision from a GET_PERMS reply: the node's perms, or the errno N gets. */
  private async getNode(
    tx: number,
    name: string,
    r: XsMessage,
    perm: number,
  ): Promise<XsPerm[] | { errno: XsErrno; ancestor?: string; perms?: XsPerm[] }> {
    let errnum: XsErrno = 'ENOENT';
    if (r.type === XS_GET_PERMS) {
      const perms = parsePermsReply(r);
      if (this.may(perms, perm)) return perms;
      errnum = 'EACCES';
    } else {
      const e = errnoOf(r) ?? 'EIO';
      if (e !== 'ENOENT') return { errno: e };
    }
    return this.fromParents(tx, name, errnum, perm);
  }

  private async readOp(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    let name: string | undefined;
    if (m.type === XS_DIRECTORY_PART) {
      // The daemon parses the arguments (its answer to dom0 is the one N gets): only the path here.
      if (countNul(m.payload) < 2) return this.err(m, 'EINVAL');
      name = m.payload.subarray(0, m.payload.indexOf(0)).toString('utf8');
    } else name = oneArg(m.payload);
    if (name === undefined) return this.err(m, 'EINVAL');
    const path = name;
    const reqs = (t: number): Req[] => [
      [XS_GET_PERMS, t, z(path)],
      [m.type, t, m.payload],
    ];
    let t: number;
    let perms: XsMessage;
    let reply: XsMessage;
    if (tx || this.link.atomicWrites) {
      t = tx?.up ?? 0;
      [perms, reply] = (await Promise.all(this.call(reqs(t)))) as [XsMessage, XsMessage];
    } else {
      // A transaction of ours makes the perms and the data one snapshot of the node.
      const b = await this.begin(reqs);
      t = b.tx;
      [perms, reply] = b.replies as [XsMessage, XsMessage];
    }
    try {
      // Arguments are checked before permissions, and the same for dom0 and N.
      if (errnoOf(reply) === 'EINVAL') return this.err(m, 'EINVAL');
      const got = await this.getNode(t, path, perms, XS_PERM_READ);
      if (!Array.isArray(got)) return this.err(m, got.errno);
      return this.relay(m, reply);
    } finally {
      if (t !== 0 && !tx) void this.endTx(t, false).catch(() => undefined);
    }
  }

  /**
   * Runs `body` in the client's transaction, or in one of ours (committed,
   * and retried on EAGAIN) so the check, the change and the perms fix-up are
   * one atomic step, as they are inside xenstored.
   */
  private async atomically(
    m: XsMessage,
    tx: VirtualTx | undefined,
    first: (t: number) => Req[],
    body: (t: number, first: XsMessage[], own: VirtualTx) => Promise<Buffer | undefined>,
  ): Promise<Buffer> {
    if (tx) {
      const replies = await Promise.all(this.call(first(tx.up)));
      return (await body(tx.up, replies, tx)) ?? this.ok(m);
    }
    return this.book.serialize(() => this.ownTransaction(m, first, body));
  }

  private async ownTransaction(
    m: XsMessage,
    first: (t: number) => Req[],
    body: (t: number, first: XsMessage[], own: VirtualTx) => Promise<Buffer | undefined>,
  ): Promise<Buffer> {
    for (let attempt = 0; ; attempt++) {
      const b = await this.begin(first);
      const own: VirtualTx = {
        up: b.tx,
        failed: false,
        created: [],
        removed: [],
        suppress: new Set(),
        fired: new Set(),
      };
      let answer: Buffer | undefined;
      try {
        answer = await body(b.tx, b.replies, own);
      } catch (e) {
        void this.endTx(b.tx, false).catch(() => undefined);
        throw e;
      }
      if (answer !== undefined) {
        void this.endTx(b.tx, false).catch(() => undefined);
        return answer;
      }
      const r = await this.commit(b.tx, own);
      const e = errnoOf(r);
      if (e === undefined) {
        this.settle(own);
        return this.ok(m);
      }
      if (e !== 'EAGAIN') return this.err(m, e);
      // Another connection committed a change to a node we read: check again. A direct write never
      // answers EAGAIN, so there is no giving up; contenders are spread apart after a few rounds.
      if (attempt >= BACKOFF_AFTER)
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(attempt, 20)));
      if (this.closed) throw new LinkClosed();
    }
  }

  /** TRANSACTION_END T upstream, dropping the commit's events for the nodes only our fix-up touched. */
  private async commit(up: number, t: VirtualTx): Promise<XsMessage> {
    const suppress = new Set([...t.suppress].filter((p) => !t.fired.has(p)));
    if (suppress.size === 0) return this.endTx(up, true);
    const window = { suppress, slots: [] as Slot[] };
    this.window = window;
    let r: XsMessage;
    try {
      r = await this.endTx(up, true);
    } finally {
      this.window = undefined;
    }
    const ok = r.type !== XS_ERROR;
    for (const s of window.slots) {
      s.held = false;
      if (ok && s.path !== undefined && suppress.has(s.path)) {
        s.dropped = true;
        s.bytes = null;
      }
    }
    this.flush();
    return r;
  }

  private settle(t: VirtualTx): void {
    for (const p of t.removed) {
      for (const c of [...this.book.created]) if (isChild(c, p)) this.book.created.delete(c);
    }
    for (const p of t.created) this.book.created.add(p);
  }

  /** Near the quota: forget counted nodes that are gone or no longer N's (the toolstack removed them). */
  private async prune(): Promise<void> {
    const paths = [...this.book.created];
    const replies = await Promise.all(this.call(paths.map((p): Req => [XS_GET_PERMS, 0, z(p)])));
    replies.forEach((r, i) => {
      const gone = r.type !== XS_GET_PERMS || parsePermsReply(r)[0]?.domid !== this.domid;
      if (gone) this.book.created.delete(paths[i] as string);
    });
  }

  /** N's entries as the proxy counts them: nodes it created through the proxy, plus a transaction's own. */
  private entries(t: VirtualTx, inClientTx: boolean): number {
    // As in xenstored, a transaction's new nodes count only once it commits.
    return this.book.created.size + (inClientTx ? 0 : t.created.length);
  }

  private async writeOp(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    let name: string | undefined;
    let data: Buffer;
    if (m.type === XS_WRITE) {
      const nul = m.payload.indexOf(0);
      if (nul < 0) return this.err(m, 'EINVAL');
      name = m.payload.subarray(0, nul).toString('utf8');
      data = m.payload.subarray(nul + 1);
    } else {
      name = oneArg(m.payload);
      data = Buffer.alloc(0);
    }
    if (name === undefined) return this.err(m, 'EINVAL');
    const path = name;
    const write = m.type === XS_WRITE;
    return this.atomically(
      m,
      tx,
      (t) =>
        write
          ? [
              [XS_GET_PERMS, t, z(path)],
              [XS_DIRECTORY, t, z(path)],
            ]
          : [[XS_GET_PERMS, t, z(path)]],
      async (t, [permsR, dirR], own) => {
        const got = await this.getNode(t, path, permsR as XsMessage, XS_PERM_WRITE);
        if (Array.isArray(got)) {
          if (!write) return this.ok(m);
          // write_node's quota check on the node as it would be stored.
          const dir = dirR as XsMessage;
          const childlen =
            dir.type === XS_DIRECTORY ? dir.payload.length : Number.POSITIVE_INFINITY;
          if (nodeRecordSize(got.length, data.length, childlen) >= this.quotas.entrySize)
            return this.err(m, 'ENOSPC');
          const r = await this.one(XS_WRITE, t, m.payload);
          if (r.type === XS_ERROR) return this.relay(m, r);
          own.fired.add(path);
          return tx ? this.ok(m) : undefined;
        }
        if (got.errno !== 'ENOENT' || got.ancestor === undefined || got.perms === undefined)
          return this.err(m, got.errno);
        return this.create(m, t, own, tx !== undefined, path, data, got.ancestor, got.perms);
      },
    );
  }

  /** construct_node + create_node for N, then the write as dom0 and the owner fix-up. */
  private async create(
    m: XsMessage,
    t: number,
    own: VirtualTx,
    inClientTx: boolean,
    path: string,
    data: Buffer,
    ancestor: string,
    parentPerms: XsPerm[],
  ): Promise<Buffer | undefined> {
    const names: string[] = [];
    for (let p = path; p !== ancestor; p = parentPath(p)) names.push(p);
    const [valR, dirR] = await Promise.all(
      this.call([
        [XS_READ, t, z(ancestor)],
        [XS_DIRECTORY, t, z(ancestor)],
      ]),
    );
    const perms = parentPerms.map((p) => ({ ...p }));
    (perms[0] as XsPerm).domid = this.domid;
    if (this.entries(own, inClientTx) + names.length >= this.quotas.nodesPerDomain)
      await this.prune();
    // create_node's checks in its order: new nodes bottom up (entries, then size), then the parent.
    let count = this.entries(own, inClientTx);
    let written = 0;
    const fail = (): Buffer => {
      if (inClientTx && written > 0) own.failed = true;
      return this.err(m, 'ENOSPC');
    };
    for (let i = 0; i < names.length; i++) {
      if (count >= this.quotas.nodesPerDomain) return fail();
      const childlen = i === 0 ? 0 : Buffer.byteLength(baseName(names[i - 1] as string)) + 1;
      const datalen = i === 0 ? data.length : 0;
      if (nodeRecordSize(perms.length, datalen, childlen) >= this.quotas.entrySize) return fail();
      written++;
      if (!inClientTx) count++;
    }
    const top = names[names.length - 1] as string;
    const parentLen = valueAndChildBytes(valR as XsMessage, dirR as XsMessage);
    if (
      nodeRecordSize(parentPerms.length, 0, parentLen + Buffer.byteLength(baseName(top)) + 1) >=
      this.quotas.entrySize
    )
      return fail();
    const reqs: Req[] = [m.type === XS_WRITE ? [XS_WRITE, t, m.payload] : [XS_MKDIR, t, z(path)]];
    const fix = (parentPerms[0] as XsPerm).domid !== this.domid;
    if (fix) {
      const permStr = z(...perms.map(formatPerm));
      for (const n of [...names].reverse()) reqs.push([XS_SET_PERMS, t, `${n}\0${permStr}`]);
    }
    const replies = await Promise.all(this.call(reqs));
    const bad = replies.find((r) => r.type === XS_ERROR);
    if (bad) {
      if (inClientTx) own.failed = true;
      return this.relay(m, bad);
    }
    own.fired.add(path);
    if (fix) for (const n of names) if (n !== path) own.suppress.add(n);
    own.created.push(...names);
    return inClientTx ? this.ok(m) : undefined;
  }

  private async rmOp(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    const name = oneArg(m.payload);
    if (name === undefined) return this.err(m, 'EINVAL');
    const t = tx?.up ?? 0;
    // Outside a transaction the check and the rm are two steps: a transaction of ours would fire
    // the rm's events in the order of first access, not rm_node's children-first order.
    const r = await this.one(XS_GET_PERMS, t, z(name));
    const got = await this.getNode(t, name, r, XS_PERM_WRITE);
    if (!Array.isArray(got)) {
      if (got.errno !== 'ENOENT') return this.err(m, got.errno);
      // Didn't exist already? Fine, if the parent exists.
      return got.ancestor === parentPath(name) ? this.ok(m) : this.err(m, 'ENOENT');
    }
    if (name === '/') return this.err(m, 'EINVAL');
    const rr = await this.one(XS_RM, t, z(name));
    if (rr.type === XS_RM) {
      if (tx) {
        tx.removed.push(name);
        tx.fired.add(name);
      } else {
        for (const c of [...this.book.created]) if (isChild(c, name)) this.book.created.delete(c);
      }
    }
    return this.relay(m, rr);
  }

  private async setPermsOp(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    const p = m.payload;
    const nstr = countNul(p);
    if (nstr < 2) return this.err(m, 'EINVAL');
    const nperms = nstr - 1;
    if (nperms > this.quotas.permsPerNode) return this.err(m, 'ENOSPC');
    const strings = p.toString('utf8').split('\0');
    const perms: XsPerm[] = [];
    try {
      for (let i = 1; i <= nperms; i++) perms.push(parsePerm(strings[i] ?? ''));
    } catch {
      return this.err(m, 'EINVAL');
    }
    const path = strings[0] ?? '';
    if (path.startsWith('@')) {
      if (path !== '@releaseDomain' && path !== '@introduceDomain') return this.err(m, 'EINVAL');
      // set_perms_special: N would need write and owner on the special node's perms.
      return this.err(m, 'EACCES');
    }
    const need = XS_PERM_WRITE | XS_PERM_OWNER;
    return this.atomically(
      m,
      tx,
      (t) => [
        [XS_GET_PERMS, t, z(path)],
        [XS_READ, t, z(path)],
        [XS_DIRECTORY, t, z(path)],
      ],
      async (t, [permsR, valR, dirR], own) => {
        const got = await this.getNode(t, path, permsR as XsMessage, need);
        if (!Array.isArray(got)) return this.err(m, got.errno);
        if ((perms[0] as XsPerm).domid !== (got[0] as XsPerm).domid) return this.err(m, 'EPERM');
        const len = valueAndChildBytes(valR as XsMessage, dirR as XsMessage);
        if (nodeRecordSize(perms.length, 0, len) >= this.quotas.entrySize)
          return this.err(m, 'ENOSPC');
        const r = await this.one(XS_SET_PERMS, t, p);
        if (r.type === XS_ERROR) return this.relay(m, r);
        own.fired.add(path);
        return tx ? this.ok(m) : undefined;
      },
    );
  }

  private async watchOp(m: XsMessage): Promise<Buffer> {
    const strings = m.payload.toString('utf8').split('\0');
    if (countNul(m.payload) < 2) return this.err(m, 'EINVAL');
    const [path, token] = strings as [string, string];
    if (this.watches.some((w) => w.path === path && w.token === token))
      return this.err(m, 'EEXIST');
    // do_watch: domain_watch(conn) > quota_nb_watch_per_domain.
    if (this.book.watches > this.quotas.watchesPerDomain) return this.err(m, 'E2BIG');
    if (!path.startsWith('@')) await this.prime(path);
    const r = await this.one(XS_WATCH, 0, m.payload);
    if (r.type === XS_WATCH) {
      this.watches.push({ path, token });
      this.book.watches++;
    }
    return this.relay(m, r);
  }

  private async txStart(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    if (tx) return this.err(m, 'EBUSY');
    if (this.vtx.size > this.quotas.transactionsPerConnection) return this.err(m, 'ENOSPC');
    const r = await this.one(XS_TRANSACTION_START, 0, m.payload);
    if (r.type !== XS_TRANSACTION_START) return this.relay(m, r);
    const up = Number.parseInt(r.payload.toString('latin1'), 10);
    let id = this.nextVtx;
    while (id === 0 || this.vtx.has(id)) id = (id + 1) >>> 0;
    this.nextVtx = (id + 1) >>> 0;
    this.vtx.set(id, {
      up,
      failed: false,
      created: [],
      removed: [],
      suppress: new Set(),
      fired: new Set(),
    });
    return encodeMessage(XS_TRANSACTION_START, m.reqId, m.txId, `${id}\0`);
  }

  private async txEnd(m: XsMessage, tx: VirtualTx | undefined): Promise<Buffer> {
    const arg = oneArg(m.payload);
    if (arg !== 'T' && arg !== 'F') return this.err(m, 'EINVAL');
    if (!tx) return this.err(m, 'ENOENT');
    this.vtx.delete(m.txId);
    if (arg === 'F') return this.relay(m, await this.endTx(tx.up, false));
    if (tx.failed) {
      void this.endTx(tx.up, false).catch(() => undefined);
      return this.err(m, 'ENOMEM');
    }
    if (
      tx.created.length > 0 &&
      this.book.created.size + tx.created.length >= this.quotas.nodesPerDomain
    ) {
      void this.endTx(tx.up, false).catch(() => undefined);
      return this.err(m, 'ENOSPC');
    }
    const r = await this.commit(tx.up, tx);
    if (r.type !== XS_ERROR) this.settle(tx);
    return this.relay(m, r);
  }
}
