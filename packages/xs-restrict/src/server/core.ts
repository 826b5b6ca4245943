/**
 * The embedded xenstored's state and node access (xenstored_core.c): the
 * tree, per-domain node counts, reads and writes through a transaction's
 * view, get_node, construct_node / create_node and rm_node.
 */
import { baseName, childPath, nodePathProblem, parentPath } from '../rules/paths.js';
import { fromParents, nodeErrno, type Requester } from '../rules/perms.js';
import {
  createQuotaFailure,
  entryTooBig,
  transactionNodesFull,
  type XenstoreQuotas,
} from '../rules/quotas.js';
import type { XsPerm } from '../wire/perms.js';
import type { XenstoreConnection } from './connection.js';
import { cloneNode, clonePerms, entrySize, NO_GENERATION, XsFail, type XsNode } from './node.js';
import type { Accessed, Transaction } from './transaction.js';
import { fireWatches } from './watch.js';

export interface DomainState {
  introduced: boolean;
  target: number | undefined;
}

export class ServerCore {
  readonly store = new Map<string, XsNode>();
  /** Nodes owned per domid (`domain->nbentry`). */
  readonly entries = new Map<number, number>();
  generation = 0;
  readonly connections = new Set<XenstoreConnection>();
  readonly domains = new Map<number, DomainState>();
  readonly specialPerms = new Map<string, XsPerm[]>([
    ['@introduceDomain', [{ domid: 0, perm: 'n' }]],
    ['@releaseDomain', [{ domid: 0, perm: 'n' }]],
  ]);
  /** Watches of all connections: with none, a change fires nothing and costs no scan. */
  watchCount = 0;
  /** C's quotas CONTROL `quota` reports that this daemon does not enforce, at C's defaults. */
  readonly reportedQuotas = {
    outstanding: 20,
    memory: 2621440,
    memorySoft: 2097152,
    /** CONTROL `logfile` was given (C's `memreport` needs one). */
    logfile: false,
  };

  constructor(
    readonly quotas: XenstoreQuotas,
    readonly privDomid: number,
  ) {
    // setup_structure: "/", "/tool", "/tool/xenstored", owned by dom0 with no access for others.
    const dir = (children: string[]): XsNode => ({
      value: Buffer.alloc(0),
      children,
      perms: [{ domid: 0, perm: 'n' }],
      generation: 0,
    });
    this.putMain('/', dir(['tool']));
    this.putMain('/tool', dir(['xenstored']));
    this.putMain('/tool/xenstored', dir([]));
    this.entries.set(0, 3);
  }

  unprivileged(domid: number): boolean {
    return domid !== 0 && domid !== this.privDomid;
  }

  putMain(path: string, n: XsNode): void {
    n.generation = ++this.generation;
    this.store.set(path, n);
  }

  validName(path: string): boolean {
    return nodePathProblem(path, this.quotas.pathLength) === undefined;
  }

  /** A node as the request sees it: the tree's, or the transaction's copy (taken on first access). */
  read(conn: Requester | undefined, tx: Transaction | undefined, path: string): XsNode | null {
    if (!tx) return this.store.get(path) ?? null;
    const a = tx.accessed.get(path);
    if (a) return a.node;
    if (
      conn !== undefined &&
      !conn.privileged &&
      transactionNodesFull(this.quotas, tx.accessed.size)
    ) {
      tx.failed = true;
      throw new XsFail('ENOSPC');
    }
    const main = this.store.get(path);
    const copy: Accessed = {
      node: main ? cloneNode(main) : null,
      generation: main ? main.generation : NO_GENERATION,
      oldPerms: main ? clonePerms(main.perms) : undefined,
      modified: false,
      fireWatch: false,
      watchExact: false,
    };
    tx.accessed.set(path, copy);
    return copy.node;
  }

  write(
    conn: Requester | undefined,
    tx: Transaction | undefined,
    path: string,
    n: XsNode,
    quotaCheck: boolean,
  ): void {
    if (quotaCheck && conn && !conn.privileged && entryTooBig(this.quotas, entrySize(n))) {
      throw new XsFail('ENOSPC');
    }
    if (!tx) {
      this.putMain(path, n);
      return;
    }
    this.read(conn, tx, path);
    const a = tx.accessed.get(path) as Accessed;
    n.generation = ++this.generation;
    a.node = n;
    a.modified = true;
  }

  /**
   * write_node for a new value outside a transaction: the tree's node is
   * changed in place (a transaction works on copies it took at first access),
   * with a new generation, after the same quota check as `write`.
   */
  setValue(conn: Requester, path: string, n: XsNode, value: Buffer): void {
    if (!conn.privileged && entryTooBig(this.quotas, entrySize(n) - n.value.length + value.length))
      throw new XsFail('ENOSPC');
    n.value = value;
    this.putMain(path, n);
  }

