/** The embedded xenstored: listening sockets and connections around ServerCore. */
import { existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { type ActivityPoll, activityPoll } from '../poll.js';
import { DEFAULT_QUOTAS, type XenstoreQuotas } from '../rules/quotas.js';
import type { XsMessage } from '../wire/codec.js';
import { XenstoreConnection } from './connection.js';
import { ServerCore } from './core.js';
import { introduce } from './domain.js';
import { handleRequest } from './handlers.js';

export { DEFAULT_QUOTAS, type XenstoreQuotas } from '../rules/quotas.js';
export { XenstoreConnection } from './connection.js';

export interface XenstoreServerOptions {
  quotas?: Partial<XenstoreQuotas>;
  /** A domid besides 0 that is privileged (xenstored's `--priv-domid`). */
  privDomid?: number;
  /** Most bytes queued for a connection that does not read; beyond it the connection is closed. */
  maxOutputBytes?: number;
  /**
   * Keep polling the sockets for this many microseconds after one had data, instead of
   * blocking at once (poll.ts). 0 (the default, as xenstored) blocks at once. Lowers the
   * round trip of a burst of requests on an idle machine, for CPU during the window only.
   */
  pollMicros?: number;
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
  /** @internal The tree, domains and connections (server/core.ts). */
  readonly core: ServerCore;
  private readonly maxOutputBytes: number;
  private servers: { server: net.Server; path: string }[] = [];
  private sockets = new Set<net.Socket>();
  private readonly poll: ActivityPoll | undefined;

  constructor(options: XenstoreServerOptions = {}) {
    this.quotas = { ...DEFAULT_QUOTAS, ...options.quotas };
    this.privDomid = options.privDomid ?? 0;
    this.maxOutputBytes = options.maxOutputBytes ?? 1 << 20;
    this.core = new ServerCore(this.quotas, this.privDomid);
    this.poll = activityPoll(options.pollMicros);
  }

  /** Attach a connection acting as `domid`; returns it. `write` returns false when the peer is gone. */
  attach(domid: number, write: (b: Buffer) => boolean, close: () => void): XenstoreConnection {
    const c = new XenstoreConnection(this, domid, write, close);
    this.core.connections.add(c);
    return c;
  }

  /**
   * @internal Attach a connection acting as `domid` that takes parsed requests (`deliver`) and
   * gives its replies and watch events as messages, in the order bytes would carry them: for a
   * peer in this process (the privileged proxy's dom0 link), no encoding and parsing both ways.
   */
  attachMessages(
    domid: number,
    onMessages: (msgs: XsMessage[]) => void,
    close: () => void,
    /** Stamps each reply as it is queued (StampedMessage.at): see proxy/privileged/shared-cache.ts. */
    clock?: () => number,
  ): XenstoreConnection {
    const c = new XenstoreConnection(this, domid, () => true, close, onMessages, clock);
    this.core.connections.add(c);
    return c;
  }

  /** @internal */
  forget(c: XenstoreConnection): void {
    if (!this.core.connections.delete(c)) return;
    c.dropWatchesAndTransactions();
  }

  /** @internal Process one request from `conn`. */
  handle(conn: XenstoreConnection, m: XsMessage): void {
    handleRequest(this.core, conn, m);
  }

  /** @internal Polling, with `conn` the one busy connection (ActivityPoll.solo). */
  soloPolling(conn: XenstoreConnection): boolean {
    return this.poll?.solo(conn) === true;
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
    sock.on('data', (d) => {
      this.poll?.touch(conn);
      conn.receive(d);
    });
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
      if (domid !== 0 && !this.core.domains.get(domid)?.introduced) {
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
    this.poll?.stop();
    for (const c of [...this.core.connections]) c.close();
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
    return this.core.connections.size;
  }

  /** Introduce a domain as XS_INTRODUCE does (fires `@introduceDomain` the first time). */
  introduce(domid: number): void {
    introduce(this.core, domid);
  }
}
