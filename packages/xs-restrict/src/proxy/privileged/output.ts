/**
 * The privileged session's output to its client, in order: replies, and the
 * watch events the daemon sent on the dom0 connection, each kept or dropped
 * as C xenstored would decide for domain N (xenstored_watch.c
 * watch_permitted, check_perms_special). A decision may need the daemon's
 * answer; later output waits behind it.
 */
import { childPath, isChild, parentPath } from '../../rules/paths.js';
import { permFor, type Requester, watchPermitted } from '../../rules/perms.js';
import { encodeMessage, type XsMessage } from '../../wire/codec.js';
import { XS_DIRECTORY, XS_ERROR, XS_GET_PERMS, XS_WATCH_EVENT } from '../../wire/constants.js';
import { XS_PERM_READ, type XsPerm } from '../../wire/perms.js';
import { nulTerminated } from '../../wire/strings.js';
import type { DomainBook } from './book.js';
import {
  childBytes,
  childNames,
  PENDING_OUTPUT_MAX,
  PERMS_CACHE_MAX,
  parsePermsReply,
  type Req,
} from './book.js';
import type { Dom0Channel } from './channel.js';

/** The special nodes' permissions as xenstored starts with them: dom0 owns them, nobody else reads. */
const SPECIAL_PERMS: readonly XsPerm[] = [{ domid: 0, perm: 'n' }];

interface Slot {
  bytes: Buffer | null | undefined;
  path?: string;
  /** Held while a commit of ours is answered: its events for `suppress` paths are dropped. */
  held?: boolean;
  /** Dropped for good: a permission decision arriving later does not bring it back. */
  dropped?: boolean;
}

export interface WatchedPath {
  path: string;
  token: string;
}

export class SessionOutput {
  private readonly out: Slot[] = [];
  /** Node perms learnt from the daemon, for events about nodes that are gone by the time we ask. */
  private readonly perms = new Map<string, readonly XsPerm[]>();
  /** Paths whose events, arriving while a commit of ours is answered, are ours to drop. */
  private window: { suppress: Set<string>; slots: Slot[] } | undefined;
  /** While a client's transaction that removed these nodes is committed. */
  private removing: readonly string[] | undefined;
  private overflowed = false;
  /**
   * Set by in-step.ts while N's rewrites of existing nodes are handled: each node and the perms
   * it keeps, for the events those writes fire.
   */
  rewriting: ReadonlyMap<string, readonly XsPerm[]> | undefined;

  constructor(
    private readonly who: Requester,
    private readonly chan: Dom0Channel,
    /** The session's watches as registered upstream (absolute path, token). */
    private readonly watches: readonly WatchedPath[],
    private readonly emit: (b: Buffer) => void,
    private readonly onOverflow: (detail: string) => void,
    private readonly isClosed: () => boolean,
    /** The proxy's book: other sessions' commits' fix-ups (DomainBook.fixups). */
    private readonly book?: DomainBook,
  ) {}

  /** Places held for watches' first events that have not come yet (see awaitInitial). */
  private readonly initialSlots: Slot[] = [];

  /** Replies and events not yet given to the client (some wait for a decision or an event). */
  get owed(): number {
    return this.out.length;
  }

  /**
   * A WATCH reply just went in and its first event has not come: xenstored queues that event
   * right behind the reply, so its place is held here, and what the client is answered next
   * (even without the daemon) waits behind it.
   */
  awaitInitial(): void {
    const slot: Slot = { bytes: undefined };
    this.out.push(slot);
    this.initialSlots.push(slot);
  }

  /** The first event awaited did not come (a reply came instead): its place is given up. */
  noInitial(): void {
    const slot = this.initialSlots.shift();
    if (!slot) return;
    slot.bytes = null;
    this.flush();
  }

  /** A reply, after everything before it; with `later`, it leaves with the next flush (one write for a batch). */
  reply(bytes: Buffer, later = false): void {
    this.out.push({ bytes });
    if (!later) this.flush();
  }

  /** XS_RESET_WATCHES: what was learnt for the old watches is no longer needed. */
  forgetPerms(): void {
    this.perms.clear();
  }

  flush(): void {
    let n = 0;
    const ready: Buffer[] = [];
    for (const s of this.out) {
      if (s.bytes === undefined || s.held) break;
      if (s.bytes) ready.push(s.bytes);
      n++;
    }
    if (n === 0) return;
    this.out.splice(0, n);
    if (ready.length > 0 && !this.isClosed())
      this.emit(ready.length === 1 ? (ready[0] as Buffer) : Buffer.concat(ready));
  }

