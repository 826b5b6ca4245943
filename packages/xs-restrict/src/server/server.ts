import { existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { nodeRecordSize, parentPath, permForDomain, XS_PERM_ALL } from '../rules/perms.js';
import {
  encodeMessage,
  formatPerm,
  MessageParser,
  nodePathProblem,
  parsePerm,
  XENSTORE_PAYLOAD_MAX,
  XENSTORE_REL_PATH_MAX,
  XS_CONTROL,
  XS_DIRECTORY,
  XS_DIRECTORY_PART,
  XS_ERROR,
  XS_GET_DOMAIN_PATH,
  XS_GET_PERMS,
  XS_INTRODUCE,
  XS_IS_DOMAIN_INTRODUCED,
  XS_MKDIR,
  XS_PERM_OWNER,
  XS_PERM_READ,
  XS_PERM_WRITE,
  XS_READ,
  XS_RELEASE,
  XS_RESET_WATCHES,
  XS_RESUME,
  XS_RM,
  XS_SET_PERMS,
  XS_SET_TARGET,
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

/** Per-domain limits; the defaults are C xenstored 4.17's (xenstored_core.c). */
export interface XenstoreQuotas {
  /** Nodes a domain may own (`quota_nb_entry_per_domain`). */
  nodesPerDomain: number;
  /** Watches per domain (`quota_nb_watch_per_domain`; the check is `count > limit`). */
  watchesPerDomain: number;
  /** Bytes of a node record: 24-byte header, 8 per permission, data, child names (`quota_max_entry_size`). */
  entrySize: number;
  /** Open transactions per connection (`quota_max_transaction`; the check is `count > limit`). */
  transactionsPerConnection: number;
  /** Permission entries per node set by a guest (`quota_nb_perms_per_node`). */
  permsPerNode: number;
  /** Nodes one transaction of a guest may touch (`quota_trans_nodes`). */
  nodesPerTransaction: number;
  /** Path bytes after `/local/domain/N/` (`quota_max_path_len`). */
  pathLength: number;
}

export const DEFAULT_QUOTAS: Readonly<XenstoreQuotas> = {
  nodesPerDomain: 1000,
  watchesPerDomain: 128,
  entrySize: 2048,
  transactionsPerConnection: 10,
  permsPerNode: 5,
  nodesPerTransaction: 1024,
  pathLength: XENSTORE_REL_PATH_MAX,
};

export interface XenstoreServerOptions {
  quotas?: Partial<XenstoreQuotas>;
  /** A domid besides 0 that is privileged (xenstored's `--priv-domid`). */
  privDomid?: number;
  /** Most bytes queued for a connection that does not read; beyond it the connection is closed. */
  maxOutputBytes?: number;
}

interface XsNode {
  value: Buffer;
  children: string[];
  perms: XsPerm[];
  generation: number;
}

/** The size xenstored charges a node against `quota_max_entry_size` (struct xs_tdb_record_hdr is 24 bytes, xs_permissions 8). */
function entrySize(n: XsNode): number {
  let childlen = 0;
  for (const c of n.children) childlen += Buffer.byteLength(c) + 1;
  return nodeRecordSize(n.perms.length, n.value.length, childlen);
}

function cloneNode(n: XsNode): XsNode {
  return {
    value: n.value,
    children: [...n.children],
    perms: n.perms.map((p) => ({ ...p })),
    generation: n.generation,
  };
}

const parentOf = parentPath;

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function isChild(child: string, parent: string): boolean {
  if (parent === '/') return true;
  if (!child.startsWith(parent)) return false;
  const c = child[parent.length];
  return c === undefined || c === '/';
}

/** C atoi: leading blanks, optional sign, digits; anything else stops it. */
function atoi(s: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)/.exec(s);
  if (!m || m[1] === undefined) return 0;
  return Number(BigInt.asIntN(32, BigInt(m[1])));
}

/**
 * A request's errno, thrown through the handlers and turned into XS_ERROR.
 * Not an Error subclass: ENOENT is the normal path of every node creation,
 * and capturing a stack trace for it costs more than the whole request.
 */
class XsFail {
  constructor(readonly errno: XsErrno) {}
}

const NO_GENERATION = -1;

/** The requests xenstored 4.17 implements (wire_funcs with a handler). */
const KNOWN_TYPES = new Set([
  XS_CONTROL,
  XS_DIRECTORY,
  XS_READ,
  XS_GET_PERMS,
  XS_WATCH,
  XS_UNWATCH,
  XS_TRANSACTION_START,
  XS_TRANSACTION_END,
  XS_INTRODUCE,
  XS_RELEASE,
  XS_GET_DOMAIN_PATH,
  XS_WRITE,
  XS_MKDIR,
  XS_RM,
  XS_SET_PERMS,
  XS_IS_DOMAIN_INTRODUCED,
  XS_RESUME,
  XS_SET_TARGET,
  XS_RESET_WATCHES,
  XS_DIRECTORY_PART,
]);

/** XS_FLAG_PRIV in wire_funcs: refused with EACCES for unprivileged domains. */
const PRIV_ONLY_TYPES = new Set([
  XS_CONTROL,
  XS_INTRODUCE,
  XS_RELEASE,
  XS_IS_DOMAIN_INTRODUCED,
  XS_RESUME,
  XS_SET_TARGET,
]);

interface Accessed {
  node: XsNode | null;
  generation: number;
  oldPerms: XsPerm[] | undefined;
  modified: boolean;
  fireWatch: boolean;
  watchExact: boolean;
}

interface Transaction {
  id: number;
  accessed: Map<string, Accessed>;
  entryDelta: Map<number, number>;
  nodeCreated: boolean;
  failed: boolean;
}

interface Watch {
  path: string;
  token: string;
  /** The implicit prefix stripped from event paths when the watch was set with a relative path. */
  relativeTo: string | undefined;
}

/**
 * One client of the server. `domid` is who its requests act as: 0 for the
 * dom0 socket, N for domain N's socket (our stand-in for the ring page).
 */
export class XenstoreConnection {
  readonly domid: number;
  readonly watches: Watch[] = [];
  readonly transactions = new Map<number, Transaction>();
  nextTransactionId = 1;
  closed = false;
  private parser = new MessageParser();
  private pending: Buffer[] = [];
  private pendingEvents: string[] = [];

  constructor(
    readonly server: XenstoreServer,
    domid: number,
    private readonly sink: (b: Buffer) => boolean,
    private readonly closer: () => void,
  ) {
    this.domid = domid;
  }

  /** Bytes held for a partial request: at most 16 + XENSTORE_PAYLOAD_MAX. */
  get bufferedBytes(): number {
    return this.parser.buffered;
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
    for (const m of msgs) {
      if (this.closed) return;
      this.server.handle(this, m);
      // xenstored writes its queue out between requests, so only events of one request merge.
      this.pendingEvents = [];
    }
    // One write for all the replies to one read: pipelined clients cost one syscall, not one per reply.
    this.flush();
  }

  queue(type: number, reqId: number, txId: number, payload: Uint8Array): void {
    this.pending.push(encodeMessage(type, reqId, txId, payload));
  }

  queueEvent(path: string, token: string): void {
    const payload = `${path}\0${token}\0`;
    if (Buffer.byteLength(payload) > XENSTORE_PAYLOAD_MAX) return;
    // xenstored drops an event identical to one still queued (send_event): within one request here.
    if (!path.startsWith('@') && this.pendingEvents.includes(payload)) return;
    this.pendingEvents.push(payload);
    this.pending.push(encodeMessage(XS_WATCH_EVENT, 0, 0, payload));
  }

  flush(): void {
    if (this.closed || this.pending.length === 0) return;
    const out =
      this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingEvents = [];
    if (!this.sink(out)) this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.forget(this);
    this.closer();
  }
}

interface DomainState {
  introduced: boolean;
  target: number | undefined;
}

/**
 * An in-process xenstored that behaves like Xen 4.17's C xenstored: node
 * tree with permissions, transactions, watches, quotas and domain
 * introduction. Serve it over unix sockets with `listen` / `listenDomain`,
 * or attach any duplex byte stream with `attach`.
 */
export class XenstoreServer {
  readonly quotas: XenstoreQuotas;
  readonly privDomid: number;
  private readonly maxOutputBytes: number;
  private store = new Map<string, XsNode>();
  private entries = new Map<number, number>();
  private generation = 0;
  private connections = new Set<XenstoreConnection>();
  private domains = new Map<number, DomainState>();
  private specialPerms = new Map<string, XsPerm[]>([
    ['@introduceDomain', [{ domid: 0, perm: 'n' }]],
    ['@releaseDomain', [{ domid: 0, perm: 'n' }]],
  ]);
  private servers: { server: net.Server; path: string }[] = [];
  private sockets = new Set<net.Socket>();

  constructor(options: XenstoreServerOptions = {}) {
    this.quotas = { ...DEFAULT_QUOTAS, ...options.quotas };
    this.privDomid = options.privDomid ?? 0;
    this.maxOutputBytes = options.maxOutputBytes ?? 1 << 20;
    // setup_structure: "/", "/tool", "/tool/xenstored", owned by dom0 with no access for others.
    this.putMain('/', {
      value: Buffer.alloc(0),
      children: ['tool'],
      perms: [{ domid: 0, perm: 'n' }],
      generation: 0,
    });
    this.putMain('/tool', {
      value: Buffer.alloc(0),
      children: ['xenstored'],
      perms: [{ domid: 0, perm: 'n' }],
      generation: 0,
    });
    this.putMain('/tool/xenstored', {
      value: Buffer.alloc(0),
      children: [],
      perms: [{ domid: 0, perm: 'n' }],
      generation: 0,
    });
    this.entries.set(0, 3);
  }

  // ---------- connections ----------

  /** Attach a connection acting as `domid`; returns it. `write` returns false when the peer is gone. */
  attach(domid: number, write: (b: Buffer) => boolean, close: () => void): XenstoreConnection {
    const c = new XenstoreConnection(this, domid, write, close);
    this.connections.add(c);
    return c;
  }

  /** @internal */
  forget(c: XenstoreConnection): void {
    if (!this.connections.delete(c)) return;
    this.dropWatchesAndTransactions(c);
  }

  private attachSocket(sock: net.Socket, domid: number): void {
    this.sockets.add(sock);
    const conn = this.attach(
      domid,
      (b) => {
        if (sock.destroyed) return false;
        sock.write(b);
        return sock.writableLength <= this.maxOutputBytes;
      },
      () => sock.destroy(),
    );
    sock.on('data', (d) => conn.receive(d));
    sock.on('error', () => conn.close());
    sock.on('close', () => {
      this.sockets.delete(sock);
      conn.close();
    });
  }

  /** Serve dom0 (privileged) on a unix socket. */
  listen(path: string): Promise<void> {
    return this.listenAs(path, 0);
  }

  /** Serve domain `domid` on a unix socket: every request on it acts as that domid. Introduces the domain. */
  async listenDomain(domid: number, path: string): Promise<void> {
    if (!Number.isInteger(domid) || domid <= 0 || domid >= 0x7ff0) {
      throw new RangeError(`domid: expected 1..32751, got ${domid}`);
    }
    this.introduce(domid);
    await this.listenAs(path, domid);
  }

  private listenAs(path: string, domid: number): Promise<void> {
    if (existsSync(path)) unlinkSync(path);
    const server = net.createServer((sock) => {
      if (domid !== 0 && !this.domains.get(domid)?.introduced) {
        sock.destroy();
        return;
      }
      this.attachSocket(sock, domid);
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        this.servers.push({ server, path });
        resolve();
      });
    });
  }

  /** Stop listening, close every connection, remove the socket files. */
  async close(): Promise<void> {
    for (const c of [...this.connections]) c.close();
    for (const s of this.sockets) s.destroy();
    await Promise.all(
      this.servers.map(
        ({ server, path }) =>
          new Promise<void>((resolve) => {
            server.close(() => {
              if (existsSync(path)) unlinkSync(path);
              resolve();
            });
          }),
      ),
    );
    this.servers = [];
  }

  /** Number of live connections (for tests and metrics). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Introduce a domain as XS_INTRODUCE does (fires `@introduceDomain` the first time). */
  introduce(domid: number): void {
    const d = this.domains.get(domid);
    if (d?.introduced) return;
    this.domains.set(domid, { introduced: true, target: undefined });
    this.fireWatches(undefined, '@introduceDomain', undefined, true, undefined);
  }

  // ---------- permissions ----------

  private unprivileged(domid: number): boolean {
    return domid !== 0 && domid !== this.privDomid;
  }

  private permFor(conn: XenstoreConnection | undefined, perms: readonly XsPerm[]): number {
    if (!conn || !this.unprivileged(conn.domid) || perms[0] === undefined) return XS_PERM_ALL;
    return permForDomain(conn.domid, this.domains.get(conn.domid)?.target, perms);
  }

  // ---------- node access (main store or a transaction's view) ----------

  private putMain(path: string, n: XsNode): void {
    n.generation = ++this.generation;
    this.store.set(path, n);
  }

  private read(
    conn: XenstoreConnection | undefined,
    tx: Transaction | undefined,
    path: string,
  ): XsNode | null {
    if (!tx) return this.store.get(path) ?? null;
    const a = tx.accessed.get(path);
    if (a) return a.node;
    const isGuest = conn !== undefined && this.unprivileged(conn.domid);
    if (isGuest && tx.accessed.size >= this.quotas.nodesPerTransaction) {
      tx.failed = true;
      throw new XsFail('ENOSPC');
    }
    const main = this.store.get(path);
    tx.accessed.set(path, {
      node: main ? cloneNode(main) : null,
      generation: main ? main.generation : NO_GENERATION,
      oldPerms: main ? main.perms.map((p) => ({ ...p })) : undefined,
      modified: false,
      fireWatch: false,
      watchExact: false,
    });
    return tx.accessed.get(path)?.node ?? null;
  }

  private write(
    conn: XenstoreConnection | undefined,
    tx: Transaction | undefined,
    path: string,
    n: XsNode,
    quotaCheck: boolean,
  ): void {
    if (
      quotaCheck &&
      conn &&
      this.unprivileged(conn.domid) &&
      entrySize(n) >= this.quotas.entrySize
    ) {
      throw new XsFail('ENOSPC');
    }
    if (!tx) {
      this.putMain(path, n);
      return;
    }
    this.read(conn, tx, path);
    const a = tx.accessed.get(path) as Accessed;
    n.generation = ++this.generation;
    a.node = n;
    a.modified = true;
  }

  private remove(tx: Transaction | undefined, path: string): void {
    if (!tx) {
      this.store.delete(path);
      return;
    }
    const a = tx.accessed.get(path);
    if (a) {
      a.node = null;
      a.modified = true;
    }
  }

  private entryAdd(tx: Transaction | undefined, domid: number, delta: number): void {
    const m = tx ? tx.entryDelta : this.entries;
    m.set(domid, (m.get(domid) ?? 0) + delta);
  }

  private domainEntries(conn: XenstoreConnection): number {
    return this.unprivileged(conn.domid) ? (this.entries.get(conn.domid) ?? 0) : 0;
  }

  // ---------- path handling ----------

  private implicitPath(conn: XenstoreConnection): string {
    return `/local/domain/${conn.domid}`;
  }

  private canonicalize(conn: XenstoreConnection, name: string): string {
    if (name.startsWith('/') || name.startsWith('@')) return name;
    return `${this.implicitPath(conn)}/${name}`;
  }

  private validName(path: string): boolean {
    return nodePathProblem(path, this.quotas.pathLength) === undefined;
  }

  /** get_node: the node if it exists and `perm` is granted, else ENOENT/EACCES/EINVAL as xenstored decides. */
  private getNode(
    conn: XenstoreConnection,
    tx: Transaction | undefined,
    name: string | undefined,
    perm: number,
  ): XsNode {
    if (name === undefined || !this.validName(name)) throw new XsFail('EINVAL');
    const n = this.read(conn, tx, name);
    let errno: XsErrno = 'ENOENT';
    if (n) {
      if ((this.permFor(conn, n.perms) & perm) === perm) return n;
      errno = 'EACCES';
    }
    // errno_from_parents: hide the node's existence unless the nearest existing ancestor grants `perm`.
    let p = name;
    let parent: XsNode | null = null;
    do {
      p = parentOf(p);
      parent = this.read(conn, tx, p);
    } while (!parent && p !== '/');
    const parentPerm = parent ? this.permFor(conn, parent.perms) : 0;
    throw new XsFail(parentPerm & perm ? errno : 'EACCES');
  }

  // ---------- watches ----------

  private watchPermitted(
    c: XenstoreConnection,
    name: string,
    node: XsNode | undefined,
    oldPerms: XsPerm[] | undefined,
  ): boolean {
    if (oldPerms && this.permFor(c, oldPerms) & XS_PERM_READ) return true;
    const n = node ?? this.store.get(name);
    if (!n) return false;
    if (this.permFor(c, n.perms) & XS_PERM_READ) return true;
    const parent = this.store.get(parentOf(name));
    return parent ? (this.permFor(c, parent.perms) & XS_PERM_READ) !== 0 : false;
  }

  private fireWatches(
    conn: XenstoreConnection | undefined,
    name: string,
    node: XsNode | undefined,
    exact: boolean,
    oldPerms: XsPerm[] | undefined,
    tx?: Transaction,
  ): void {
    if (tx) {
      const a = tx.accessed.get(name);
      if (!a) {
        tx.failed = true;
        return;
      }
      if (!a.fireWatch) {
        a.fireWatch = true;
        a.watchExact = exact;
      } else if (!exact) a.watchExact = false;
      return;
    }
    void conn;
    const special = name.startsWith('@');
    for (const c of this.connections) {
      if (special) {
        const sp = this.specialPerms.get(name);
        if (!sp || !(this.permFor(c, sp) & XS_PERM_READ)) continue;
      } else if (!this.watchPermitted(c, name, node, oldPerms)) continue;
      for (const w of c.watches) {
        if (exact ? name === w.path : isChild(name, w.path))
          c.queueEvent(this.watchPath(w, name), w.token);
      }
    }
    for (const c of this.connections) if (c !== conn) c.flush();
  }

  private watchPath(w: Watch, name: string): string {
    if (w.relativeTo === undefined) return name;
    let p = name.slice(w.relativeTo.length);
    if (p.startsWith('/')) p = p.slice(1);
    return p;
  }

  private domainWatchCount(domid: number): number {
    let n = 0;
    for (const c of this.connections) if (c.domid === domid) n += c.watches.length;
    return n;
  }

  private dropWatchesAndTransactions(c: XenstoreConnection): void {
    c.watches.length = 0;
    c.transactions.clear();
  }

  // ---------- request dispatch ----------

  /** @internal Process one request from `conn`. */
  handle(conn: XenstoreConnection, m: XsMessage): void {
    const reply = (type: number, payload: Uint8Array | string): void => {
      const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
      if (body.length > XENSTORE_PAYLOAD_MAX) {
        conn.queue(XS_ERROR, m.reqId, m.txId, Buffer.from('E2BIG\0'));
        return;
      }
      conn.queue(type, m.reqId, m.txId, body);
    };
    try {
      this.dispatch(conn, m, reply);
    } catch (e) {
      // Anything but an XsFail is a bug of ours: answer EIO rather than take down every connection.
      reply(XS_ERROR, e instanceof XsFail ? `${e.errno}\0` : 'EIO\0');
    }
  }

  private dispatch(
    conn: XenstoreConnection,
    m: XsMessage,
    reply: (type: number, payload: Uint8Array | string) => void,
  ): void {
    const ok = (type: number): void => reply(type, 'OK\0');
    if (!KNOWN_TYPES.has(m.type)) throw new XsFail('ENOSYS');
    if (PRIV_ONLY_TYPES.has(m.type) && this.unprivileged(conn.domid)) throw new XsFail('EACCES');
    let tx: Transaction | undefined;
    if (m.type !== XS_WATCH && m.type !== XS_UNWATCH && m.txId !== 0) {
      tx = conn.transactions.get(m.txId);
      if (!tx) throw new XsFail('ENOENT');
    }
    const p = m.payload;
    const strings = splitZ(p);
    // onearg: exactly one nul, at the end
    const one = (): string | undefined =>
      p.length > 0 && p.indexOf(0) === p.length - 1 ? strings[0] : undefined;

    switch (m.type) {
      case XS_READ: {
        const n = this.getNode(conn, tx, this.canon(conn, one()), XS_PERM_READ);
        reply(XS_READ, n.value);
        return;
      }
      case XS_DIRECTORY: {
        const n = this.getNode(conn, tx, this.canon(conn, one()), XS_PERM_READ);
        reply(XS_DIRECTORY, Buffer.from(n.children.map((c) => `${c}\0`).join('')));
        return;
      }
      case XS_DIRECTORY_PART: {
        if (countNul(p) !== 2) throw new XsFail('EINVAL');
        const n = this.getNode(conn, tx, this.canon(conn, strings[0]), XS_PERM_READ);
        const off = atoi(strings[1] ?? '') >>> 0;
        const all = Buffer.from(n.children.map((c) => `${c}\0`).join(''));
        const gen = Buffer.from(`${n.generation}\0`);
        if (off >= all.length) {
          reply(XS_DIRECTORY_PART, Buffer.concat([gen, Buffer.from([0])]));
          return;
        }
        const maxlen = XENSTORE_PAYLOAD_MAX - gen.length - 1;
        let len = 0;
        let pos = off;
        while (true) {
          const end = all.indexOf(0, pos);
          const clen = end - pos;
          if (!(len + clen < maxlen)) break;
          len += clen + 1;
          pos = end + 1;
          if (off + len === all.length) break;
        }
        const parts = [gen, all.subarray(off, off + len)];
        if (off + len === all.length) parts.push(Buffer.from([0]));
        reply(XS_DIRECTORY_PART, Buffer.concat(parts));
        return;
      }
      case XS_GET_PERMS: {
        const n = this.getNode(conn, tx, this.canon(conn, one()), XS_PERM_READ);
        reply(XS_GET_PERMS, n.perms.map((x) => `${formatPerm(x)}\0`).join(''));
        return;
      }
      case XS_WRITE: {
        const z = p.indexOf(0);
        if (z < 0) throw new XsFail('EINVAL');
        const name = this.canonicalize(conn, p.subarray(0, z).toString('utf8'));
        const data = Buffer.from(p.subarray(z + 1));
        let node: XsNode;
        try {
          node = this.getNode(conn, tx, name, XS_PERM_WRITE);
          const updated = cloneNode(node);
          updated.value = data;
          this.write(conn, tx, name, updated, true);
          node = updated;
        } catch (e) {
          if (!(e instanceof XsFail) || e.errno !== 'ENOENT') throw e;
          node = this.createNode(conn, tx, name, data);
        }
        this.fireWatches(conn, name, node, false, undefined, tx);
        ok(XS_WRITE);
        return;
      }
      case XS_MKDIR: {
        const arg = one();
        const name = arg === undefined ? undefined : this.canonicalize(conn, arg);
        try {
          this.getNode(conn, tx, name, XS_PERM_WRITE);
        } catch (e) {
          if (!(e instanceof XsFail) || e.errno !== 'ENOENT' || name === undefined) throw e;
          const node = this.createNode(conn, tx, name, Buffer.alloc(0));
          this.fireWatches(conn, name, node, false, undefined, tx);
        }
        ok(XS_MKDIR);
        return;
      }
      case XS_RM: {
        const arg = one();
        const name = arg === undefined ? undefined : this.canonicalize(conn, arg);
        try {
          this.getNode(conn, tx, name, XS_PERM_WRITE);
        } catch (e) {
          if (!(e instanceof XsFail) || e.errno !== 'ENOENT' || name === undefined) throw e;
          if (this.read(conn, tx, parentOf(name))) {
            ok(XS_RM);
            return;
          }
          throw e;
        }
        if (name === '/') throw new XsFail('EINVAL');
        this.rmNode(conn, tx, name as string);
        ok(XS_RM);
        return;
      }
      case XS_SET_PERMS: {
        const nstr = countNul(p);
        if (nstr < 2) throw new XsFail('EINVAL');
        const nperms = nstr - 1;
        if (this.unprivileged(conn.domid) && nperms > this.quotas.permsPerNode)
          throw new XsFail('ENOSPC');
        const perms: XsPerm[] = [];
        for (let i = 1; i <= nperms; i++) {
          try {
            perms.push(parsePerm(strings[i] ?? ''));
          } catch {
            throw new XsFail('EINVAL');
          }
        }
        const path = strings[0] ?? '';
        if (path.startsWith('@')) {
          const sp = this.specialPerms.get(path);
          if (!sp) throw new XsFail('EINVAL');
          const need = XS_PERM_WRITE | XS_PERM_OWNER;
          if ((this.permFor(conn, sp) & need) !== need) throw new XsFail('EACCES');
          this.specialPerms.set(path, perms);
          ok(XS_SET_PERMS);
          return;
        }
        const name = this.canonicalize(conn, path);
        const node = this.getNode(conn, tx, name, XS_PERM_WRITE | XS_PERM_OWNER);
        const oldOwner = (node.perms[0] as XsPerm).domid;
        const newOwner = (perms[0] as XsPerm).domid;
        if (this.unprivileged(conn.domid) && newOwner !== oldOwner) throw new XsFail('EPERM');
        const updated = cloneNode(node);
        updated.perms = perms;
        this.write(conn, tx, name, updated, true);
        this.entryAdd(tx, oldOwner, -1);
        this.entryAdd(tx, newOwner, 1);
        this.fireWatches(conn, name, updated, false, node.perms, tx);
        ok(XS_SET_PERMS);
        return;
      }
      case XS_WATCH: {
        if (strings.length < 2) throw new XsFail('EINVAL');
        let path = strings[0] as string;
        const token = strings[1] as string;
        let relativeTo: string | undefined;
        if (path.startsWith('@')) {
          if (Buffer.byteLength(path) > XENSTORE_REL_PATH_MAX) throw new XsFail('EINVAL');
        } else {
          if (!path.startsWith('/')) relativeTo = this.implicitPath(conn);
          path = this.canonicalize(conn, path);
          if (!this.validName(path)) throw new XsFail('EINVAL');
        }
        if (conn.watches.some((w) => w.path === path && w.token === token))
          throw new XsFail('EEXIST');
        if (
          this.unprivileged(conn.domid) &&
          this.domainWatchCount(conn.domid) > this.quotas.watchesPerDomain
        ) {
          throw new XsFail('E2BIG');
        }
        const w: Watch = { path, token, relativeTo };
        conn.watches.push(w);
        ok(XS_WATCH);
        // xenstored fires once up front so a client can (re)read the state.
        conn.queueEvent(this.watchPath(w, path), token);
        return;
      }
      case XS_UNWATCH: {
        if (strings.length < 2) throw new XsFail('EINVAL');
        const path = this.canonicalize(conn, strings[0] as string);
        const i = conn.watches.findIndex((w) => w.path === path && w.token === strings[1]);
        if (i < 0) throw new XsFail('ENOENT');
        conn.watches.splice(i, 1);
        ok(XS_UNWATCH);
        return;
      }
      case XS_TRANSACTION_START: {
        if (tx) throw new XsFail('EBUSY');
        if (
          this.unprivileged(conn.domid) &&
          conn.transactions.size > this.quotas.transactionsPerConnection
        ) {
          throw new XsFail('ENOSPC');
        }
        let id = conn.nextTransactionId;
        while (id === 0 || conn.transactions.has(id)) id = (id + 1) >>> 0;
        conn.nextTransactionId = (id + 1) >>> 0;
        conn.transactions.set(id, {
          id,
          accessed: new Map(),
          entryDelta: new Map(),
          nodeCreated: false,
          failed: false,
        });
        reply(XS_TRANSACTION_START, `${id}\0`);
        return;
      }
      case XS_TRANSACTION_END: {
        const arg = one();
        if (arg !== 'T' && arg !== 'F') throw new XsFail('EINVAL');
        if (!tx) throw new XsFail('ENOENT');
        conn.transactions.delete(tx.id);
        if (arg === 'T') this.commit(conn, tx);
        ok(XS_TRANSACTION_END);
        return;
      }
      case XS_GET_DOMAIN_PATH: {
        const arg = one();
        if (arg === undefined) throw new XsFail('EINVAL');
        reply(XS_GET_DOMAIN_PATH, `/local/domain/${atoi(arg) >>> 0}\0`);
        return;
      }
      case XS_IS_DOMAIN_INTRODUCED: {
        const arg = one();
        if (arg === undefined) throw new XsFail('EINVAL');
        const domid = atoi(arg) >>> 0;
        // DOMID_SELF (0x7ff0) is always reported as introduced.
        const yes = domid === 0x7ff0 || domid === 0 || this.domains.get(domid)?.introduced === true;
        reply(XS_IS_DOMAIN_INTRODUCED, yes ? 'T\0' : 'F\0');
        return;
      }
      case XS_INTRODUCE: {
        if (strings.length < 3) throw new XsFail('EINVAL');
        const domid = atoi(strings[0] as string) >>> 0;
        const port = atoi(strings[2] as string);
        if (port <= 0) throw new XsFail('EINVAL');
        const existing = this.domains.get(domid);
        if (existing?.introduced) {
          // domain_conn_reset: a re-introduced domain starts with no watches or transactions.
          for (const c of this.connections)
            if (c.domid === domid) this.dropWatchesAndTransactions(c);
        } else this.introduce(domid);
        ok(XS_INTRODUCE);
        return;
      }
      case XS_RELEASE:
      case XS_RESUME: {
        const arg = one();
        if (arg === undefined) throw new XsFail('EINVAL');
        const domid = atoi(arg) >>> 0;
        if (domid === 0) throw new XsFail('EINVAL');
        if (!this.domains.get(domid)?.introduced) throw new XsFail('ENOENT');
        if (m.type === XS_RELEASE) this.release(domid);
        ok(m.type);
        return;
      }
      case XS_SET_TARGET: {
        if (strings.length < 2) throw new XsFail('EINVAL');
        const domid = atoi(strings[0] as string) >>> 0;
        const target = atoi(strings[1] as string) >>> 0;
        const d = this.domains.get(domid);
        if (!d?.introduced) throw new XsFail('ENOENT');
        if (!this.domains.get(target)?.introduced) throw new XsFail('ENOENT');
        d.target = target;
        ok(XS_SET_TARGET);
        return;
      }
      case XS_RESET_WATCHES: {
        this.dropWatchesAndTransactions(conn);
        ok(XS_RESET_WATCHES);
        return;
      }
      case XS_CONTROL:
        // xenstored's debug/control commands (log, quota, live update…) are not offered.
        throw new XsFail('EINVAL');
    }
    throw new XsFail('ENOSYS');
  }

  private canon(conn: XenstoreConnection, name: string | undefined): string | undefined {
    return name === undefined ? undefined : this.canonicalize(conn, name);
  }

  /** construct_node + create_node: create `name` and any missing ancestors, inheriting the nearest parent's permissions. */
  private createNode(
    conn: XenstoreConnection,
    tx: Transaction | undefined,
    name: string,
    data: Buffer,
  ): XsNode {
    const names: string[] = [];
    let cur = name;
    let parent: XsNode | null = null;
    while (!parent) {
      names.push(cur);
      cur = parentOf(cur);
      parent = this.read(conn, tx, cur);
      if (!parent && cur === '/') throw new XsFail('ENOENT');
    }
    const guest = this.unprivileged(conn.domid);
    if (tx) tx.nodeCreated = true;
    const parentPath = cur;
    const updatedParent = cloneNode(parent);
    const top = names[names.length - 1] as string;
    updatedParent.children.push(baseName(top));
    let inherit = parent.perms;
    const created: [string, XsNode][] = [];
    for (let i = names.length - 1; i >= 0; i--) {
      const path = names[i] as string;
      const perms = inherit.map((x) => ({ ...x }));
      if (guest) (perms[0] as XsPerm).domid = conn.domid;
      const child = names[i - 1];
      const n: XsNode = {
        value: i === 0 ? data : Buffer.alloc(0),
        children: child === undefined ? [] : [baseName(child)],
        perms,
        generation: 0,
      };
      created.push([path, n]);
      inherit = perms;
    }
    // Replay create_node's checks in its order (new nodes bottom up, then the existing parent)
    // before storing anything. A failure after its first write makes C xenstored fail the
    // transaction (destroy_node -> fail_transaction), so the commit answers ENOMEM.
    if (guest) {
      let count = this.domainEntries(conn);
      let written = 0;
      const failAt = (): never => {
        if (tx && written > 0) tx.failed = true;
        throw new XsFail('ENOSPC');
      };
      for (let k = created.length - 1; k >= 0; k--) {
        const n = (created[k] as [string, XsNode])[1];
        if (count >= this.quotas.nodesPerDomain) failAt();
        if (entrySize(n) >= this.quotas.entrySize) failAt();
        written++;
        if (!tx) count++;
      }
      if (entrySize(updatedParent) >= this.quotas.entrySize) failAt();
    }
    for (let i = created.length - 1; i >= 0; i--) {
      const [path, n] = created[i] as [string, XsNode];
      this.write(conn, tx, path, n, false);
      this.entryAdd(tx, (n.perms[0] as XsPerm).domid, 1);
    }
    this.write(conn, tx, parentPath, updatedParent, false);
    return (created[created.length - 1] as [string, XsNode])[1];
  }

  /** rm_node: delete `name` and its subtree, firing watches child-first (exact for descendants). */
  private rmNode(
    conn: XenstoreConnection | undefined,
    tx: Transaction | undefined,
    name: string,
  ): void {
    const parentPath = parentOf(name);
    const parent = this.read(conn, tx, parentPath);
    if (!parent) throw new XsFail('EINVAL');
    const walk = (path: string): void => {
      const n = this.read(conn, tx, path);
      if (!n) return;
      for (const c of [...n.children]) walk(path === '/' ? `/${c}` : `${path}/${c}`);
      this.remove(tx, path);
      if (tx) {
        this.fireWatches(conn, path, n, path !== name, undefined, tx);
      } else {
        this.fireWatches(conn, path, n, path !== name, undefined);
      }
      this.entryAdd(tx, (n.perms[0] as XsPerm).domid, -1);
    };
    walk(name);
    const updated = cloneNode(parent);
    updated.children = updated.children.filter((c) => c !== baseName(name));
    this.write(conn, tx, parentPath, updated, false);
  }

  private commit(conn: XenstoreConnection, tx: Transaction): void {
    if (tx.failed) throw new XsFail('ENOMEM');
    const guest = this.unprivileged(conn.domid);
    for (const [domid, delta] of tx.entryDelta) {
      let cnt = (this.entries.get(domid) ?? 0) + delta;
      if (cnt < 0) cnt = 0;
      if (
        tx.nodeCreated &&
        guest &&
        this.unprivileged(domid) &&
        cnt >= this.quotas.nodesPerDomain
      ) {
        throw new XsFail('ENOSPC');
      }
    }
    for (const [path, a] of tx.accessed) {
      const main = this.store.get(path);
      if ((main ? main.generation : NO_GENERATION) !== a.generation) throw new XsFail('EAGAIN');
    }
    for (const [path, a] of tx.accessed) {
      if (!a.modified) continue;
      if (a.node) this.putMain(path, cloneNode(a.node));
      else this.store.delete(path);
      if (a.fireWatch) this.fireWatches(conn, path, undefined, a.watchExact, a.oldPerms);
    }
    for (const [domid, delta] of tx.entryDelta) {
      this.entries.set(domid, Math.max(0, (this.entries.get(domid) ?? 0) + delta));
    }
  }

  private release(domid: number): void {
    // domain_tree_remove: a released domain's nodes go away, and it leaves the special nodes' ACLs.
    const owned: string[] = [];
    const visit = (path: string): void => {
      const n = this.store.get(path);
      if (!n) return;
      if ((n.perms[0] as XsPerm).domid === domid) {
        owned.push(path);
        return;
      }
      for (const c of n.children) visit(path === '/' ? `/${c}` : `${path}/${c}`);
    };
    visit('/');
    for (const path of owned) if (this.store.has(path)) this.rmNode(undefined, undefined, path);
    for (const [k, perms] of this.specialPerms) {
      const next = perms.map((x) => ({ ...x }));
      if ((next[0] as XsPerm).domid === domid) (next[0] as XsPerm).domid = this.privDomid;
      this.specialPerms.set(k, [
        next[0] as XsPerm,
        ...next.slice(1).filter((x) => x.domid !== domid),
      ]);
    }
    this.domains.delete(domid);
    this.entries.delete(domid);
    for (const c of [...this.connections]) if (c.domid === domid) c.close();
    this.fireWatches(undefined, '@releaseDomain', undefined, true, undefined);
  }
}

function splitZ(p: Buffer): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) {
      out.push(p.subarray(start, i).toString('utf8'));
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
