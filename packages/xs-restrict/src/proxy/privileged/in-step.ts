/**
 * Requests decided and done in one step on a synchronous link (Dom0Channel.synchronous: an
 * embedded server attached in process, which answers each write before it returns). Nothing
 * runs between the daemon's replies and what is done with them, so a check and the change it
 * allows are as atomic as inside xenstored without a transaction of ours, and the perms cache,
 * every event taken in, is the daemon's state as of now. Only outcomes the replies prove are
 * taken here (reads and rewrites N's perms allow, a mkdir of an existing node); anything else
 * (a refusal, whose errno needs the ancestors, a create, a transaction) returns undefined having
 * sent nothing but reads, and is decided the general way.
 */
import { permFor } from '../../rules/perms.js';
import type { XsMessage } from '../../wire/codec.js';
import {
  XS_DIRECTORY,
  XS_ERROR,
  XS_GET_PERMS,
  XS_MKDIR,
  XS_READ,
  XS_WRITE,
} from '../../wire/constants.js';
import { XS_PERM_READ, XS_PERM_WRITE, type XsPerm } from '../../wire/perms.js';
import { nulTerminated, oneArg } from '../../wire/strings.js';
import type { SessionContext } from './access.js';
import { childBytes, errReply, okReply, parsePermsReply, type Req, relayReply } from './book.js';
import { rewriteTooBig } from './writes.js';

/** The reply to `m` (outside a transaction), or undefined: decide it the general way. */
export function answerNow(s: SessionContext, m: XsMessage): Buffer | undefined {
  if (m.txId !== 0) return undefined;
  switch (m.type) {
    case XS_READ:
    case XS_DIRECTORY:
    case XS_GET_PERMS:
      return readNow(s, m);
    case XS_WRITE:
    case XS_MKDIR:
      return writeNow(s, m);
  }
  return undefined;
}

/** Most requests of one client sent to the daemon in one write. */
const RUN_MAX = 64;

/** How a request the perms cache decides alone is answered. */
interface Planned {
  m: XsMessage;
  /** Answered here, without the daemon (a mkdir of an existing node, a rewrite over quota). */
  local?: Buffer;
  /** A rewrite: what the cache learns again once it is done. */
  rewrite?: { path: string; perms: XsPerm[]; childlen: number };
}

/**
 * The queue's leading run of requests the perms cache decides alone (reads N may make,
 * rewrites and mkdirs of existing nodes N may write, with their children bytes known), sent to
 * the daemon in one write. Deciding them all first is exact: reads and rewrites change no
 * node's perms, existence or children, so no decision depends on an earlier request of the
 * run. Each reply goes to `reply` as it arrives, between the events the requests fire, in the
 * order a direct connection gets them. Returns how many requests it took from the queue.
 */
export function runNow(
  s: SessionContext,
  queue: readonly XsMessage[],
  reply: (b: Buffer) => void,
): number {
  const plan: Planned[] = [];
  const reqs: Req[] = [];
  const rewriting = new Map<string, readonly XsPerm[]>();
  for (const m of queue) {
    if (plan.length >= RUN_MAX) break;
    const p = fromCache(s, m);
    if (!p) break;
    plan.push(p);
    if (p.rewrite) rewriting.set(p.rewrite.path, p.rewrite.perms);
    if (!p.local) reqs.push([m.type, 0, m.payload, m.path]);
  }
  let k = 0;
  const locals = (): void => {
    for (let p = plan[k]; p?.local; p = plan[++k]) reply(p.local);
  };
  locals();
  if (reqs.length === 0) return plan.length;
  s.out.rewriting = rewriting;
  try {
    s.chan.callNow(reqs, (r) => {
      const p = plan[k++] as Planned;
      const w = p.rewrite;
      if (w && r.type !== XS_ERROR) {
        // A rewrite keeps the perms and the children; its own event named the node, not below it.
        s.cache.learn(w.path, w.perms, s.cache.now, w.childlen);
        reply(okReply(p.m));
      } else reply(relayReply(p.m, r));
      locals();
    });
  } finally {
    s.out.rewriting = undefined;
  }
  return plan.length;
}

