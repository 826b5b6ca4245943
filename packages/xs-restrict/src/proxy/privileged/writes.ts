/**
 * The privileged session's changes for domain N: WRITE, MKDIR and SET_PERMS
 * decided as C xenstored 4.17 decides them (get_node, construct_node /
 * create_node with their quota checks, do_set_perms), then done as dom0 with
 * the owner fixed up, all in one transaction so the check and the change are
 * one atomic step; and RM.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { baseName, isChild, parentPath } from '../../rules/paths.js';
import {
  createQuotaFailure,
  entryTooBig,
  nodeRecordSize,
  parseSetPerms,
} from '../../rules/quotas.js';
import type { XsMessage } from '../../wire/codec.js';
import {
  XS_DIRECTORY,
  XS_ERROR,
  XS_GET_PERMS,
  XS_MKDIR,
  XS_READ,
  XS_RM,
  XS_SET_PERMS,
  XS_WRITE,
} from '../../wire/constants.js';
import { formatPerm, XS_PERM_OWNER, XS_PERM_WRITE, type XsPerm } from '../../wire/perms.js';
import { countNul, errnoOf, nulTerminated, oneArg, splitStrings } from '../../wire/strings.js';
import type { SessionContext } from './access.js';
import { getNode } from './access.js';
import {
  childBytes,
  errReply,
  LinkClosed,
  newVirtualTx,
  okReply,
  parsePermsReply,
  type Req,
  relayReply,
  type VirtualTx,
  valueAndChildBytes,
} from './book.js';

/** A body's answer: the transaction is abandoned and the request decided again from the start. */
const RESTART = Buffer.alloc(0);

/** Commits of ours that met EAGAIN this often are retried after a random pause. */
const BACKOFF_AFTER = 8;

/**
 * Runs `body` in the client's transaction, or in one of ours (committed,
 * and retried on EAGAIN) so the check, the change and the perms fix-up are
 * one atomic step, as they are inside xenstored.
 */
export async function atomically(
  s: SessionContext,
  m: XsMessage,
  tx: VirtualTx | undefined,
  first: (t: number) => Req[],
  body: (t: number, first: XsMessage[], own: VirtualTx) => Promise<Buffer | undefined>,
): Promise<Buffer> {
  if (tx) {
    const replies = await Promise.all(s.chan.call(first(tx.up)));
    return (await body(tx.up, replies, tx)) ?? okReply(m);
  }
  return s.book.serialize(() => ownTransaction(s, m, first, body));
}

async function ownTransaction(
  s: SessionContext,
  m: XsMessage,
  first: (t: number) => Req[],
  body: (t: number, first: XsMessage[], own: VirtualTx) => Promise<Buffer | undefined>,
): Promise<Buffer> {
  for (let attempt = 0; ; attempt++) {
    const b = await s.chan.begin(first);
    const own = newVirtualTx(b.tx);
    let answer: Buffer | undefined;
    try {
      answer = await body(b.tx, b.replies, own);
    } catch (e) {
      void s.chan.endTx(b.tx, false).catch(() => undefined);
      throw e;
    }
    if (answer === RESTART) {
      s.chan.abandonTx(b.tx);
      continue;
    }
    if (answer !== undefined) {
      void s.chan.endTx(b.tx, false).catch(() => undefined);
      return answer;
    }
    const r = await commit(s, b.tx, own);
    const e = errnoOf(r);
    if (e === undefined) {
      settle(s, own);
      // A commit succeeds only if nothing changed the node since our transaction first read its
      // perms, and our change left them as `learn` says: they are the node's as the reply came.
      if (own.learn) s.cache.learn(own.learn.path, own.learn.perms, s.chan.arrivedAt(r));
      return okReply(m);
    }
    if (e !== 'EAGAIN') return errReply(m, e);
    // Another connection committed a change to a node we read: check again. A direct write never
    // answers EAGAIN, so there is no giving up; contenders are spread apart after a few rounds.
    if (attempt >= BACKOFF_AFTER) await sleep(Math.random() * Math.min(attempt, 20));
    if (s.isClosed()) throw new LinkClosed();
  }
}

/** TRANSACTION_END T upstream, dropping the commit's events for the nodes only our fix-up touched. */
export function commit(s: SessionContext, up: number, t: VirtualTx): Promise<XsMessage> {
  const suppress = new Set([...t.suppress].filter((p) => !t.fired.has(p)));
  return s.out.suppressing(suppress, () => s.chan.endTx(up, true), t.removed);
}

export function settle(s: SessionContext, t: VirtualTx): void {
  for (const p of t.removed) {
    for (const c of [...s.book.created]) if (isChild(c, p)) s.book.created.delete(c);
  }
  for (const p of t.created) s.book.created.add(p);
}

