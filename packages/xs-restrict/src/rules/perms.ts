/**
 * Xenstore permission decisions shared by the embedded server and the
 * restricting proxy's privileged mode, as C xenstored 4.17 makes them
 * (xenstored_core.c perm_for_conn, xenstored_watch.c watch_permitted).
 */
import { permBits, XS_PERM_OWNER, XS_PERM_READ, XS_PERM_WRITE, type XsPerm } from '../wire/wire.js';

/** Every right: what owners and privileged connections get. */
export const XS_PERM_ALL = XS_PERM_READ | XS_PERM_WRITE | XS_PERM_OWNER;

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

/** get_parent: "/" for top-level nodes. */
export function parentPath(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

/**
 * The bytes xenstored charges a node record against `quota_max_entry_size`
 * (struct xs_tdb_record_hdr is 24 bytes, each xs_permissions 8, then the
 * data and the nul-terminated child names).
 */
export function nodeRecordSize(nperms: number, datalen: number, childlen: number): number {
  return 24 + 8 * nperms + datalen + childlen;
}
