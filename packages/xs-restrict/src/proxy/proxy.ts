import { existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { CatalogueOp } from '../catalogue.js';
import {
  DEFAULT_QUOTAS,
  type XenstoreConnection,
  type XenstoreQuotas,
  type XenstoreServer,
} from '../server/server.js';
import {
  encodeMessage,
  XENSTORE_HEADER_SIZE,
  XENSTORE_PAYLOAD_MAX,
  XenstoreWireError,
  XS_CONTROL,
  XS_DIRECTORY,
  XS_DIRECTORY_PART,
  XS_ERROR,
  XS_GET_DOMAIN_PATH,
  XS_GET_PERMS,
  XS_INTRODUCE,
  XS_IS_DOMAIN_INTRODUCED,
  XS_MKDIR,
  XS_READ,
  XS_RELEASE,
  XS_RESET_WATCHES,
  XS_RESUME,
  XS_RM,
  XS_SET_PERMS,
  XS_SET_TARGET,
  XS_TRANSACTION_END,
  XS_TRANSACTION_START,
  XS_TYPE_NAMES,
  XS_UNWATCH,
  XS_WATCH,
  XS_WATCH_EVENT,
  XS_WRITE,
  type XsErrno,
  type XsMessage,
} from '../wire/wire.js';
import { Allowlist, type AllowRule, allowlistFromCatalogue } from './allowlist.js';
import { DomainBook, type PrivilegedLink, PrivilegedSession } from './privileged.js';

/** Per-client bounds the proxy enforces on the device model. */
export interface ProxyLimits {
  /** Watches of all the proxy's clients together (xenstored's per-domain count; refused with E2BIG). */
  maxWatches: number;
  /** Open transactions per client (refused with ENOSPC). */
  maxTransactions: number;
  /** Requests forwarded and not yet answered per client; beyond it the proxy stops reading that client. */
  maxInFlight: number;
  /** Reply bytes queued for a client that does not read; beyond it the client is closed. */
  maxOutputBytes: number;
  /** Concurrent clients (QEMU opens a handful of xenstore connections). */
  maxClients: number;
}

export const DEFAULT_PROXY_LIMITS: Readonly<ProxyLimits> = {
  maxWatches: 128,
  maxTransactions: 10,
  maxInFlight: 64,
  maxOutputBytes: 256 * 1024,
  maxClients: 16,
};

/**
 * Where the proxy forwards to. A string is a unix socket whose connections
 * already act as the proxied domid (the C xenstored peer's `domN.sock`,
 * `XenstoreServer.listenDomain`); a server is attached to as that domid.
 */
export type ProxyUpstream = string | XenstoreServer | PrivilegedUpstream;

/**
 * The daemon's privileged socket (`/run/xenstored/socket`), or a server
 * attached to as dom0: the proxy then decides every request as xenstored
 * 4.17 decides it for the proxied domid (see README, "Privileged upstream").
 */
export interface PrivilegedUpstream {
  privileged: string | XenstoreServer;
}

export interface RestrictingProxyOptions {
  /** The guest domain the device model serves; every request acts as this domid upstream. */
  domid: number;
  upstream: ProxyUpstream;
  /** Default: allowlistFromCatalogue(CATALOGUE). */
  allowlist?: readonly AllowRule[];
  /** Where the DM's relative paths point: it is a dom0 backend, so `/local/domain/0`. */
  homePath?: string;
  limits?: Partial<ProxyLimits>;
  /**
   * Privileged upstream only: the daemon's quotas to apply to the domid (xenstored's `-Q`).
   * Default: the embedded server's own quotas, or C xenstored 4.17's defaults for a socket path.
   */
  quotas?: Partial<XenstoreQuotas>;
  /** Receives one JSON line per refusal or client-closing event. Default: stderr. */
  log?: (line: string) => void;
}

/** A refusal or client-closing event, as logged (one JSON object per line). */
export interface ProxyLogRecord {
  time: string;
  domid: number;
  client: number;
  event:
    | 'refused'
    | 'protocol-error'
    | 'slow-reader'
    | 'event-overflow'
    | 'upstream-closed'
    | 'too-many-clients';
  request?: { type: string; reqId: number; txId: number; path?: string };
  rule?: string;
  errno?: XsErrno;
  detail?: string;
}

export interface ProxyClientStats {
  id: number;
  inFlight: number;
  watches: number;
  transactions: number;
  /** Bytes held by the two parsers (client side, upstream side) for partial messages. */
  parserBytes: number;
  /** Reply bytes queued in the client socket. */
  outputBytes: number;
}

const PRIVILEGED = new Map<number, string>([
  [XS_CONTROL, 'CONTROL'],
  [XS_INTRODUCE, 'INTRODUCE'],
  [XS_RELEASE, 'RELEASE'],
  [XS_SET_TARGET, 'SET_TARGET'],
  [XS_RESUME, 'RESUME'],
  [XS_IS_DOMAIN_INTRODUCED, 'IS_DOMAIN_INTRODUCED'],
]);

const PATH_OPS = new Map<number, CatalogueOp>([
  [XS_READ, 'read'],
  [XS_DIRECTORY, 'read'],
  [XS_DIRECTORY_PART, 'read'],
  [XS_GET_PERMS, 'read'],
  [XS_WRITE, 'write'],
  [XS_MKDIR, 'mkdir'],
  [XS_RM, 'rm'],
  [XS_SET_PERMS, 'setPerms'],
  [XS_WATCH, 'watch'],
]);

interface Upstream {
  write(b: Buffer): void;
  /** Close after what was written has gone out. */
  end(): void;
}

interface InFlight {
  /** A refusal queued behind earlier forwarded requests, so replies keep the order of requests. */
  refusal?: Buffer;
  type: number;
  reqId: number;
  txId: number;
  watchKey?: string;
  watch?: ClientWatch;
}

interface ClientWatch {
  /** Absolute path as registered upstream. */
  path: string;
  token: string;
  /** Prefix (with trailing '/') to strip from events, for a watch the client set with a relative path. */
  strip: string | undefined;
}

/**
 * MessageParser's framing without its copies: whole messages are returned as
 * views of the chunk they arrived in (the proxy only looks at them before the
 * next read), and only a trailing partial message is kept, so at most
 * 16 + 4096 - 1 bytes are held between reads. The length field is checked as
 * soon as a header is complete, as MessageParser does.
 */
class Framer {
  private carry: Buffer | undefined;

  get buffered(): number {
    return this.carry?.length ?? 0;
  }

  push(chunk: Buffer): XsMessage[] {
    const buf = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = undefined;
    const out: XsMessage[] = [];
    let off = 0;
    while (buf.length - off >= XENSTORE_HEADER_SIZE) {
      const len = buf.readUInt32LE(off + 12);
      if (len > XENSTORE_PAYLOAD_MAX) {
        throw new XenstoreWireError(
          'EPAYLOAD',
          `length field ${len} exceeds the payload limit ${XENSTORE_PAYLOAD_MAX} (type ${buf.readUInt32LE(off)}, req_id ${buf.readUInt32LE(off + 4)})`,
        );
      }
      const end = off + XENSTORE_HEADER_SIZE + len;
      if (end > buf.length) break;
      out.push({
        type: buf.readUInt32LE(off),
        reqId: buf.readUInt32LE(off + 4),
        txId: buf.readUInt32LE(off + 8),
        payload: buf.subarray(off + XENSTORE_HEADER_SIZE, end),
      });
      off = end;
    }
    if (off < buf.length) this.carry = Buffer.from(buf.subarray(off));
    return out;
  }
}

let nextClientId = 1;

/** How long a closed client's upstream waits for outstanding replies before it is closed anyway. */
const DRAIN_TIMEOUT_MS = 5000;

class ProxyClient {
  readonly id = nextClientId++;
  readonly parser = new Framer();
  readonly upParser = new Framer();
  readonly inFlight: InFlight[] = [];
  /** Requests of the current read to forward; encoded only when the read cannot pass through raw. */
  toUpstream: [XsMessage, Buffer][] = [];
  /** Set when a request of the current read was refused or rewritten (no raw pass-through). */
  altered = false;
  /** Watches set with a relative path: only then do events need rewriting. */
  relativeWatches = 0;
  readonly watches = new Map<string, ClientWatch>();
  readonly transactions = new Set<number>();
  upstream: Upstream | undefined;
  /** After the client closed: the upstream, kept open until the replies to what was sent have come back. */
  draining: Upstream | undefined;
  drainTimer: NodeJS.Timeout | undefined;
  closed = false;
  paused = false;
  constructor(
    readonly proxy: RestrictingProxy,
    readonly sock: net.Socket,
  ) {}
}

function nulSplit(p: Buffer): string[] {
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

/**
 * A xenstore endpoint for one deprivileged device model of domain `domid`.
 *
 * Each client gets its own upstream connection that acts as `domid` (a
 * domain socket of the daemon, or `XenstoreServer.attach`), so permission
 * checks, quotas and watch-event filtering are the daemon's own: a permitted
 * request gets byte for byte the reply a direct domain-N connection gets. The
 * proxy adds what the daemon cannot know: the allowlist derived from the key
 * catalogue, refusal of privileged operations, the DM's watch and
 * transaction quotas, and bounds on memory per client.
 */
export class RestrictingProxy {
  readonly domid: number;
  readonly limits: ProxyLimits;
  readonly allowlist: Allowlist;
  readonly homePath: string;
  private readonly upstreamSpec: ProxyUpstream;
  /** Domain N's counts shared by the clients of a privileged upstream. */
  private readonly book: DomainBook | undefined;
  private readonly logSink: (line: string) => void;
  private readonly clients = new Set<ProxyClient>();
  private readonly drainingClients = new Set<ProxyClient>();
  private server: net.Server | undefined;
  private path: string | undefined;

  constructor(options: RestrictingProxyOptions) {
    if (!Number.isInteger(options.domid) || options.domid <= 0 || options.domid >= 0x7ff0) {
      throw new RangeError(`domid: expected 1..32751, got ${options.domid}`);
    }
    this.domid = options.domid;
    this.upstreamSpec = options.upstream;
    const up = options.upstream;
    if (typeof up === 'object' && 'privileged' in up) {
      const base = typeof up.privileged === 'string' ? DEFAULT_QUOTAS : up.privileged.quotas;
      this.book = new DomainBook(options.domid, { ...base, ...options.quotas });
    }
    this.limits = { ...DEFAULT_PROXY_LIMITS, ...options.limits };
    this.allowlist = new Allowlist(options.allowlist ?? allowlistFromCatalogue(), options.domid);
    this.homePath = options.homePath ?? '/local/domain/0';
    this.logSink = options.log ?? ((line) => process.stderr.write(`${line}\n`));
  }

  /** Listen on a unix socket (replacing a stale socket file). */
  listen(path: string): Promise<void> {
    if (existsSync(path)) unlinkSync(path);
    const server = net.createServer((sock) => this.accept(sock));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        this.server = server;
        this.path = path;
        resolve();
      });
    });
  }

  /** Stop listening, close every client (ending its upstream state), remove the socket file. */
  async close(): Promise<void> {
    for (const c of [...this.clients]) this.closeClient(c, true);
    for (const c of [...this.drainingClients]) this.endDrain(c);
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (this.path && existsSync(this.path)) unlinkSync(this.path);
  }

  /** Closed clients whose upstream connection still waits for replies (at most 5 s each). */
  get drainingCount(): number {
    return this.drainingClients.size;
  }

  /** Per-client state sizes, for monitoring and the memory-bound tests. */
  stats(): ProxyClientStats[] {
    return [...this.clients].map((c) => ({
      id: c.id,
      inFlight: c.inFlight.length,
      watches: c.watches.size,
      transactions: c.transactions.size,
      parserBytes: c.parser.buffered + c.upParser.buffered,
      outputBytes: c.sock.writableLength,
    }));
  }

  private log(c: ProxyClient, rec: Omit<ProxyLogRecord, 'time' | 'domid' | 'client'>): void {
    const full: ProxyLogRecord = {
      time: new Date().toISOString(),
      domid: this.domid,
      client: c.id,
      ...rec,
    };
    this.logSink(JSON.stringify(full));
  }

  private accept(sock: net.Socket): void {
    const c = new ProxyClient(this, sock);
    sock.on('error', () => this.closeClient(c));
    sock.on('close', () => this.closeClient(c));
    if (this.clients.size >= this.limits.maxClients) {
      this.log(c, { event: 'too-many-clients', detail: `limit ${this.limits.maxClients}` });
      sock.destroy();
      return;
    }
    this.clients.add(c);
    c.upstream = this.openUpstream(c);
    sock.on('data', (d) => this.fromClient(c, d));
  }

  private openUpstream(c: ProxyClient): Upstream {
    const spec = this.upstreamSpec;
    if (typeof spec === 'object' && 'privileged' in spec) {
      const target = spec.privileged;
      return new PrivilegedSession(
        this.book as DomainBook,
        (onData, onClose) => openLink(target, 0, onData, onClose),
        (b) => this.fromUpstream(c, b),
        () => this.upstreamClosed(c),
        (detail) => {
          if (c.closed) return;
          this.log(c, { event: 'event-overflow', detail });
          this.closeClient(c, true);
        },
      );
    }
    return openLink(
      spec,
      this.domid,
      (b) => this.fromUpstream(c, b),
      () => this.upstreamClosed(c),
    );
  }

  private send(c: ProxyClient, b: Buffer): void {
    if (c.closed) return;
    c.sock.write(b);
    if (c.sock.writableLength > this.limits.maxOutputBytes) {
      this.log(c, {
        event: 'slow-reader',
        detail: `${c.sock.writableLength} reply bytes queued, limit ${this.limits.maxOutputBytes}`,
      });
      this.closeClient(c, true);
    }
  }

  private refuse(c: ProxyClient, m: XsMessage, errno: XsErrno, rule: string, path?: string): void {
    const request: NonNullable<ProxyLogRecord['request']> = {
      type: XS_TYPE_NAMES[m.type] ?? `type ${m.type}`,
      reqId: m.reqId,
      txId: m.txId,
    };
    if (path !== undefined) request.path = path;
    c.altered = true;
    this.log(c, { event: 'refused', request, rule, errno });
    // xenstored's error reply copies the request's header: same req_id and tx_id.
    const reply = encodeMessage(XS_ERROR, m.reqId, m.txId, `${errno}\0`);
    if (c.inFlight.length === 0) this.send(c, reply);
    else c.inFlight.push({ refusal: reply, type: m.type, reqId: m.reqId, txId: m.txId });
  }

  private fromClient(c: ProxyClient, chunk: Buffer): void {
    if (c.closed) return;
    const aligned = c.parser.buffered === 0;
    c.altered = false;
    let msgs: XsMessage[];
    try {
      msgs = c.parser.push(chunk);
    } catch (e) {
      this.log(c, { event: 'protocol-error', detail: (e as Error).message });
      this.closeClient(c, true);
      return;
    }
    for (const m of msgs) {
      if (c.closed) return;
      this.check(c, m);
    }
    // One write for all the requests of one read: a pipelining DM costs one syscall, not one each.
    const out = c.toUpstream;
    if (out.length > 0) {
      c.toUpstream = [];
      // Whole messages, all forwarded unchanged: the bytes as read are the bytes to send.
      if (aligned && !c.altered && c.parser.buffered === 0) c.upstream?.write(chunk);
      else {
        const enc = out.map(([m, p]) => encodeMessage(m.type, m.reqId, m.txId, p));
        c.upstream?.write(enc.length === 1 ? (enc[0] as Buffer) : Buffer.concat(enc));
      }
    }
    if (!c.closed && !c.paused && c.inFlight.length >= this.limits.maxInFlight) {
      c.paused = true;
      c.sock.pause();
    }
  }

  private absolute(path: string): string {
    return path.startsWith('/') || path.startsWith('@') ? path : `${this.homePath}/${path}`;
  }

  private forward(c: ProxyClient, m: XsMessage, payload: Buffer, f: Partial<InFlight> = {}): void {
    c.inFlight.push({ type: m.type, reqId: m.reqId, txId: m.txId, ...f });
    if (payload !== m.payload) c.altered = true;
    c.toUpstream.push([m, payload]);
  }

  private check(c: ProxyClient, m: XsMessage): void {
    const priv = PRIVILEGED.get(m.type);
    if (priv !== undefined) {
      this.refuse(c, m, 'EACCES', `privileged-op:${priv}`);
      return;
    }
    switch (m.type) {
      case XS_GET_DOMAIN_PATH:
        this.forward(c, m, m.payload);
        return;
      case XS_TRANSACTION_START:
        if (
          m.txId === 0 &&
          c.transactions.size +
            c.inFlight.filter((f) => f.type === XS_TRANSACTION_START && !f.refusal).length >=
            this.limits.maxTransactions
        ) {
          this.refuse(c, m, 'ENOSPC', 'quota:transactions');
          return;
        }
        this.forward(c, m, m.payload);
        return;
      case XS_TRANSACTION_END:
      case XS_RESET_WATCHES:
        this.forward(c, m, m.payload);
        return;
      case XS_UNWATCH: {
        const parts = nulSplit(m.payload);
        const [path, token] = parts;
        if (path === undefined || token === undefined) {
          this.refuse(c, m, 'EINVAL', 'malformed');
          return;
        }
        const abs = this.absolute(path);
        this.forward(c, m, Buffer.from(`${abs}\0${token}\0`), { watchKey: `${abs}\0${token}` });
        return;
      }
    }
    const op = PATH_OPS.get(m.type);
    if (op === undefined) {
      this.refuse(c, m, 'EACCES', 'unknown-type');
      return;
    }
    const z = m.payload.indexOf(0);
    if (z < 0) {
      this.refuse(c, m, 'EINVAL', 'malformed');
      return;
    }
    const given = m.payload.subarray(0, z).toString('utf8');
    const abs = this.absolute(given);
    const rule = this.allowlist.match(op, abs);
    if (!rule) {
      this.refuse(c, m, 'EACCES', `not-in-allowlist:${op}`, abs);
      return;
    }
    const rest = m.payload.subarray(z + 1);
    const payload = abs === given ? m.payload : Buffer.concat([Buffer.from(`${abs}\0`), rest]);
    if (payload.length > XENSTORE_PAYLOAD_MAX) {
      this.refuse(c, m, 'E2BIG', 'payload-after-rewrite', abs);
      return;
    }
    if (m.type === XS_WATCH) {
      const token = nulSplit(rest)[0];
      if (token === undefined) {
        this.refuse(c, m, 'EINVAL', 'malformed', abs);
        return;
      }
      let total = 0;
      for (const other of this.clients) total += other.watches.size;
      for (const other of this.clients) for (const f of other.inFlight) if (f.watch) total++;
      if (total >= this.limits.maxWatches) {
        this.refuse(c, m, 'E2BIG', 'quota:watches', abs);
        return;
      }
      const watch: ClientWatch = {
        path: abs,
        token,
        strip: abs === given ? undefined : `${this.homePath}/`,
      };
      this.forward(c, m, payload, { watch });
      return;
    }
    this.forward(c, m, payload);
  }

  private fromUpstream(c: ProxyClient, chunk: Buffer): void {
    if (c.closed) {
      this.drain(c, chunk);
      return;
    }
    const aligned = c.upParser.buffered === 0;
    let msgs: XsMessage[];
    try {
      msgs = c.upParser.push(chunk);
    } catch (e) {
      this.log(c, { event: 'protocol-error', detail: `upstream: ${(e as Error).message}` });
      this.closeClient(c);
      return;
    }
    const out: (Buffer | XsMessage)[] = [];
    let altered = false;
    for (const m of msgs) {
      if (m.type === XS_WATCH_EVENT) {
        const rewritten = c.relativeWatches > 0 ? this.event(c, m) : undefined;
        if (rewritten) altered = true;
        out.push(rewritten ?? m);
        continue;
      }
      const f = c.inFlight.shift();
      if (f) this.settle(c, f, m);
      out.push(m);
      while (c.inFlight[0]?.refusal) {
        out.push((c.inFlight.shift() as InFlight).refusal as Buffer);
        altered = true;
      }
    }
    if (out.length > 0) {
      if (aligned && !altered && c.upParser.buffered === 0) this.send(c, chunk);
      else {
        const enc = out.map((x) =>
          Buffer.isBuffer(x) ? x : encodeMessage(x.type, x.reqId, x.txId, x.payload),
        );
        this.send(c, enc.length === 1 ? (enc[0] as Buffer) : Buffer.concat(enc));
      }
    }
    if (c.paused && !c.closed && c.inFlight.length < this.limits.maxInFlight) {
      c.paused = false;
      c.sock.resume();
    }
  }

  /** A watch event with the home prefix stripped, for a relative watch; undefined when unchanged. */
  private event(c: ProxyClient, m: XsMessage): Buffer | undefined {
    const [path, token] = nulSplit(m.payload);
    if (path !== undefined && token !== undefined) {
      for (const w of c.watches.values()) {
        if (w.token !== token || w.strip === undefined) continue;
        if (path === w.path || path.startsWith(`${w.path}/`)) {
          return encodeMessage(
            XS_WATCH_EVENT,
            m.reqId,
            m.txId,
            `${path.slice(w.strip.length)}\0${token}\0`,
          );
        }
      }
    }
    return undefined;
  }

  private settle(c: ProxyClient, f: InFlight, m: XsMessage): void {
    const ok = m.type !== XS_ERROR;
    switch (f.type) {
      case XS_WATCH:
        if (ok && f.watch) {
          const key = `${f.watch.path}\0${f.watch.token}`;
          if (!c.watches.has(key) && f.watch.strip !== undefined) c.relativeWatches++;
          c.watches.set(key, f.watch);
        }
        return;
      case XS_UNWATCH:
        if (ok && f.watchKey !== undefined) {
          if (c.watches.get(f.watchKey)?.strip !== undefined) c.relativeWatches--;
          c.watches.delete(f.watchKey);
        }
        return;
      case XS_TRANSACTION_START: {
        const id = Number.parseInt(m.payload.toString(), 10);
        if (ok && Number.isInteger(id) && id > 0 && id <= 0xffffffff) c.transactions.add(id);
        return;
      }
      case XS_TRANSACTION_END: {
        // xenstored forgets the transaction once the argument is valid, whether the commit worked or not.
        const err = ok ? '' : m.payload.toString().replace(/\0.*$/s, '');
        if (err !== 'EINVAL') c.transactions.delete(f.txId);
        return;
      }
      case XS_RESET_WATCHES:
        if (ok) {
          c.watches.clear();
          c.relativeWatches = 0;
          c.transactions.clear();
        }
        return;
    }
  }

  private upstreamClosed(c: ProxyClient): void {
    if (c.closed) return;
    // Chosen behaviour: the client is closed, not silently reconnected. Its transactions died with
    // the upstream connection, and a DM must not mistake a new xenstored for the old one.
    this.log(c, {
      event: 'upstream-closed',
      errno: 'EIO',
      detail: `upstream xenstore connection lost; ${c.inFlight.length} request(s) answered EIO, client closed`,
    });
    for (const f of c.inFlight.splice(0)) {
      c.sock.write(f.refusal ?? encodeMessage(XS_ERROR, f.reqId, f.txId, 'EIO\0'));
    }
    c.upstream = undefined;
    this.closeClient(c);
  }

  private drain(c: ProxyClient, chunk: Buffer): void {
    if (!c.draining) return;
    let msgs: XsMessage[];
    try {
      msgs = c.upParser.push(chunk);
    } catch {
      this.endDrain(c);
      return;
    }
    for (const m of msgs) if (m.type !== XS_WATCH_EVENT) c.inFlight.shift();
    if (c.inFlight.length === 0) this.endDrain(c);
  }

  private endDrain(c: ProxyClient): void {
    if (c.drainTimer) clearTimeout(c.drainTimer);
    c.drainTimer = undefined;
    c.inFlight.length = 0;
    const up = c.draining;
    c.draining = undefined;
    this.drainingClients.delete(c);
    up?.end();
  }

  /** `hard` drops what is queued for the client (a slow reader or a protocol violator gets nothing more). */
  private closeClient(c: ProxyClient, hard = false): void {
    if (c.closed) return;
    c.closed = true;
    this.clients.delete(c);
    const up = c.upstream;
    c.upstream = undefined;
    if (up) {
      // A domain socket of C xenstored is a ring that outlives the connection: undo the client's
      // state explicitly so a leak does not outlive it, and wait for every reply, so none is left
      // on the ring for the next connection to read as its own.
      c.draining = up;
      this.drainingClients.add(c);
      // Queued refusals have no reply to wait for.
      const waiting = c.inFlight.filter((f) => !f.refusal);
      c.inFlight.splice(0, c.inFlight.length, ...waiting);
      const undo: Buffer[] = [];
      for (const tx of c.transactions) {
        c.inFlight.push({ type: XS_TRANSACTION_END, reqId: 0, txId: tx });
        undo.push(encodeMessage(XS_TRANSACTION_END, 0, tx, 'F\0'));
      }
      for (const w of c.watches.values()) {
        c.inFlight.push({ type: XS_UNWATCH, reqId: 0, txId: 0 });
        undo.push(encodeMessage(XS_UNWATCH, 0, 0, `${w.path}\0${w.token}\0`));
      }
      // One write: an upstream that answers synchronously (attach) must see the whole list first.
      if (undo.length > 0) up.write(Buffer.concat(undo));
      if (c.inFlight.length === 0) this.endDrain(c);
      else if (c.draining) {
        c.drainTimer = setTimeout(() => this.endDrain(c), DRAIN_TIMEOUT_MS);
        c.drainTimer.unref();
      }
    }
    if (hard) c.sock.destroy();
    else c.sock.end();
  }
}

/**
 * A connection to the upstream: a unix socket (whose daemon decides who it acts as), or the
 * embedded server attached as `domid` (0 for the privileged mode's dom0 link).
 */
function openLink(
  target: string | XenstoreServer,
  domid: number,
  onData: (b: Buffer) => void,
  onClose: () => void,
): PrivilegedLink {
  if (typeof target === 'string') {
    const sock = net.createConnection(target);
    sock.on('data', onData);
    sock.on('error', () => undefined);
    sock.on('close', onClose);
    return { write: (b) => sock.write(b), end: () => sock.end() };
  }
  let ending = false;
  let conn: XenstoreConnection | undefined = target.attach(
    domid,
    (b) => {
      onData(b);
      return true;
    },
    () => {
      if (!ending) onClose();
    },
  );
  return {
    write: (b) => conn?.receive(b),
    end: () => {
      ending = true;
      conn?.close();
      conn = undefined;
    },
    // XenstoreConnection.receive handles every request of a chunk before returning.
    atomicWrites: true,
  };
}

/** The most bytes of message data the proxy holds for one client besides its socket's output queue. */
export function proxyClientBufferBound(): number {
  return 2 * (XENSTORE_HEADER_SIZE + XENSTORE_PAYLOAD_MAX);
}