/** Near the quota: forget counted nodes that are gone or no longer N's (the toolstack removed them). */
async function prune(s: SessionContext): Promise<void> {
  const paths = [...s.book.created];
  const replies = await Promise.all(
    s.chan.call(paths.map((p): Req => [XS_GET_PERMS, 0, nulTerminated([p])])),
  );
  replies.forEach((r, i) => {
    const gone = r.type !== XS_GET_PERMS || parsePermsReply(r)[0]?.domid !== s.book.domid;
    if (gone) s.book.created.delete(paths[i] as string);
  });
}

/** N's entries as the proxy counts them: nodes it created through the proxy, plus a transaction's own. */
function entries(s: SessionContext, t: VirtualTx, inClientTx: boolean): number {
  // As in xenstored, a transaction's new nodes count only once it commits.
  return s.book.created.size + (inClientTx ? 0 : t.created.length);
}

/**
 * write_node's quota check when N rewrites an existing node: the record as it would be stored
 * (its perms, the new data, its children's names) must stay below the entry size quota. True
 * when it would not (ENOSPC).
 */
export function rewriteTooBig(
  s: SessionContext,
  perms: readonly XsPerm[],
  datalen: number,
  childlen: number,
): boolean {
  return entryTooBig(s.book.quotas, nodeRecordSize(perms.length, datalen, childlen));
}

export async function writeOp(
  s: SessionContext,
  m: XsMessage,
  tx: VirtualTx | undefined,
): Promise<Buffer> {
  let name: string | undefined;
  let data: Buffer;
  if (m.type === XS_WRITE) {
    const nul = m.payload.indexOf(0);
    if (nul < 0) return errReply(m, 'EINVAL');
    name = m.payload.subarray(0, nul).toString('utf8');
    data = m.payload.subarray(nul + 1);
  } else {
    name = oneArg(m.payload);
    data = Buffer.alloc(0);
  }
  if (name === undefined) return errReply(m, 'EINVAL');
  const path = name;
  const write = m.type === XS_WRITE;
  // In a transaction of ours the WRITE goes with the checks' requests, one round trip saved: if the
  // checks refuse, the transaction is abandoned and nobody ever sees the write. If the node did not
  // exist, the write created it as dom0's: start again without it, and create the node as N would.
  let speculate = write && !tx;
  return atomically(
    s,
    m,
    tx,
    (t) =>
      write
        ? [
            [XS_GET_PERMS, t, nulTerminated([path])],
            [XS_DIRECTORY, t, nulTerminated([path])],
            ...(speculate ? [[XS_WRITE, t, m.payload] as Req] : []),
          ]
        : [[XS_GET_PERMS, t, nulTerminated([path])]],
    async (t, [permsR, dirR, writeR], own) => {
      const got = await getNode(s, t, path, permsR as XsMessage, XS_PERM_WRITE);
      if (Array.isArray(got)) {
        if (!write) return okReply(m);
        if (rewriteTooBig(s, got, data.length, childBytes(dirR as XsMessage)))
          return errReply(m, 'ENOSPC');
        const r = writeR ?? (await s.chan.one(XS_WRITE, t, m.payload));
        if (r.type === XS_ERROR) return relayReply(m, r);
        own.fired.add(path);
        own.learn = { path, perms: got };
        return tx ? okReply(m) : undefined;
      }
      if (got.errno !== 'ENOENT' || got.ancestor === undefined || got.perms === undefined)
        return errReply(m, got.errno);
      if (writeR) {
        speculate = false;
        return RESTART;
      }
      return create(s, m, t, own, tx !== undefined, path, data, got.ancestor, got.perms);
    },
  );
}

