/** The node requests of the embedded xenstored (xenstored_core.c do_read … do_set_perms). */
import { parentPath } from '../rules/paths.js';
import { permFor } from '../rules/perms.js';
import { parseSetPerms } from '../rules/quotas.js';
import { XENSTORE_PAYLOAD_MAX } from '../wire/constants.js';
import {
  formatPerm,
  XS_PERM_OWNER,
  XS_PERM_READ,
  XS_PERM_WRITE,
  type XsPerm,
} from '../wire/perms.js';
import { countNul, oneArg, splitStrings } from '../wire/strings.js';
import type { XenstoreConnection } from './connection.js';
import type { ServerCore } from './core.js';
import { domidArg } from './domain.js';
import { cloneNode, XsFail, type XsNode } from './node.js';
import type { Transaction } from './transaction.js';
import { fireWatches } from './watch.js';

type Tx = Transaction | undefined;

const EMPTY = Buffer.alloc(0);

/** The one-argument path of READ, DIRECTORY, GET_PERMS, MKDIR and RM, canonical; undefined when malformed. */
function onePath(conn: XenstoreConnection, p: Buffer): string | undefined {
  const arg = oneArg(p, conn.requestPath);
  return arg === undefined ? undefined : conn.canonical(arg);
}

function childList(n: XsNode): Buffer {
  let s = '';
  for (const c of n.children) s += `${c}\0`;
  return Buffer.from(s);
}

export function read(core: ServerCore, conn: XenstoreConnection, p: Buffer, tx: Tx): Buffer {
  return core.getNode(conn, tx, onePath(conn, p), XS_PERM_READ).value;
}

export function directory(core: ServerCore, conn: XenstoreConnection, p: Buffer, tx: Tx): Buffer {
  return childList(core.getNode(conn, tx, onePath(conn, p), XS_PERM_READ));
}

/** XS_DIRECTORY_PART: the generation, then as many whole child names from `offset` as fit. */
export function directoryPart(
  core: ServerCore,
  conn: XenstoreConnection,
  p: Buffer,
  tx: Tx,
): Buffer {
  if (countNul(p) !== 2) throw new XsFail('EINVAL');
  const strings = splitStrings(p);
  const n = core.getNode(conn, tx, conn.canonical(strings[0] as string), XS_PERM_READ);
  const off = domidArg(strings[1] ?? '');
  const all = childList(n);
  const gen = Buffer.from(`${n.generation}\0`);
  if (off >= all.length) return Buffer.concat([gen, Buffer.from([0])]);
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
  return Buffer.concat(parts);
}

export function getPerms(core: ServerCore, conn: XenstoreConnection, p: Buffer, tx: Tx): string {
  const n = core.getNode(conn, tx, onePath(conn, p), XS_PERM_READ);
  let s = '';
  for (const x of n.perms) s += `${formatPerm(x)}\0`;
  return s;
}

export function write(core: ServerCore, conn: XenstoreConnection, p: Buffer, tx: Tx): string {
  const z = p.indexOf(0);
  if (z < 0) throw new XsFail('EINVAL');
  const name = conn.canonical(p.toString('utf8', 0, z));
  // The payload may be a view of the read buffer: the stored value is a copy.
  const data = Buffer.from(p.subarray(z + 1));
  let node: XsNode;
  try {
    node = core.getNode(conn, tx, name, XS_PERM_WRITE);
  } catch (e) {
    if (!(e instanceof XsFail) || e.errno !== 'ENOENT') throw e;
    node = core.createNode(conn, tx, name, data);
    fireWatches(core, conn, name, node, false, undefined, tx);
    return 'OK\0';
  }
  if (tx) {
    const updated = cloneNode(node);
    updated.value = data;
    core.write(conn, tx, name, updated, true);
    node = updated;
  } else core.setValue(conn, name, node, data);
  fireWatches(core, conn, name, node, false, undefined, tx);
  return 'OK\0';
}

export function mkdir(core: ServerCore, conn: XenstoreConnection, p: Buffer, tx: Tx): string {
  const name = onePath(conn, p);
  try {
    core.getNode(conn, tx, name, XS_PERM_WRITE);
  } catch (e) {
    if (!(e instanceof XsFail) || e.errno !== 'ENOENT' || name === undefined) throw e;
    const node = core.createNode(conn, tx, name, EMPTY);
    fireWatches(core, conn, name, node, false, undefined, tx);
  }
  return 'OK\0';
}

export function rm(core: ServerCore, conn: XenstoreConnection, p: Buffer, tx: Tx): string {
  const name = onePath(conn, p);
  try {
    core.getNode(conn, tx, name, XS_PERM_WRITE);
  } catch (e) {
    if (!(e instanceof XsFail) || e.errno !== 'ENOENT' || name === undefined) throw e;
    // Didn't exist already? Fine, if the parent exists.
    if (core.read(conn, tx, parentPath(name))) return 'OK\0';
    throw e;
  }
  if (name === '/') throw new XsFail('EINVAL');
  core.rmNode(conn, tx, name as string);
  return 'OK\0';
}

export function setPerms(core: ServerCore, conn: XenstoreConnection, p: Buffer, tx: Tx): string {
  const parsed = parseSetPerms(splitStrings(p), countNul(p), core.quotas, !conn.privileged);
  if (typeof parsed === 'string') throw new XsFail(parsed);
  const { path, perms } = parsed;
  if (path.startsWith('@')) {
    const sp = core.specialPerms.get(path);
    if (!sp) throw new XsFail('EINVAL');
    const need = XS_PERM_WRITE | XS_PERM_OWNER;
    if ((permFor(conn, sp) & need) !== need) throw new XsFail('EACCES');
    core.specialPerms.set(path, perms);
    return 'OK\0';
  }
  const name = conn.canonical(path);
  const node = core.getNode(conn, tx, name, XS_PERM_WRITE | XS_PERM_OWNER);
  const oldOwner = (node.perms[0] as XsPerm).domid;
  const newOwner = (perms[0] as XsPerm).domid;
  if (!conn.privileged && newOwner !== oldOwner) throw new XsFail('EPERM');
  const updated = cloneNode(node);
  updated.perms = perms;
  core.write(conn, tx, name, updated, true);
  core.entryAdd(tx, oldOwner, -1);
  core.entryAdd(tx, newOwner, 1);
  fireWatches(core, conn, name, updated, false, node.perms, tx);
  return 'OK\0';
}