  /**
   * Run `commit` (the TRANSACTION_END of one of ours) holding the events that
   * arrive meanwhile; if it succeeded, those for `suppress` paths (nodes only
   * our perms fix-up touched) are dropped.
   */
  async suppressing(
    suppress: Set<string>,
    commit: () => Promise<XsMessage>,
    /** Nodes the transaction removed: their events are judged as a commit's (see permitted). */
    removed: readonly string[] = [],
  ): Promise<XsMessage> {
    if (suppress.size === 0 && removed.length === 0) return commit();
    const window = { suppress, slots: [] as Slot[] };
    this.window = window;
    this.removing = removed.length > 0 ? removed : undefined;
    // An in-process server fires the commit's events to every other session before the call
    // returns: those sessions hold them for as long as the call lasts, no longer.
    const others: DomainBook['fixups'] =
      suppress.size > 0 && this.chan.atomicWrites && this.book ? { suppress, held: [] } : undefined;
    let r: XsMessage;
    try {
      let pending: Promise<XsMessage>;
      const book = this.chan.atomicWrites ? this.book : undefined;
      if (book) {
        book.fixups = others;
        book.txRemoved = this.removing;
      }
      try {
        pending = commit();
      } finally {
        if (book) {
          book.fixups = undefined;
          book.txRemoved = undefined;
        }
      }
      r = await pending;
    } catch (e) {
      for (const release of others?.held ?? []) release(false);
      throw e;
    } finally {
      this.window = undefined;
      this.removing = undefined;
    }
    const ok = r.type !== XS_ERROR;
    for (const release of others?.held ?? []) release(ok);
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

  event(m: XsMessage, initial: boolean): void {
    if (this.overflowed) return;
    if (this.out.length >= PENDING_OUTPUT_MAX) {
      // The client is closed: what it was owed is dropped, and so is every later event.
      this.overflowed = true;
      this.out.length = 0;
      this.initialSlots.length = 0;
      this.onOverflow(
        `${PENDING_OUTPUT_MAX} replies and watch events waited for a decision, limit ${PENDING_OUTPUT_MAX}`,
      );
      return;
    }
    const nul = m.payload.indexOf(0);
    const path = m.payload.toString('utf8', 0, nul < 0 ? m.payload.length : nul);
    const raw = encodeMessage(XS_WATCH_EVENT, m.reqId, m.txId, m.payload);
    const slot: Slot = { bytes: undefined, path };
    if (this.window) {
      slot.held = true;
      this.window.slots.push(slot);
    } else if (this.book?.fixups?.suppress.has(path)) {
      // Fired by another client's commit, for a node only its perms fix-up touched.
      slot.held = true;
      this.book.fixups.held.push((drop) => {
        slot.held = false;
        if (drop) {
          slot.dropped = true;
          slot.bytes = null;
        }
        this.flush();
      });
    }
    if (initial) {
      // Into the place held for it, if the WATCH reply went out before it came.
      const held = this.initialSlots.shift();
      if (held) {
        held.bytes = raw;
        held.path = path;
      } else {
        slot.bytes = raw;
        this.out.push(slot);
      }
      this.flush();
      return;
    }
    this.out.push(slot);
    if (path.startsWith('@')) {
      // check_perms_special: N reads the special nodes only if their perms say so (never by default).
      slot.bytes = this.readable(SPECIAL_PERMS) ? raw : null;
      this.flush();
      return;
    }
    const token = m.payload.toString('utf8', nul + 1, m.payload.indexOf(0, nul + 1));
    const root = this.watches.find((w) => w.token === token && isChild(path, w.path))?.path ?? path;
    const own = this.rewriting?.get(path);
    if (own && this.readable(own)) {
      // Fired by N's own rewrite, in step (in-step.ts): watch_permitted's first test on the node
      // as written, whose perms a rewrite keeps, passes; nothing to ask.
      // It leaves with the write's reply, which follows at once (one write to the client, as
      // xenstored sends a request's events and reply).
      if (isChild(path, root)) this.cache(path, own);
      slot.bytes = slot.dropped ? null : raw;
      return;
    }
    // The perms before this change: read now, before a lookup for an earlier event updates them.
    const before = this.perms.get(path);
    const parentBefore = this.perms.get(parentPath(path));
    // By this client's transaction committing, or (in process) another client's of the proxy.
    const removing = this.removing ?? this.book?.txRemoved;
    const txRemoved = removing?.some((r) => r === path || isChild(path, r)) === true;
    this.permitted(path, root, before, parentBefore, txRemoved).then(
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
    return perms !== undefined && (permFor(this.who, perms) & XS_PERM_READ) !== 0;
  }

  /**
   * watch_permitted for N, one round trip after the daemon fired: N gets the
   * event if it can read the node's old perms (cached before the change),
   * its current perms, or its parent's; for a deleted node the cached perms
   * stand in for the node as it was when rm fired, and with neither, the
   * parent's (a node inherits them when it is created).
   */
  private async permitted(
    path: string,
    root: string,
    old: readonly XsPerm[] | undefined,
    parentOld: readonly XsPerm[] | undefined,
    /** Removed by the client's transaction now committing (a node it, or an ancestor, removed). */
    txRemoved = false,
  ): Promise<boolean> {
    const ask = [path, parentPath(path)];
    for (let p = parentPath(path); p !== root && isChild(p, root) && p !== '/'; p = parentPath(p)) {
      if (!this.perms.has(p) && !ask.includes(p)) ask.push(p);
    }
    const replies = await Promise.all(
      this.chan.call(ask.map((p): Req => [XS_GET_PERMS, 0, nulTerminated([p])])),
    );
    const cur = new Map<string, XsPerm[]>();
    replies.forEach((r, i) => {
      if (r.type === XS_GET_PERMS) cur.set(ask[i] as string, parsePermsReply(r));
    });
    const parentPerms = cur.get(parentPath(path)) ?? parentOld;
    const now = cur.get(path);
    // An rm outside a transaction fires with the node as it was (rm_node), judged with its parent;
    // a commit fires a removed node by name (finalize_transaction), and a node no longer there is
    // judged by its perms as the transaction read them alone.
    const ok =
      txRemoved && now === undefined
        ? watchPermitted(this.who, old, undefined, undefined)
        : watchPermitted(this.who, old, now ?? old ?? parentPerms, parentPerms);
    for (const [p, perms] of cur) if (isChild(p, root)) this.cache(p, perms);
    // rm fires exact events for the descendants, which a watch above does not match: forget them too.
    if (!now) for (const p of [...this.perms.keys()]) if (isChild(p, path)) this.perms.delete(p);
    return ok;
  }

  private cache(path: string, perms: readonly XsPerm[]): void {
    if (this.perms.size >= PERMS_CACHE_MAX && !this.perms.has(path)) return;
    this.perms.set(path, perms);
  }

  /** Learn the perms of every node under a path about to be watched (bounded by PERMS_CACHE_MAX). */
  async prime(path: string): Promise<void> {
    let level = this.primed(path) ? [] : [path];
    while (level.length > 0 && this.perms.size < PERMS_CACHE_MAX) {
      const reqs = primeReqs(level);
      const now = this.chan.synchronous;
      const replies = now ? this.chan.callNow(reqs) : await Promise.all(this.chan.call(reqs));
      level = this.learnLevel(level, replies, now);
    }
  }

  /**
   * `prime` on a synchronous link (Dom0Channel.synchronous), done on return; false if the link
   * stopped being synchronous on the way (then `prime` it the general way).
   */
  primeNow(path: string): boolean {
    if (this.primed(path)) return true;
    // The perms cache holds the daemon's state as of now on a synchronous link: a node it knows
    // to have no children is primed by its perms alone, with nothing to ask.
    const known = this.chan.synchronous ? this.chan.cache.get(path) : undefined;
    if (known?.childlen === 0) {
      this.cache(path, known.perms);
      return true;
    }
    let level = [path];
    while (level.length > 0 && this.perms.size < PERMS_CACHE_MAX) {
      if (!this.chan.synchronous) return false;
      level = this.learnLevel(level, this.chan.callNow(primeReqs(level)), true);
    }
    return true;
  }

  /**
   * Under a path watched already, every change fires that watch, whose decision (permitted)
   * learns the perms of the node and its ancestors, and a removal forgets the subtree: what a
   * priming would read is known.
   */
  private primed(path: string): boolean {
    return this.watches.some((w) => isChild(path, w.path));
  }

  /** One level of a priming: learn each node's perms; the next level's paths. */
  private learnLevel(
    level: readonly string[],
    replies: readonly XsMessage[],
    now: boolean,
  ): string[] {
    const next: string[] = [];
    level.forEach((p, i) => {
      const perms = replies[2 * i] as XsMessage;
      const dir = replies[2 * i + 1] as XsMessage;
      if (perms.type !== XS_GET_PERMS) return;
      let parsed: XsPerm[];
      try {
        parsed = parsePermsReply(perms);
      } catch {
        return;
      }
      this.cache(p, parsed);
      // What the DM reads and writes next lies mostly under what it watches: the session's
      // perms cache learns it too (with the children bytes when read in step, as of now).
      if (now && dir.type === XS_DIRECTORY)
        this.chan.cache.learn(p, parsed, this.chan.cache.now, childBytes(dir));
      else this.chan.cache.learn(p, parsed, this.chan.arrivedAt(perms));
      if (dir.type !== XS_DIRECTORY) return;
      for (const c of childNames(dir)) next.push(childPath(p, c));
    });
    return next.slice(0, Math.max(0, PERMS_CACHE_MAX - this.perms.size));
  }
}

/** A priming level's requests: each node's perms and children. */
function primeReqs(level: readonly string[]): Req[] {
  return level.flatMap((p): Req[] => [
    [XS_GET_PERMS, 0, nulTerminated([p])],
    [XS_DIRECTORY, 0, nulTerminated([p])],
  ]);
}