/** construct_node + create_node for N, then the write as dom0 and the owner fix-up. */
async function create(
  s: SessionContext,
  m: XsMessage,
  t: number,
  own: VirtualTx,
  inClientTx: boolean,
  path: string,
  data: Buffer,
  ancestor: string,
  parentPerms: XsPerm[],
): Promise<Buffer | undefined> {
  const names: string[] = [];
  for (let p = path; p !== ancestor; p = parentPath(p)) names.push(p);
  const [valR, dirR] = await Promise.all(
    s.chan.call([
      [XS_READ, t, nulTerminated([ancestor])],
      [XS_DIRECTORY, t, nulTerminated([ancestor])],
    ]),
  );
  const perms = parentPerms.map((p) => ({ domid: p.domid, perm: p.perm }));
  (perms[0] as XsPerm).domid = s.book.domid;
  if (entries(s, own, inClientTx) + names.length >= s.book.quotas.nodesPerDomain) await prune(s);
  // create_node's checks in its order: new nodes bottom up (entries, then size), then the parent.
  const sizes = names.map((_, i) =>
    nodeRecordSize(
      perms.length,
      i === 0 ? data.length : 0,
      i === 0 ? 0 : Buffer.byteLength(baseName(names[i - 1] as string)) + 1,
    ),
  );
  const top = names[names.length - 1] as string;
  const parentLen = valueAndChildBytes(valR as XsMessage, dirR as XsMessage);
  const parentSize = nodeRecordSize(
    parentPerms.length,
    0,
    parentLen + Buffer.byteLength(baseName(top)) + 1,
  );
  const q = s.book.quotas;
  const written = createQuotaFailure(q, entries(s, own, inClientTx), inClientTx, sizes, parentSize);
  if (written !== undefined) {
    if (inClientTx && written > 0) own.failed = true;
    return errReply(m, 'ENOSPC');
  }
  const reqs: Req[] = [
    m.type === XS_WRITE ? [XS_WRITE, t, m.payload] : [XS_MKDIR, t, nulTerminated([path])],
  ];
  const fix = (parentPerms[0] as XsPerm).domid !== s.book.domid;
  if (fix) {
    const permStr = nulTerminated(perms.map(formatPerm));
    for (const n of [...names].reverse()) reqs.push([XS_SET_PERMS, t, `${n}\0${permStr}`]);
  }
  const replies = await Promise.all(s.chan.call(reqs));
  const bad = replies.find((r) => r.type === XS_ERROR);
  if (bad) {
    if (inClientTx) own.failed = true;
    return relayReply(m, bad);
  }
  own.fired.add(path);
  own.learn = { path, perms };
  if (fix) for (const n of names) if (n !== path) own.suppress.add(n);
  own.created.push(...names);
  return inClientTx ? okReply(m) : undefined;
}

export async function setPermsOp(
  s: SessionContext,
  m: XsMessage,
  tx: VirtualTx | undefined,
): Promise<Buffer> {
  const p = m.payload;
  const parsed = parseSetPerms(splitStrings(p), countNul(p), s.book.quotas, true);
  if (typeof parsed === 'string') return errReply(m, parsed);
  const { path, perms } = parsed;
  if (path.startsWith('@')) {
    if (path !== '@releaseDomain' && path !== '@introduceDomain') return errReply(m, 'EINVAL');
    // set_perms_special: N would need write and owner on the special node's perms.
    return errReply(m, 'EACCES');
  }
  const need = XS_PERM_WRITE | XS_PERM_OWNER;
  return atomically(
    s,
    m,
    tx,
    (t) => [
      [XS_GET_PERMS, t, nulTerminated([path])],
      [XS_READ, t, nulTerminated([path])],
      [XS_DIRECTORY, t, nulTerminated([path])],
    ],
    async (t, [permsR, valR, dirR], own) => {
      const got = await getNode(s, t, path, permsR as XsMessage, need);
      if (!Array.isArray(got)) return errReply(m, got.errno);
      if ((perms[0] as XsPerm).domid !== (got[0] as XsPerm).domid) return errReply(m, 'EPERM');
      const len = valueAndChildBytes(valR as XsMessage, dirR as XsMessage);
      if (entryTooBig(s.book.quotas, nodeRecordSize(perms.length, 0, len)))
        return errReply(m, 'ENOSPC');
      const r = await s.chan.one(XS_SET_PERMS, t, p);
      if (r.type === XS_ERROR) return relayReply(m, r);
      own.fired.add(path);
      own.learn = { path, perms };
      return tx ? okReply(m) : undefined;
    },
  );
}

/** do_rm for N: get_node for write, then the rm as dom0 (a missing node is OK if its parent exists). */
export async function rmOp(
  s: SessionContext,
  m: XsMessage,
  tx: VirtualTx | undefined,
): Promise<Buffer> {
  const name = oneArg(m.payload);
  if (name === undefined) return errReply(m, 'EINVAL');
  const t = tx?.up ?? 0;
  // Outside a transaction the check and the rm are two steps: a transaction of ours would fire
  // the rm's events in the order of first access, not rm_node's children-first order.
  const r = await s.chan.one(XS_GET_PERMS, t, nulTerminated([name]));
  const got = await getNode(s, t, name, r, XS_PERM_WRITE);
  if (!Array.isArray(got)) {
    if (got.errno !== 'ENOENT') return errReply(m, got.errno);
    // Didn't exist already? Fine, if the parent exists.
    return got.ancestor === parentPath(name) ? okReply(m) : errReply(m, 'ENOENT');
  }
  if (name === '/') return errReply(m, 'EINVAL');
  const rr = await s.chan.one(XS_RM, t, nulTerminated([name]));
  if (rr.type === XS_RM) {
    if (tx) {
      tx.removed.push(name);
      tx.fired.add(name);
    } else {
      for (const c of [...s.book.created]) if (isChild(c, name)) s.book.created.delete(c);
    }
  }
  return relayReply(m, rr);
}
