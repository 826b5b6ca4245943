/**
 * The restricting proxy's transport: one upstream connection per client of
 * the device model, every request put to decide() and then forwarded or
 * refused, replies and events relayed in order, and memory per client bounded.
 */
import { existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { type ActivityPoll, activityPoll } from '../poll.js';
import { DEFAULT_QUOTAS } from '../rules/quotas.js';
import { encodeMessage, type XsMessage } from '../wire/codec.js';
import {
  XS_ERROR,
  XS_TRANSACTION_END,
  XS_TYPE_NAMES,
  XS_UNWATCH,
  XS_WATCH_EVENT,
  type XsErrno,
} from '../wire/constants.js';
import { firstString } from '../wire/strings.js';
import { Allowlist, allowlistFromCatalogue } from './allowlist.js';
import { type InFlight, ProxyClient } from './client.js';
import { decide } from './decide.js';
import { openLink, type Upstream } from './link.js';
import { isoTime, type LogFields, logLine } from './log-line.js';
import {
  DEFAULT_PROXY_LIMITS,
  type ProxyClientStats,
  type ProxyLimits,
  type ProxyLogRecord,
  type ProxyUpstream,
  type RestrictingProxyOptions,
} from './options.js';
import { DomainBook } from './privileged/book.js';
import { PrivilegedSession } from './privileged/session.js';
import { SharedPermsCache } from './privileged/shared-cache.js';

export {
  DEFAULT_PROXY_LIMITS,
  type PrivilegedUpstream,
  type ProxyClientStats,
  type ProxyLimits,
  type ProxyLogRecord,
  type ProxyUpstream,
  proxyClientBufferBound,
  type RestrictingProxyOptions,
} from './options.js';

/** A request as a log line names it. */
function logged(m: XsMessage, path: string | undefined): NonNullable<ProxyLogRecord['request']> {
  const request: NonNullable<ProxyLogRecord['request']> = {
    type: XS_TYPE_NAMES[m.type] ?? `type ${m.type}`,
    reqId: m.reqId,
    txId: m.txId,
  };
  if (path !== undefined) request.path = path;
  return request;
}

/** Move the refusals at the head of `c.inFlight` to `out`; true if there were any. */
function takeRefusals(c: ProxyClient, out: (Buffer | XsMessage)[]): boolean {
  let any = false;
  while (c.inFlight[0]?.refusal) {
    out.push((c.inFlight.shift() as InFlight).refusal as Buffer);
    any = true;
  }
  return any;
}

/** How long a closed client's upstream waits for outstanding replies before it is closed anyway. */
const DRAIN_TIMEOUT_MS = 5000;

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
  private readonly trace: boolean;
  /** The privileged sessions' perms cache, with an in-process server (shared-cache.ts). */
  private sharedCache: SharedPermsCache | undefined;
  private readonly clients = new Set<ProxyClient>();
  private readonly drainingClients = new Set<ProxyClient>();
  private server: net.Server | undefined;
  private path: string | undefined;
  private readonly poll: ActivityPoll | undefined;

  constructor(options: RestrictingProxyOptions) {
    if (!Number.isInteger(options.domid) || options.domid <= 0 || options.domid >= 0x7ff0) {
      throw new RangeError(`domid: expected 1..32751, got ${options.domid}`);
    }
    this.domid = options.domid;
    this.upstreamSpec = options.upstream;
    const up = options.upstream;
    if (typeof up === 'object' && 'privileged' in up) {
      const base = typeof up.privileged === 'string' ? DEFAULT_QUOTAS : up.privileged.quotas;
      // An in-process server: one dom0 connection of the proxy's keeps its sessions' cache exact.
      if (typeof up.privileged !== 'string') this.sharedCache = new SharedPermsCache(up.privileged);
      this.book = new DomainBook(options.domid, { ...base, ...options.quotas });
    }
    this.limits = { ...DEFAULT_PROXY_LIMITS, ...options.limits };
    this.allowlist = new Allowlist(options.allowlist ?? allowlistFromCatalogue(), options.domid);
    this.homePath = options.homePath ?? '/local/domain/0';
    this.logSink = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.trace = options.trace === true;
    this.poll = activityPoll(options.pollMicros);
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
    this.poll?.stop();
    for (const c of [...this.clients]) this.closeClient(c, true);
    for (const c of [...this.drainingClients]) this.endDrain(c);
    this.sharedCache?.close();
    this.sharedCache = undefined;
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (this.path && existsSync(this.path)) unlinkSync(this.path);
  }

  /** Closed clients whose upstream connection still waits for replies (at most 5 s each). */
  get drainingCount(): number {
    return this.drainingClients.size;
  }

  /** @internal Watches of all clients, set or being set (xenstored counts them per domain). */
  watchesHeld(): number {
    let total = 0;
    for (const other of this.clients) {
      total += other.watches.size;
      for (const f of other.inFlight) if (f.watch) total++;
    }
    return total;
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

  private log(c: ProxyClient, rec: LogFields): void {
    this.logSink(logLine(isoTime(Date.now()), this.domid, c.id, rec));
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
    sock.on('data', (d) => {
      this.poll?.touch(c);
      this.fromClient(c, d);
    });
  }

  private openUpstream(c: ProxyClient): Upstream {
    const spec = this.upstreamSpec;
    if (typeof spec === 'object' && 'privileged' in spec) {
      const target = spec.privileged;
      // Set for an in-process server: one perms cache for all the sessions, on a link of its own.
      const shared = this.sharedCache;
      return new PrivilegedSession(
        this.book as DomainBook,
        (onData, onClose, onMessages) =>
          openLink(target, 0, onData, onClose, onMessages, shared?.clock),
        (b) => this.fromUpstream(c, b),
        () => this.upstreamClosed(c),
        (detail) => {
          if (c.closed) return;
          this.log(c, { event: 'event-overflow', detail });
          this.closeClient(c, true);
        },
        shared?.cache,
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
    c.altered = true;
    // xenstored's error reply copies the request's header: same req_id and tx_id.
    const reply = encodeMessage(XS_ERROR, m.reqId, m.txId, `${errno}\0`);
    if (c.inFlight.length === 0 && !c.upstream?.owes?.()) this.send(c, reply);
    else c.inFlight.push({ refusal: reply, type: m.type, reqId: m.reqId, txId: m.txId });
    // The DM's answer is on its way before the log line is formatted.
    this.log(c, { event: 'refused', request: logged(m, path), rule, errno });
  }

  private fromClient(c: ProxyClient, chunk: Buffer): void {
    if (c.closed) return;
    c.upstream?.catchUp?.();
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
      const up = c.upstream;
      // Each with its path as decide() decoded it: the session and an embedded server use that.
      if (up?.submit)
        up.submit(
          out.map(([m, payload, path]) => ({
            type: m.type,
            reqId: m.reqId,
            txId: m.txId,
            payload,
            path,
          })),
        );
      // Whole messages, all forwarded unchanged: the bytes as read are the bytes to send.
      else if (aligned && !c.altered && c.parser.buffered === 0) up?.write(chunk);
      else {
        const enc = out.map(([m, p]) => encodeMessage(m.type, m.reqId, m.txId, p));
        up?.write(enc.length === 1 ? (enc[0] as Buffer) : Buffer.concat(enc));
      }
    }
    if (!c.closed && !c.paused && c.inFlight.length >= this.limits.maxInFlight) {
      c.paused = true;
      c.sock.pause();
    }
  }

  private forward(
    c: ProxyClient,
    m: XsMessage,
    payload: Buffer,
    f: Partial<InFlight> = {},
    path?: string,
  ): void {
    c.inFlight.push({ type: m.type, reqId: m.reqId, txId: m.txId, ...f });
    if (payload !== m.payload) c.altered = true;
    c.toUpstream.push([m, payload, path]);
  }

  private check(c: ProxyClient, m: XsMessage): void {
    const d = decide(m, c.context);
    if (d.verdict === 'refuse') {
      this.refuse(c, m, d.errno, d.rule, d.path);
      return;
    }
    if (this.trace) {
      const named = d.allowedBy !== undefined || d.watchKey !== undefined;
      // decide() decoded a path request's path already; an UNWATCH's is its payload's first string.
      const path = d.path ?? (named ? firstString(d.payload) : undefined);
      const rec: LogFields = {
        event: 'forwarded',
        request: logged(m, path),
      };
      if (d.allowedBy !== undefined) rec.rule = d.allowedBy;
      this.log(c, rec);
    }
    const f: Partial<InFlight> = {};
    if (d.watch) f.watch = d.watch;
    if (d.watchKey !== undefined) f.watchKey = d.watchKey;
    this.forward(c, m, d.payload, f, d.path);
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
        const rewritten = c.relativeWatches > 0 ? c.event(m) : undefined;
        if (rewritten) altered = true;
        out.push(rewritten ?? m);
        continue;
      }
      const f = c.inFlight.shift();
      if (f) c.settle(f, m);
      out.push(m);
      if (!c.upstream?.owes?.()) altered = takeRefusals(c, out) || altered;
    }
    // A refusal that waited behind an owed event (a watch's first one) follows it.
    if (out.length > 0 && !c.upstream?.owes?.()) altered = takeRefusals(c, out) || altered;
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
    // Closed by the client already: end() would only build an error (with its stack) to discard.
    else if (!c.sock.destroyed && !c.sock.writableEnded) c.sock.end();
  }
}
