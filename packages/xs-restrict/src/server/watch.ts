/** Watches of the embedded xenstored (xenstored_watch.c): registration and firing. */
import { isChild, parentPath } from '../rules/paths.js';
import { permFor, watchPermitted } from '../rules/perms.js';
import { watchQuotaErrno } from '../rules/quotas.js';
import { XENSTORE_REL_PATH_MAX } from '../wire/constants.js';
import { XS_PERM_READ, type XsPerm } from '../wire/perms.js';
import { splitStrings } from '../wire/strings.js';
import type { XenstoreConnection } from './connection.js';
import type { ServerCore } from './core.js';
import { XsFail, type XsNode } from './node.js';
import type { Transaction } from './transaction.js';

export interface Watch {
  path: string;
  token: string;
  /** The implicit prefix stripped from event paths when the watch was set with a relative path. */
  relativeTo: string | undefined;
}

/** The path an event names for `w`: relative to the home of a watch set with a relative path. */
function watchPath(w: Watch, name: string): string {
  if (w.relativeTo === undefined) return name;
  let p = name.slice(w.relativeTo.length);
  if (p.startsWith('/')) p = p.slice(1);
  return p;
}

/**
 * fire_watches: queue an event for every watch on `name` (or above it, unless
 * `exact`) whose connection may know of the change. In a transaction the
 * change is only noted, and fires at the commit.
 */
export function fireWatches(
  core: ServerCore,
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
  if (core.watchCount === 0) return;
  const special = name.startsWith('@');
  const sp = special ? core.specialPerms.get(name) : undefined;
  // The node and its parent are the same for every connection: look them up once.
  const n = special ? undefined : (node ?? core.store.get(name));
  const parent = n === undefined ? undefined : core.store.get(parentPath(name));
  for (const c of core.connections) {
    if (c.watches.length === 0) continue;
    if (special) {
      if (!sp || !(permFor(c, sp) & XS_PERM_READ)) continue;
    } else if (!watchPermitted(c, oldPerms, n?.perms, parent?.perms)) continue;
    for (const w of c.watches) {
      if (exact ? name === w.path : isChild(name, w.path))
        c.queueEvent(watchPath(w, name), w.token);
    }
  }
  for (const c of core.connections) if (c !== conn) c.flush();
}

function domainWatchCount(core: ServerCore, domid: number): number {
  let n = 0;
  for (const c of core.connections) if (c.domid === domid) n += c.watches.length;
  return n;
}

/** XS_WATCH: replies itself, because the watch's first event must follow the reply. */
export function watch(core: ServerCore, conn: XenstoreConnection, payload: Buffer): void {
  const strings = splitStrings(payload);
  if (strings.length < 2) throw new XsFail('EINVAL');
  let path = strings[0] as string;
  const token = strings[1] as string;
  let relativeTo: string | undefined;
  if (path.startsWith('@')) {
    if (Buffer.byteLength(path) > XENSTORE_REL_PATH_MAX) throw new XsFail('EINVAL');
  } else {
    if (!path.startsWith('/')) relativeTo = conn.home;
    path = conn.canonical(path);
    if (!core.validName(path)) throw new XsFail('EINVAL');
  }
  if (conn.watches.some((w) => w.path === path && w.token === token)) throw new XsFail('EEXIST');
  if (!conn.privileged) {
    const e = watchQuotaErrno(core.quotas, domainWatchCount(core, conn.domid));
    if (e) throw new XsFail(e);
  }
  const w: Watch = { path, token, relativeTo };
  conn.addWatch(w);
  conn.replyOk();
  // xenstored fires once up front so a client can (re)read the state.
  conn.queueEvent(watchPath(w, path), token);
}

export function unwatch(_core: ServerCore, conn: XenstoreConnection, payload: Buffer): string {
  const strings = splitStrings(payload);
  if (strings.length < 2) throw new XsFail('EINVAL');
  const path = conn.canonical(strings[0] as string);
  if (!conn.removeWatch(path, strings[1] as string)) throw new XsFail('ENOENT');
  return 'OK\0';
}

/** XS_RESET_WATCHES: the connection's watches and transactions go. */
export function resetWatches(_core: ServerCore, conn: XenstoreConnection): string {
  conn.dropWatchesAndTransactions();
  return 'OK\0';
}
