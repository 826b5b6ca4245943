/** Transactions of the embedded xenstored (xenstored_transaction.c): a private view, checked at commit. */
import { commitEntriesTooMany, transactionQuotaErrno } from '../rules/quotas.js';
import type { XsPerm } from '../wire/perms.js';
import { oneArg } from '../wire/strings.js';
import type { XenstoreConnection } from './connection.js';
import type { ServerCore } from './core.js';
import { cloneNode, NO_GENERATION, XsFail, type XsNode } from './node.js';
import { fireWatches } from './watch.js';

/** A node as the transaction first saw it, and what it did to it since. */
export interface Accessed {
  node: XsNode | null;
  generation: number;
  oldPerms: XsPerm[] | undefined;
  modified: boolean;
  fireWatch: boolean;
  watchExact: boolean;
}

export interface Transaction {
  id: number;
  accessed: Map<string, Accessed>;
  entryDelta: Map<number, number>;
  nodeCreated: boolean;
  failed: boolean;
}

/** XS_TRANSACTION_START: the next free id of the connection. */
export function transactionStart(
  core: ServerCore,
  conn: XenstoreConnection,
  tx: Transaction | undefined,
): string {
  if (tx) throw new XsFail('EBUSY');
  if (!conn.privileged) {
    const e = transactionQuotaErrno(core.quotas, conn.transactions.size);
    if (e) throw new XsFail(e);
  }
  let id = conn.nextTransactionId;
  while (id === 0 || conn.transactions.has(id)) id = (id + 1) >>> 0;
  conn.nextTransactionId = (id + 1) >>> 0;
  conn.transactions.set(id, {
    id,
    accessed: new Map(),
    entryDelta: new Map(),
    nodeCreated: false,
    failed: false,
  });
  return `${id}\0`;
}

/** XS_TRANSACTION_END: the transaction is forgotten once the argument is valid, committed on T. */
export function transactionEnd(
  core: ServerCore,
  conn: XenstoreConnection,
  tx: Transaction | undefined,
  payload: Buffer,
): string {
  const arg = oneArg(payload);
  if (arg !== 'T' && arg !== 'F') throw new XsFail('EINVAL');
  if (!tx) throw new XsFail('ENOENT');
  conn.transactions.delete(tx.id);
  if (arg === 'T') commit(core, conn, tx);
  return 'OK\0';
}

function commit(core: ServerCore, conn: XenstoreConnection, tx: Transaction): void {
  if (tx.failed) throw new XsFail('ENOMEM');
  const guest = !conn.privileged;
  for (const [domid, delta] of tx.entryDelta) {
    let cnt = (core.entries.get(domid) ?? 0) + delta;
    if (cnt < 0) cnt = 0;
    if (
      tx.nodeCreated &&
      guest &&
      core.unprivileged(domid) &&
      commitEntriesTooMany(core.quotas, cnt)
    ) {
      throw new XsFail('ENOSPC');
    }
  }
  for (const [path, a] of tx.accessed) {
    const main = core.store.get(path);
    if ((main ? main.generation : NO_GENERATION) !== a.generation) throw new XsFail('EAGAIN');
  }
  for (const [path, a] of tx.accessed) {
    if (!a.modified) continue;
    if (a.node) core.putMain(path, cloneNode(a.node));
    else core.store.delete(path);
    if (a.fireWatch) fireWatches(core, conn, path, undefined, a.watchExact, a.oldPerms);
  }
  for (const [domid, delta] of tx.entryDelta) {
    core.entries.set(domid, Math.max(0, (core.entries.get(domid) ?? 0) + delta));
  }
}
