/**
 * Node permissions the privileged session has learnt, kept exact by a dom0
 * watch on its own link. The fact it rests on (xenstored_core.c send_reply,
 * xenstored_watch.c add_event): a daemon queues a watch event on a
 * connection when the change happens, ahead of the reply to any request it
 * handles later, so the events and replies of one connection arrive in the
 * order of the changes and requests. Every change to a node fires an event
 * naming it to a watch on "/" (rm's exact events for the descendants do not
 * reach a watch on "/", so an event also stands for the node's subtree).
 *
 * Over an embedded server in the same process, one cache serves every session
 * of a proxy, on a link of its own (shared-cache.ts: replies are stamped with
 * the clock as the server queues them).
 *
 * The clock is the number of the watch's events that have arrived; an entry
 * learnt at clock `at` (the arrival of the reply that carried or proved it)
 * holds while no event for its node or an ancestor arrived after `at`.
 */
import { randomBytes } from 'node:crypto';
import { isChild, parentPath } from '../../rules/paths.js';
import type { XsPerm } from '../../wire/perms.js';

const TOKEN_PREFIX = randomBytes(8).toString('hex');
let nextToken = 0;

/** Most entries (and most remembered event paths) per session; past it everything is forgotten. */
export const PERMS_CACHE_ENTRIES = 4096;

/** The watches that keep the cache exact: every node, and domain introduction and release. */
export const CACHE_WATCH_PATHS = ['/', '@introduceDomain', '@releaseDomain'] as const;

/** Most entries that hold their children bytes (each event is checked against all of them). */
const CHILDREN_MAX = 64;

interface Entry {
  perms: XsPerm[];
  at: number;
  /** The bytes of its children's names (a DIRECTORY reply's length), when learnt with the perms. */
  childlen?: number;
}

export class PermsCache {
  /**
   * The token of the cache's watches: random (a process-wide random part, then a count), so no
   * client watch can collide with it; drawn once per process, as a session starts per client.
   */
  readonly token = `xs-restrict-perms-${TOKEN_PREFIX}-${(nextToken++).toString(36)}`;
  private clock = 0;
  /** Events before this clock may have been missed (watch not yet set, reset, or forgotten). */
  private validFrom = 0;
  private readonly entries = new Map<string, Entry>();
  private readonly lastEvent = new Map<string, number>();
  /**
   * Entries that hold their children bytes. A node's children change only with an event below
   * it (a create names the new node, the implicit ancestors it creates lie between; an rm names
   * the removed node): such an event drops the bytes. Few: the nodes N rewrites.
   */
  private readonly withChildren = new Set<string>();
  /** False until the daemon accepted the watches (and after RESET_WATCHES removed them). */
  private watching = false;

  /** The clock now: stamp a reply with it when it arrives. */
  get now(): number {
    return this.clock;
  }

  /** The watches are set as of clock `at` (their replies' arrival). */
  watchingFrom(at: number): void {
    this.watching = true;
    this.validFrom = Math.max(this.validFrom, at);
  }

  /** Forget everything, and trust nothing until the watches are set again. */
  reset(): void {
    this.watching = false;
    this.forget();
  }

  private forget(): void {
    this.entries.clear();
    this.lastEvent.clear();
    this.withChildren.clear();
    this.validFrom = this.clock;
  }

  /** An event of the cache's watches arrived for `path`. */
  changed(path: string): void {
    this.clock++;
    // A domain came or went (its nodes and the ACLs naming it may change without an event of theirs).
    if (path === '/' || path.startsWith('@')) {
      this.forget();
      return;
    }
    if (this.lastEvent.size >= PERMS_CACHE_ENTRIES) this.forget();
    this.lastEvent.set(path, this.clock);
    for (const p of this.withChildren) {
      if (p === path || !isChild(path, p)) continue;
      this.withChildren.delete(p);
      const e = this.entries.get(p);
      if (e) delete e.childlen;
    }
  }

  /** No event for `path` or one of its ancestors arrived after clock `since`. */
  unchangedSince(path: string, since: number): boolean {
    if (!this.watching || since < this.validFrom) return false;
    // No event at all since then: nothing to look up (the common case of a read after a read).
    if (since >= this.clock) return true;
    for (let p = path; ; p = parentPath(p)) {
      if ((this.lastEvent.get(p) ?? 0) > since) return false;
      if (p === '/') return true;
    }
  }

  /**
   * `perms` (and `childlen`, if given) were the node's at clock `at` (and stayed so up to now,
   * or this does nothing).
   */
  learn(path: string, perms: XsPerm[], at: number, childlen?: number): void {
    if (!this.unchangedSince(path, at)) return;
    if (this.entries.size >= PERMS_CACHE_ENTRIES && !this.entries.has(path)) {
      this.entries.clear();
      this.withChildren.clear();
    }
    const e: Entry = { perms, at };
    // Only now, when no event came since `at` at all: below the node, none is remembered.
    if (childlen !== undefined && at >= this.clock && this.withChildren.size < CHILDREN_MAX) {
      e.childlen = childlen;
      this.withChildren.add(path);
    } else this.withChildren.delete(path);
    this.entries.set(path, e);
  }

  /** The node's perms and since when they are known, if nothing changed them since. */
  get(path: string): Entry | undefined {
    const e = this.entries.get(path);
    if (e === undefined) return undefined;
    if (this.unchangedSince(path, e.at)) return e;
    this.entries.delete(path);
    this.withChildren.delete(path);
    return undefined;
  }
}
