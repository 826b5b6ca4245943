import { closeSync, createReadStream, write as fsWrite, openSync, type ReadStream } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { XenstoreError } from './errors.js';
import { checkClientPath } from './rules/paths.js';
import {
  encodeMessage,
  formatPerm,
  MessageParser,
  parsePerm,
  XS_DIRECTORY,
  XS_ERROR,
  XS_GET_DOMAIN_PATH,
  XS_GET_PERMS,
  XS_INTRODUCE,
  XS_IS_DOMAIN_INTRODUCED,
  XS_MKDIR,
  XS_READ,
  XS_RELEASE,
  XS_RESET_WATCHES,
  XS_RM,
  XS_SET_PERMS,
  XS_SET_TARGET,
  XS_TRANSACTION_END,
  XS_TRANSACTION_START,
  XS_UNWATCH,
  XS_WATCH,
  XS_WATCH_EVENT,
  XS_WRITE,
  type XsMessage,
  type XsPerm,
} from './wire/index.js';
import { firstString, splitStrings } from './wire/strings.js';

export const DEFAULT_XENSTORED_PATH = '/run/xenstored/socket';
export const XENBUS_DEVICE = '/dev/xen/xenbus';

export interface XenstoreClientOptions {
  /** Socket or xenbus device path; default `$XENSTORED_PATH`, else /run/xenstored/socket. */
  path?: string;
  /** Per-request timeout in ms (0 = none). Default 30000. */
  timeoutMs?: number;
  /** Connect attempts on ECONNREFUSED/EAGAIN (xenstored listens with a backlog of 1). Default 8. */
  connectAttempts?: number;
  /** First retry delay in ms, doubled each attempt. Default 10. */
  connectBackoffMs?: number;
}

export interface WatchEvent {
  path: string;
  token: string;
}

/** Options shared by the node operations: `tx` is a transaction id from `transactionStart`. */
export interface TxOption {
  tx?: number;
}

interface Pending {
  type: number;
  path: string | undefined;
  resolve: (m: XsMessage) => void;
  reject: (e: Error) => void;
  /** performance.now() past which the request fails with ETIMEDOUT (with a timeout). */
  deadline: number;
}

interface Transport {
  write(b: Buffer): void;
  close(): void;
}

/** An async iterator of watch events for one (path, token); `close()` unwatches. */
export class XenstoreWatch implements AsyncIterableIterator<WatchEvent> {
  private queue: WatchEvent[] = [];
  private waiters: ((r: IteratorResult<WatchEvent>) => void)[] = [];
  private done = false;
  constructor(
    private readonly client: XenstoreClient,
    readonly path: string,
    readonly token: string,
  ) {}

  /** @internal */
  push(e: WatchEvent): void {
    const w = this.waiters.shift();
    if (w) w({ value: e, done: false });
    else this.queue.push(e);
  }