/** `m` as the perms cache alone decides it, or undefined. */
function fromCache(s: SessionContext, m: XsMessage): Planned | undefined {
  if (m.txId !== 0) return undefined;
  const nul = m.payload.indexOf(0);
  if (nul < 1) return undefined;
  if (m.type !== XS_WRITE && nul !== m.payload.length - 1) return undefined;
  // decide() decoded it: the same string, its hash computed once for the cache and the server.
  const path = m.path ?? m.payload.toString('utf8', 0, nul);
  const e = s.cache.get(path);
  if (!e) return undefined;
  switch (m.type) {
    case XS_READ:
    case XS_DIRECTORY:
    case XS_GET_PERMS:
      return allows(s, e.perms, XS_PERM_READ) ? { m } : undefined;
    case XS_MKDIR:
      return allows(s, e.perms, XS_PERM_WRITE) ? { m, local: okReply(m) } : undefined;
    case XS_WRITE: {
      if (e.childlen === undefined || !allows(s, e.perms, XS_PERM_WRITE)) return undefined;
      if (rewriteTooBig(s, e.perms, m.payload.length - nul - 1, e.childlen))
        return { m, local: errReply(m, 'ENOSPC') };
      return { m, rewrite: { path, perms: e.perms, childlen: e.childlen } };
    }
  }
  return undefined;
}

function allows(s: SessionContext, perms: readonly XsPerm[] | undefined, perm: number): boolean {
  return perms !== undefined && (permFor(s.who, perms) & perm) !== 0;
}

/** A GET_PERMS reply's perms; undefined for an error or perms we cannot parse. */
function permsOf(r: XsMessage | undefined): XsPerm[] | undefined {
  if (r?.type !== XS_GET_PERMS) return undefined;
  try {
    return parsePermsReply(r);
  } catch {
    return undefined;
  }
}

/**
 * A read the perms cache cannot decide (the cached ones go by runNow): get_node with
 * XS_PERM_READ passes, so dom0's reply is N's, and the perms are learnt.
 */
function readNow(s: SessionContext, m: XsMessage): Buffer | undefined {
  const path = oneArg(m.payload);
  if (path === undefined || path[0] !== '/') return undefined;
  const [pr, r] = s.chan.callNow([
    [XS_GET_PERMS, 0, m.payload],
    [m.type, 0, m.payload],
  ]);
  const perms = permsOf(pr);
  if (!allows(s, perms, XS_PERM_READ) || r === undefined || r.type === XS_ERROR) return undefined;
  s.cache.learn(path, perms as XsPerm[], s.cache.now);
  return relayReply(m, r);
}

/**
 * do_write / do_mkdir of a node that exists and N may write: get_node passes, so a mkdir is
 * answered OK with nothing done, and a write is write_node's quota check and then the write,
 * which keeps the node's perms (only a create sets them) and children. A cached write is then
 * one daemon request, as direct.
 */
function writeNow(s: SessionContext, m: XsMessage): Buffer | undefined {
  const write = m.type === XS_WRITE;
  const nul = m.payload.indexOf(0);
  const path = write
    ? nul < 0
      ? undefined
      : m.payload.toString('utf8', 0, nul)
    : oneArg(m.payload);
  if (path === undefined || path[0] !== '/') return undefined;
  const arg = nulTerminated([path]);
  const known = s.cache.get(path);
  let perms = known?.perms;
  let childlen = known?.childlen;
  const reqs: Req[] = [];
  if (!perms) reqs.push([XS_GET_PERMS, 0, arg]);
  if (write && childlen === undefined) reqs.push([XS_DIRECTORY, 0, arg]);
  const replies = reqs.length > 0 ? s.chan.callNow(reqs) : [];
  if (!perms) perms = permsOf(replies[0]);
  if (!allows(s, perms, XS_PERM_WRITE)) return undefined;
  const held = perms as XsPerm[];
  if (write && childlen === undefined) {
    const dir = replies[replies.length - 1] as XsMessage;
    if (dir.type !== XS_DIRECTORY) return undefined;
    childlen = childBytes(dir);
  }
  // Both were the node's as of now (nothing ran since the replies came).
  if (reqs.length > 0) s.cache.learn(path, held, s.cache.now, childlen);
  if (!write) return okReply(m);
  if (rewriteTooBig(s, held, m.payload.length - nul - 1, childlen as number))
    return errReply(m, 'ENOSPC');
  s.out.rewriting = new Map([[path, held]]);
  let r: XsMessage;
  try {
    r = s.chan.callNow([[XS_WRITE, 0, m.payload]])[0] as XsMessage;
  } finally {
    s.out.rewriting = undefined;
  }
  if (r.type === XS_ERROR) return relayReply(m, r);
  // A rewrite keeps the perms and the children; its own event named the node, not below it.
  s.cache.learn(path, held, s.cache.now, childlen);
  return okReply(m);
}
