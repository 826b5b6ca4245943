/** get_node for domain N from the daemon's answers to dom0: the shared rule, driven over the link. */
import type { Requester } from '../../rules/perms.js';
import { fromParents, nodeErrno } from '../../rules/perms.js';
import type { XsMessage } from '../../wire/codec.js';
import { XS_GET_PERMS, type XsErrno } from '../../wire/constants.js';
import type { XsPerm } from '../../wire/perms.js';
import { errnoOf, nulTerminated } from '../../wire/strings.js';
import { type DomainBook, Fail, parsePermsReply } from './book.js';
import type { Dom0Channel } from './channel.js';
import type { SessionOutput } from './output.js';
import type { PermsCache } from './perms-cache.js';

/** What the session's operations work with. */
export interface SessionContext {
  readonly book: DomainBook;
  readonly chan: Dom0Channel;
  readonly out: SessionOutput;
  /** Domain N, unprivileged, as perm_for_conn sees it. */
  readonly who: Requester;
  readonly cache: PermsCache;
  isClosed(): boolean;
}

/** A refusal, with the nearest existing ancestor and its perms when errno_from_parents found one. */
export interface NodeRefusal {
  errno: XsErrno;
  ancestor?: string;
  perms?: XsPerm[];
}

/**
 * get_node's decision from the node's GET_PERMS reply (in transaction `tx`):
 * the node's perms, or the errno N gets, asking the daemon for the ancestors
 * errno_from_parents needs.
 */
export async function getNode(
  s: SessionContext,
  tx: number,
  name: string,
  r: XsMessage,
  perm: number,
): Promise<XsPerm[] | NodeRefusal> {
  let perms: XsPerm[] | undefined;
  if (r.type === XS_GET_PERMS) perms = parsePermsReply(r);
  else {
    const e = errnoOf(r) ?? 'EIO';
    if (e !== 'ENOENT') return { errno: e };
  }
  const errnum = nodeErrno(s.who, perms, perm);
  if (errnum === undefined) return perms as XsPerm[];
  const walk = fromParents(s.who, name, errnum, perm);
  let step = walk.next();
  while (!step.done) {
    const p = step.value;
    const a = await s.chan.one(XS_GET_PERMS, tx, nulTerminated([p]));
    if (a.type === XS_GET_PERMS) step = walk.next(parsePermsReply(a));
    else {
      const e = errnoOf(a);
      if (e !== 'ENOENT' || p === '/') throw new Fail(e ?? 'EIO');
      step = walk.next(undefined);
    }
  }
  const v = step.value;
  return v.ancestor === undefined
    ? { errno: v.errno }
    : { errno: v.errno, ancestor: v.ancestor, perms: v.perms as XsPerm[] };
}