  private remove(tx: Transaction | undefined, path: string): void {
    if (!tx) {
      this.store.delete(path);
      return;
    }
    const a = tx.accessed.get(path);
    if (a) {
      a.node = null;
      a.modified = true;
    }
  }

  entryAdd(tx: Transaction | undefined, domid: number, delta: number): void {
    const m = tx ? tx.entryDelta : this.entries;
    m.set(domid, (m.get(domid) ?? 0) + delta);
  }

  /** get_node: the node if it exists and `perm` is granted, else ENOENT/EACCES/EINVAL as xenstored decides. */
  getNode(
    conn: XenstoreConnection,
    tx: Transaction | undefined,
    name: string | undefined,
    perm: number,
  ): XsNode {
    if (name === undefined || !this.validName(name)) throw new XsFail('EINVAL');
    const n = this.read(conn, tx, name);
    const errnum = nodeErrno(conn, n?.perms, perm);
    if (errnum === undefined) return n as XsNode;
    const walk = fromParents(conn, name, errnum, perm);
    let step = walk.next();
    while (!step.done) step = walk.next(this.read(conn, tx, step.value)?.perms);
    throw new XsFail(step.value.errno);
  }

  /** construct_node + create_node: create `name` and any missing ancestors, inheriting the nearest parent's permissions. */
  createNode(
    conn: XenstoreConnection,
    tx: Transaction | undefined,
    name: string,
    data: Buffer,
  ): XsNode {
    const names: string[] = [];
    let cur = name;
    let parent: XsNode | null = null;
    while (!parent) {
      names.push(cur);
      cur = parentPath(cur);
      parent = this.read(conn, tx, cur);
      if (!parent && cur === '/') throw new XsFail('ENOENT');
    }
    const guest = !conn.privileged;
    if (tx) tx.nodeCreated = true;
    const parentName = cur;
    const updatedParent = cloneNode(parent);
    const top = names[names.length - 1] as string;
    updatedParent.children.push(baseName(top));
    let inherit = parent.perms;
    const created: [string, XsNode][] = [];
    for (let i = names.length - 1; i >= 0; i--) {
      const path = names[i] as string;
      const perms = clonePerms(inherit);
      if (guest) (perms[0] as XsPerm).domid = conn.domid;
      const child = names[i - 1];
      const n: XsNode = {
        value: i === 0 ? data : Buffer.alloc(0),
        children: child === undefined ? [] : [baseName(child)],
        perms,
        generation: 0,
      };
      created.push([path, n]);
      inherit = perms;
    }
    // Replay create_node's checks before storing anything (new nodes bottom up, then the parent).
    if (guest) {
      const bottomUp = function* (): Generator<number> {
        for (let k = created.length - 1; k >= 0; k--)
          yield entrySize((created[k] as [string, XsNode])[1]);
      };
      const entries = this.entries.get(conn.domid) ?? 0;
      const written = createQuotaFailure(
        this.quotas,
        entries,
        tx !== undefined,
        bottomUp(),
        entrySize(updatedParent),
      );
      if (written !== undefined) {
        if (tx && written > 0) tx.failed = true;
        throw new XsFail('ENOSPC');
      }
    }
    for (let i = created.length - 1; i >= 0; i--) {
      const [path, n] = created[i] as [string, XsNode];
      this.write(conn, tx, path, n, false);
      this.entryAdd(tx, (n.perms[0] as XsPerm).domid, 1);
    }
    this.write(conn, tx, parentName, updatedParent, false);
    return (created[created.length - 1] as [string, XsNode])[1];
  }

  /** rm_node: delete `name` and its subtree, firing watches child-first (exact for descendants). */
  rmNode(conn: XenstoreConnection | undefined, tx: Transaction | undefined, name: string): void {
    const parentName = parentPath(name);
    const parent = this.read(conn, tx, parentName);
    if (!parent) throw new XsFail('EINVAL');
    const walk = (path: string): void => {
      const n = this.read(conn, tx, path);
      if (!n) return;
      for (const c of [...n.children]) walk(childPath(path, c));
      this.remove(tx, path);
      fireWatches(this, conn, path, n, path !== name, undefined, tx);
      this.entryAdd(tx, (n.perms[0] as XsPerm).domid, -1);
    };
    walk(name);
    const updated = cloneNode(parent);
    const gone = baseName(name);
    updated.children = updated.children.filter((c) => c !== gone);
    this.write(conn, tx, parentName, updated, false);
  }
}
