/** One client of the proxy: what is in flight upstream, and the watches and transactions it holds. */
import type net from 'node:net';
import { encodeMessage, type XsMessage } from '../wire/codec.js';
import {
  XS_ERROR,
  XS_RESET_WATCHES,
  XS_TRANSACTION_END,
  XS_TRANSACTION_START,
  XS_UNWATCH,
  XS_WATCH,
  XS_WATCH_EVENT,
} from '../wire/constants.js';
import { MessageParser } from '../wire/parser.js';
import { firstString, splitStrings } from '../wire/strings.js';
import type { ClientWatch, DecideContext } from './decide.js';
import type { Upstream } from './link.js';
import type { RestrictingProxy } from './proxy.js';

export interface InFlight {
  /** A refusal queued behind earlier forwarded requests, so replies keep the order of requests. */
  refusal?: Buffer;
  type: number;
  reqId: number;
  txId: number;
  watchKey?: string;
  watch?: ClientWatch;
}

let nextClientId = 1;

/** What decide() asks about one client; the counts are only taken for the requests that need them. */
class ClientContext implements DecideContext {
  readonly allowlist: DecideContext['allowlist'];
  readonly homePath: string;
  readonly maxTransactions: number;
  readonly maxWatches: number;
  constructor(private readonly client: ProxyClient) {
    const proxy = client.proxy;
    this.allowlist = proxy.allowlist;
    this.homePath = proxy.homePath;
    this.maxTransactions = proxy.limits.maxTransactions;
    this.maxWatches = proxy.limits.maxWatches;
  }

  get transactions(): number {
    let n = this.client.transactions.size;
    for (const f of this.client.inFlight) if (f.type === XS_TRANSACTION_START && !f.refusal) n++;
    return n;
  }

  get watches(): number {
    return this.client.proxy.watchesHeld();
  }
}

export class ProxyClient {
  readonly id = nextClientId++;
  readonly parser = new MessageParser(undefined, { view: true });
  readonly upParser = new MessageParser(undefined, { view: true });
  readonly inFlight: InFlight[] = [];
  /**
   * Allowed requests of the current read: the request, its payload upstream, its path decoded.
   * Encoded only when the read cannot pass through raw.
   */
  toUpstream: [XsMessage, Buffer, string | undefined][] = [];
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
  /** What decide() asks about this client; the counts are only taken for the requests that need them. */
  readonly context: DecideContext;
  constructor(
    readonly proxy: RestrictingProxy,
    readonly sock: net.Socket,
  ) {
    this.context = new ClientContext(this);
  }

  /** A watch event with the home prefix stripped, for a relative watch; undefined when unchanged. */
  event(m: XsMessage): Buffer | undefined {
    const [path, token] = splitStrings(m.payload);
    if (path !== undefined && token !== undefined) {
      for (const w of this.watches.values()) {
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

  settle(f: InFlight, m: XsMessage): void {
    const ok = m.type !== XS_ERROR;
    switch (f.type) {
      case XS_WATCH:
        if (ok && f.watch) {
          const key = `${f.watch.path}\0${f.watch.token}`;
          if (!this.watches.has(key) && f.watch.strip !== undefined) this.relativeWatches++;
          this.watches.set(key, f.watch);
        }
        return;
      case XS_UNWATCH:
        if (ok && f.watchKey !== undefined) {
          if (this.watches.get(f.watchKey)?.strip !== undefined) this.relativeWatches--;
          this.watches.delete(f.watchKey);
        }
        return;
      case XS_TRANSACTION_START: {
        const id = Number.parseInt(m.payload.toString(), 10);
        if (ok && Number.isInteger(id) && id > 0 && id <= 0xffffffff) this.transactions.add(id);
        return;
      }
      case XS_TRANSACTION_END: {
        // xenstored forgets the transaction once the argument is valid, whether the commit worked or not.
        const err = ok ? '' : firstString(m.payload);
        if (err !== 'EINVAL') this.transactions.delete(f.txId);
        return;
      }
      case XS_RESET_WATCHES:
        if (ok) {
          this.watches.clear();
          this.relativeWatches = 0;
          this.transactions.clear();
        }
        return;
    }
  }
}