  /** @internal */
  end(): void {
    this.done = true;
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<WatchEvent>> {
    const e = this.queue.shift();
    if (e) return Promise.resolve({ value: e, done: false });
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async return(): Promise<IteratorResult<WatchEvent>> {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Unwatch and end the iteration. */
  async close(): Promise<void> {
    if (this.done) return;
    this.end();
    await this.client.unwatchInternal(this);
  }
}

/**
 * A xenstore client over xenstored's unix socket or /dev/xen/xenbus.
 * Requests are pipelined (each carries its own req_id); errors reject with
 * XenstoreError carrying the errno name.
 */
export class XenstoreClient {
  private parser = new MessageParser();
  private pending = new Map<number, Pending>();
  private watches = new Map<string, XenstoreWatch>();
  private nextReqId = 1;
  private tickNow: number | undefined;
  private nextToken = 1;
  private closed = false;
  /**
   * One timer for all the requests in flight, due at the oldest one's deadline: they all have the
   * same timeout, so the map's order (the order they were sent) is their deadlines' order.
   */
  private timer: NodeJS.Timeout | undefined;
  private constructor(
    private readonly transport: Transport,
    private readonly timeoutMs: number,
  ) {}

  /** Connect, retrying with backoff while the daemon refuses (its listen backlog is 1). */
  static async connect(options: XenstoreClientOptions = {}): Promise<XenstoreClient> {
    const path = options.path ?? process.env.XENSTORED_PATH ?? DEFAULT_XENSTORED_PATH;
    const timeoutMs = options.timeoutMs ?? 30000;
    if (path === XENBUS_DEVICE || path.startsWith('/dev/'))
      return XenstoreClient.openDevice(path, timeoutMs);
    const attempts = options.connectAttempts ?? 8;
    let delay = options.connectBackoffMs ?? 10;
    for (let i = 1; ; i++) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(path);
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        sock.setNoDelay?.(true);
        let batch: Buffer[] | undefined;
        const flush = (): void => {
          const bs = batch as Buffer[];
          batch = undefined;
          if (!sock.destroyed) sock.write(bs.length === 1 ? (bs[0] as Buffer) : Buffer.concat(bs));
        };
        const client = new XenstoreClient(
          {
            // Requests issued in the same tick leave in one write (pipelining without a syscall
            // each), joined here: one stream write costs less than one per request.
            write: (b) => {
              if (batch) batch.push(b);
              else {
                batch = [b];
                process.nextTick(flush);
              }
            },
            close: () => sock.destroy(),
          },
          timeoutMs,
        );
        sock.on('data', (d) => client.onData(d));
        sock.on('error', (e) => client.fail(e));
        sock.on('close', () =>
          client.fail(new XenstoreError('ECONNRESET', `xenstore connection to ${path} closed`)),
        );
        return client;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? '';
        if (i >= attempts || (code !== 'ECONNREFUSED' && code !== 'EAGAIN')) {
          throw new XenstoreError(
            code || 'EIO',
            `cannot connect to xenstore at ${path}: ${(e as Error).message}`,
          );
        }
        await sleep(delay);
        delay *= 2;
      }
    }
  }

  private static openDevice(path: string, timeoutMs: number): XenstoreClient {
    const fd = openSync(path, 'r+');
    const rs: ReadStream = createReadStream('', { fd, autoClose: false, highWaterMark: 4096 + 16 });
    const client = new XenstoreClient(
      {
        // xenbus takes one whole message per write(2).
        write: (b) => fsWrite(fd, b, (err) => err && client.fail(err)),
        close: () => {
          rs.destroy();
          closeSync(fd);
        },
      },
      timeoutMs,
    );
    rs.on('data', (d) => client.onData(d as Buffer));
    rs.on('error', (e) => client.fail(e));
    return client;
  }

  private onData(d: Buffer): void {
    let msgs: XsMessage[];
    try {
      msgs = this.parser.push(d);
    } catch (e) {
      this.fail(e as Error);
      this.transport.close();
      return;
    }
    for (const m of msgs) {
      if (m.type === XS_WATCH_EVENT) {
        const parts = splitStrings(m.payload, true);
        const path = parts[0] ?? '';
        const token = parts[1] ?? '';
        this.watches.get(token)?.push({ path, token });
        continue;
      }
      const p = this.pending.get(m.reqId);
      if (!p) continue;
      this.pending.delete(m.reqId);
      if (this.pending.size === 0 && this.timer) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
      if (m.type === XS_ERROR) {
        const code = firstString(m.payload);
        p.reject(XenstoreError.fromReply(code, p.type, p.path));
      } else p.resolve(m);
    }
  }

  private fail(e: Error): void {
    if (this.closed) return;
    this.closed = true;
    const err =
      e instanceof XenstoreError
        ? e
        : new XenstoreError((e as NodeJS.ErrnoException).code ?? 'EIO', e.message);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.watches.values()) w.end();
    this.watches.clear();
  }

  /** Send one raw request and resolve with the raw reply (XS_ERROR rejects as XenstoreError). */
  request(type: number, payload: Uint8Array | string, txId = 0, path?: string): Promise<XsMessage> {
    if (this.closed)
      return Promise.reject(
        new XenstoreError('ECONNRESET', 'xenstore client is closed', type, path),
      );
    const reqId = this.nextReqId;
    this.nextReqId = (this.nextReqId + 1) >>> 0 || 1;
    const msg = encodeMessage(type, reqId, txId, payload);
    return new Promise((resolve, reject) => {
      const deadline = this.timeoutMs > 0 ? this.now() + this.timeoutMs : 0;
      const p: Pending = { type, path, resolve, reject, deadline };
      if (this.timeoutMs > 0 && this.timer === undefined) this.armTimer(this.timeoutMs);
      this.pending.set(reqId, p);
      this.transport.write(msg);
    });
  }

  /** performance.now(), read once for the requests issued in one tick. */
  private now(): number {
    if (this.tickNow === undefined) {
      this.tickNow = performance.now();
      process.nextTick(this.clearNow);
    }
    return this.tickNow;
  }

  private readonly clearNow = (): void => {
    this.tickNow = undefined;
  };

  private armTimer(ms: number): void {
    this.timer = setTimeout(() => this.expire(), ms);
  }

  /** Fail the requests past their deadline, oldest first; re-arm for the next one. */
  private expire(): void {
    this.timer = undefined;
    const now = performance.now();
    for (const [reqId, p] of this.pending) {
      if (p.deadline > now) {
        this.armTimer(Math.ceil(p.deadline - now));
        return;
      }
      this.pending.delete(reqId);
      p.reject(
        new XenstoreError(
          'ETIMEDOUT',
          `xenstore request timed out after ${this.timeoutMs} ms`,
          p.type,
          p.path,
        ),
      );
    }
  }

  private async pathOp(
    type: number,
    path: string,
    opt: TxOption | undefined,
    extra?: Uint8Array | string,
  ): Promise<Buffer> {
    checkClientPath(path);
    // A string payload is encoded once, straight into the message.
    const payload =
      extra === undefined
        ? `${path}\0`
        : typeof extra === 'string'
          ? `${path}\0${extra}`
          : Buffer.concat([Buffer.from(`${path}\0`), extra]);
    const m = await this.request(type, payload, opt?.tx ?? 0, path);
    return m.payload;
  }

