/** A node of the embedded xenstored's tree, and the errno a request fails with. */
import { nodeRecordSize } from '../rules/quotas.js';
import type { XsErrno } from '../wire/constants.js';
import type { XsPerm } from '../wire/perms.js';

export interface XsNode {
  value: Buffer;
  children: string[];
  perms: XsPerm[];
  generation: number;
}

/** The generation of a node a transaction saw as missing. */
export const NO_GENERATION = -1;

/** The size xenstored charges a node against `quota_max_entry_size`. */
export function entrySize(n: XsNode): number {
  let childlen = 0;
  for (const c of n.children) childlen += Buffer.byteLength(c) + 1;
  return nodeRecordSize(n.perms.length, n.value.length, childlen);
}

export function clonePerms(perms: readonly XsPerm[]): XsPerm[] {
  return perms.map((p) => ({ domid: p.domid, perm: p.perm }));
}

export function cloneNode(n: XsNode): XsNode {
  return {
    value: n.value,
    children: [...n.children],
    perms: clonePerms(n.perms),
    generation: n.generation,
  };
}

/**
 * A request's errno, thrown through the handlers and turned into XS_ERROR.
 * Not an Error subclass: ENOENT is the normal path of every node creation,
 * and capturing a stack trace for it costs more than the whole request.
 */
export class XsFail {
  constructor(readonly errno: XsErrno) {}
}
