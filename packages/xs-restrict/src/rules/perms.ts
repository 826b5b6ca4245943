/**
 * Xenstore permission decisions shared by the embedded server and the
 * restricting proxy's privileged mode, as C xenstored 4.17 makes them
 * (xenstored_core.c perm_for_conn, get_node, errno_from_parents;
 * xenstored_watch.c watch_permitted). Written once: both callers drive them.
 */
import type { XsErrno } from '../wire/constants.js';
import {
  permBits,
  XS_PERM_OWNER,
  XS_PERM_READ,
  XS_PERM_WRITE,
  type XsPerm,
} from '../wire/perms.js';
import { parentPath } from './paths.js';

/** Every right: what owners and privileged connections get. */
export const XS_PERM_ALL = XS_PERM_READ | XS_PERM_WRITE | XS_PERM_OWNER;

/** Who a request acts as, as perm_for_conn sees a connection. */
export interface Requester {
  readonly domid: number;
  /** The domain this one is the device model of (XS_SET_TARGET), if any. */
  readonly target: number | undefined;
  /** dom0 or xenstored's `--priv-domid`: every right on every node. */
  readonly privileged: boolean;
}

/**
 * perm_for_conn for an unprivileged domain `domid` (with its device-model
 * `target`, if any): the owner gets everything, else the first entry naming
 * the domain, else the owner entry's rights for everyone else.
 */
export function permForDomain(
  domid: number,
  target: number | undefined,
  perms: readonly XsPerm[],
): number {
  const owner = perms[0];
  if (owner === undefined) return XS_PERM_ALL;
  if (owner.domid === domid || (target !== undefined && owner.domid === target)) return XS_PERM_ALL;
  for (let i = 1; i < perms.length; i++) {
    const p = perms[i] as XsPerm;
    if (p.domid === domid || (target !== undefined && p.domid === target)) return permBits(p.perm);
  }
  return permBits(owner.perm);
}

/** perm_for_conn: the rights `who` has on a node with `perms`. */
export function permFor(who: Requester, perms: readonly XsPerm[]): number {
  if (who.privileged || perms[0] === undefined) return XS_PERM_ALL;
  return permForDomain(who.domid, who.target, perms);
}

/**
 * get_node's first step: undefined when the node exists and grants every bit
 * of `perm`, else the errno errno_from_parents starts from (ENOENT for a
 * missing node, EACCES for a refused one).
 */
export function nodeErrno(
  who: Requester,
  perms: readonly XsPerm[] | undefined,
  perm: number,
): XsErrno | undefined {
  if (perms === undefined) return 'ENOENT';
  return (permFor(who, perms) & perm) === perm ? undefined : 'EACCES';
}

/** The verdict of errno_from_parents, with the nearest existing ancestor it judged by. */
export interface ParentsVerdict {
  errno: XsErrno;
  ancestor: string | undefined;
  perms: XsPerm[] | undefined;
}

/**
 * errno_from_parents, as a walk its caller drives (the server from its tree,
 * the privileged proxy with GET_PERMS as dom0): it yields each ancestor of
 * `name`, nearest first, and is sent that node's perms (undefined when the
 * node does not exist), until one exists. A refused node's existence stays
 * hidden: `errnum` only if that ancestor grants some bit of `perm`, else EACCES.
 */
export function* fromParents(
  who: Requester,
  name: string,
  errnum: XsErrno,
  perm: number,
): Generator<string, ParentsVerdict, XsPerm[] | undefined> {
  let p = name;
  do {
    p = parentPath(p);
    const perms = yield p;
    if (perms !== undefined)
      return { errno: permFor(who, perms) & perm ? errnum : 'EACCES', ancestor: p, perms };
  } while (p !== '/');
  return { errno: 'EACCES', ancestor: undefined, perms: undefined };
}

/**
 * watch_permitted: `who` gets an event for a node if it could read the node's
 * perms before the change (`oldPerms`), the node, or the node's parent; not at
 * all when there is no node to judge by.
 */
export function watchPermitted(
  who: Requester,
  oldPerms: readonly XsPerm[] | undefined,
  nodePerms: readonly XsPerm[] | undefined,
  parentPerms: readonly XsPerm[] | undefined,
): boolean {
  if (oldPerms !== undefined && permFor(who, oldPerms) & XS_PERM_READ) return true;
  if (nodePerms === undefined) return false;
  if (permFor(who, nodePerms) & XS_PERM_READ) return true;
  return parentPerms !== undefined && (permFor(who, parentPerms) & XS_PERM_READ) !== 0;
}