  async read(path: string, opt?: TxOption): Promise<Buffer> {
    return this.pathOp(XS_READ, path, opt);
  }

  async readString(path: string, opt?: TxOption): Promise<string> {
    return (await this.read(path, opt)).toString('utf8');
  }

  /** Read, or undefined when the node does not exist. */
  async tryRead(path: string, opt?: TxOption): Promise<Buffer | undefined> {
    try {
      return await this.read(path, opt);
    } catch (e) {
      if (e instanceof XenstoreError && e.code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async write(path: string, value: Uint8Array | string, opt?: TxOption): Promise<void> {
    await this.pathOp(XS_WRITE, path, opt, value);
  }

  async mkdir(path: string, opt?: TxOption): Promise<void> {
    await this.pathOp(XS_MKDIR, path, opt);
  }

  async rm(path: string, opt?: TxOption): Promise<void> {
    await this.pathOp(XS_RM, path, opt);
  }

  async directory(path: string, opt?: TxOption): Promise<string[]> {
    return splitStrings(await this.pathOp(XS_DIRECTORY, path, opt), true);
  }

  async getPerms(path: string, opt?: TxOption): Promise<XsPerm[]> {
    return splitStrings(await this.pathOp(XS_GET_PERMS, path, opt), true).map(parsePerm);
  }

  async setPerms(path: string, perms: readonly XsPerm[], opt?: TxOption): Promise<void> {
    await this.pathOp(
      XS_SET_PERMS,
      path,
      opt,
      Buffer.from(perms.map((p) => `${formatPerm(p)}\0`).join('')),
    );
  }

  async transactionStart(): Promise<number> {
    const m = await this.request(XS_TRANSACTION_START, '\0');
    return Number.parseInt(m.payload.toString(), 10);
  }

  async transactionEnd(tx: number, commit: boolean): Promise<void> {
    await this.request(XS_TRANSACTION_END, commit ? 'T\0' : 'F\0', tx);
  }

  /**
   * Run `body` in a transaction and commit; on EAGAIN (another writer
   * touched what it read) run it again, up to `retries` more times.
   */
  async transaction<T>(
    body: (tx: number) => Promise<T>,
    options: { retries?: number } = {},
  ): Promise<T> {
    const retries = options.retries ?? 16;
    for (let attempt = 0; ; attempt++) {
      const tx = await this.transactionStart();
      let result: T;
      try {
        result = await body(tx);
      } catch (e) {
        await this.transactionEnd(tx, false).catch(() => undefined);
        throw e;
      }
      try {
        await this.transactionEnd(tx, true);
        return result;
      } catch (e) {
        if (!(e instanceof XenstoreError) || e.code !== 'EAGAIN' || attempt >= retries) throw e;
      }
    }
  }

  /** Watch `path` (and its descendants); the first event arrives at once, as xenstored sends it. */
  async watch(path: string, token?: string): Promise<XenstoreWatch> {
    checkClientPath(path);
    const tok = token ?? `xsr${this.nextToken++}`;
    if (this.watches.has(tok))
      throw new XenstoreError('EEXIST', `watch token ${JSON.stringify(tok)} is in use`);
    const w = new XenstoreWatch(this, path, tok);
    this.watches.set(tok, w);
    try {
      await this.request(XS_WATCH, `${path}\0${tok}\0`, 0, path);
    } catch (e) {
      this.watches.delete(tok);
      throw e;
    }
    return w;
  }

  /** @internal */
  async unwatchInternal(w: XenstoreWatch): Promise<void> {
    this.watches.delete(w.token);
    if (!this.closed) await this.request(XS_UNWATCH, `${w.path}\0${w.token}\0`, 0, w.path);
  }

  async resetWatches(): Promise<void> {
    await this.request(XS_RESET_WATCHES, '\0');
    for (const w of this.watches.values()) w.end();
    this.watches.clear();
  }

  async getDomainPath(domid: number): Promise<string> {
    const m = await this.request(XS_GET_DOMAIN_PATH, `${domid}\0`);
    return splitStrings(m.payload, true)[0] ?? '';
  }

  async isDomainIntroduced(domid: number): Promise<boolean> {
    const m = await this.request(XS_IS_DOMAIN_INTRODUCED, `${domid}\0`);
    return m.payload.toString() === 'T\0';
  }

  async introduce(domid: number, gfn: number | bigint, port: number): Promise<void> {
    await this.request(XS_INTRODUCE, `${domid}\0${gfn}\0${port}\0`);
  }

  async release(domid: number): Promise<void> {
    await this.request(XS_RELEASE, `${domid}\0`);
  }

  async setTarget(domid: number, target: number): Promise<void> {
    await this.request(XS_SET_TARGET, `${domid}\0${target}\0`);
  }

  /** Close the connection; pending requests reject with ECONNRESET. */
  close(): void {
    this.fail(new XenstoreError('ECONNRESET', 'xenstore client closed'));
    this.transport.close();
  }
}
