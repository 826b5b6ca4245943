/** What all the privileged sessions of one proxy share, and the limits of one session. */
import { DEFAULT_QUOTAS, type XenstoreQuotas } from '../../rules/quotas.js';
import { encodeMessage, type XsMessage } from '../../wire/codec.js';
import type { XsErrno } from '../../wire/constants.js';
import { XS_DIRECTORY, XS_ERROR, XS_READ } from '../../wire/constants.js';
import { parsePerm, type XsPerm } from '../../wire/perms.js';
import { splitStrings } from '../../wire/strings.js';

/** What all the privileged sessions of one proxy (one domain N) share: N's per-domain counts. */
export class DomainBook {
  /** Nodes created through the proxy and owned by N (the entries-quota approximation, see README). */
  readonly created = new Set<string>();
  /** Watches N holds through the proxy. */
  watches = 0;
  /**
   * While a session's commit with a perms fix-up is being handled by an in-process server: the
   * paths only the fix-up touched, whose events every other session of the proxy holds (each
   * `release` is called with true, drop, once the commit succeeded). See SessionOutput.suppressing.
   */
  fixups: { suppress: ReadonlySet<string>; held: ((drop: boolean) => void)[] } | undefined;
  /** The same moment: the nodes that commit's transaction removed (SessionOutput.permitted). */
  txRemoved: readonly string[] | undefined;
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
  /**
   * Whole requests, not encoded (an embedded server in process): its replies and events then
   * come back as messages too, in the order bytes would carry them.
   */
  send?(msgs: readonly XsMessage[]): void;
  end(): void;
  /**
   * The daemon handles all the requests of one `write` before anyone else's (an embedded server
   * attached in process): requests sent together are then one atomic step without a transaction.
   */
  atomicWrites?: boolean;
}

/** Most node permissions cached per session for watch-event decisions. */
export const PERMS_CACHE_MAX = 4096;

/**
 * Most output slots (replies and watch events) waiting for a decision per session. Each event
 * costs a perms lookup; a burst the daemon fires faster than those lookups come back would
 * otherwise queue without bound, so beyond this the client is closed (`event-overflow`).
 * C xenstored serves one request per connection per loop, so a fair daemon never gets near it.
 */
export const PENDING_OUTPUT_MAX = 1024;

/** The dom0 link went away: every call waiting on it fails with this. */
export class LinkClosed {}

/** A request's errno, decided by the session. */
export class Fail {
  constructor(readonly errno: XsErrno) {}
}

/** One request on the dom0 link: type, transaction id, payload (and its first string, decoded). */
export type Req = [type: number, tx: number, payload: Buffer | string, path?: string | undefined];

/** A client's transaction (or one of ours) as the session keeps it. */
export interface VirtualTx {
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
  /** The perms a node of ours has once the transaction commits, for the session's perms cache. */
  learn?: { path: string; perms: XsPerm[] };
}

export function newVirtualTx(up: number): VirtualTx {
  return { up, failed: false, created: [], removed: [], suppress: new Set(), fired: new Set() };
}

/** The perms of a GET_PERMS reply (latin1: domids are digits, and a bad byte must not become valid). */
export function parsePermsReply(m: XsMessage): XsPerm[] {
  const out: XsPerm[] = [];
  let start = 0;
  for (let i = m.payload.indexOf(0); i >= 0; i = m.payload.indexOf(0, start)) {
    out.push(parsePerm(m.payload.toString('latin1', start, i)));
    start = i + 1;
  }
  return out;
}

/** The child names of a DIRECTORY reply. */
export function childNames(m: XsMessage): string[] {
  return splitStrings(m.payload, true).filter((c) => c !== '');
}

/** The bytes of a node's children's names from its DIRECTORY reply; infinite when it failed. */
export function childBytes(dir: XsMessage): number {
  return dir.type === XS_DIRECTORY ? dir.payload.length : Number.POSITIVE_INFINITY;
}

/**
 * A node's data plus its children's names (each NUL-terminated), from its READ and DIRECTORY
 * replies, as node size quotas count them; infinite when either failed, so the check refuses.
 */
export function valueAndChildBytes(value: XsMessage, dir: XsMessage): number {
  return value.type === XS_READ && dir.type === XS_DIRECTORY
    ? value.payload.length + dir.payload.length
    : Number.POSITIVE_INFINITY;
}

/** The XS_ERROR reply to `m`: xenstored's error reply copies the request's req_id and tx_id. */
export function errReply(m: XsMessage, errno: XsErrno): Buffer {
  return encodeMessage(XS_ERROR, m.reqId, m.txId, `${errno}\0`);
}

/** The daemon's reply `r` to dom0, as the reply to the client's `m`. */
export function relayReply(m: XsMessage, r: XsMessage): Buffer {
  return encodeMessage(r.type, m.reqId, m.txId, r.payload);
}

const OK = Buffer.from('OK\0');

export function okReply(m: XsMessage): Buffer {
  return encodeMessage(m.type, m.reqId, m.txId, OK);
}
