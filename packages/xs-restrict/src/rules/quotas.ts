/**
 * Per-domain limits and the checks against them, as C xenstored 4.17 makes them
 * (xenstored_core.c create_node / write_node / do_set_perms, xenstored_domain.c,
 * xenstored_transaction.c, xenstored_watch.c do_watch). Only unprivileged
 * domains are checked; the callers know who is privileged.
 */
import { XENSTORE_REL_PATH_MAX, type XsErrno } from '../wire/constants.js';
import { parsePerm, type XsPerm } from '../wire/perms.js';

/** Per-domain limits; the defaults are C xenstored 4.17's (xenstored_core.c). */
export interface XenstoreQuotas {
  /** Nodes a domain may own (`quota_nb_entry_per_domain`). */
  nodesPerDomain: number;
  /** Watches per domain (`quota_nb_watch_per_domain`; the check is `count > limit`). */
  watchesPerDomain: number;
  /** Bytes of a node record: 24-byte header, 8 per permission, data, child names (`quota_max_entry_size`). */
  entrySize: number;
  /** Open transactions per connection (`quota_max_transaction`; the check is `count > limit`). */
  transactionsPerConnection: number;
  /** Permission entries per node set by a guest (`quota_nb_perms_per_node`). */
  permsPerNode: number;
  /** Nodes one transaction of a guest may touch (`quota_trans_nodes`). */
  nodesPerTransaction: number;
  /** Path bytes after `/local/domain/N/` (`quota_max_path_len`). */
  pathLength: number;
}

export const DEFAULT_QUOTAS: Readonly<XenstoreQuotas> = {
  nodesPerDomain: 1000,
  watchesPerDomain: 128,
  entrySize: 2048,
  transactionsPerConnection: 10,
  permsPerNode: 5,
  nodesPerTransaction: 1024,
  pathLength: XENSTORE_REL_PATH_MAX,
};

/**
 * The bytes xenstored charges a node record against `quota_max_entry_size`
 * (struct xs_tdb_record_hdr is 24 bytes, each xs_permissions 8, then the
 * data and the nul-terminated child names).
 */
export function nodeRecordSize(nperms: number, datalen: number, childlen: number): number {
  return 24 + 8 * nperms + datalen + childlen;
}

/** write_node: a guest's node record must stay below `quota_max_entry_size`. */
export function entryTooBig(q: XenstoreQuotas, recordSize: number): boolean {
  return recordSize >= q.entrySize;
}

/**
 * create_node's checks for a guest, in its order: the new nodes bottom up
 * (the domain's node count, then the record size), then the existing parent
 * that gains a child. `entries` is the domain's count now; outside a
 * transaction each new node counts at once, inside one only at the commit.
 * Returns undefined when all pass, else how many new nodes were written
 * before the failing check: C xenstored fails the transaction when that is
 * not zero (destroy_node -> fail_transaction), so its commit answers ENOMEM.
 */
export function createQuotaFailure(
  q: XenstoreQuotas,
  entries: number,
  inTransaction: boolean,
  newRecordSizes: Iterable<number>,
  parentRecordSize: number,
): number | undefined {
  let count = entries;
  let written = 0;
  for (const size of newRecordSizes) {
    if (count >= q.nodesPerDomain) return written;
    if (entryTooBig(q, size)) return written;
    written++;
    if (!inTransaction) count++;
  }
  return entryTooBig(q, parentRecordSize) ? written : undefined;
}

/** do_transaction_end: a guest's commit that created nodes must leave it below its node quota. */
export function commitEntriesTooMany(q: XenstoreQuotas, entriesAfter: number): boolean {
  return entriesAfter >= q.nodesPerDomain;
}

/** do_watch: E2BIG once the domain already holds more than the limit (`count > limit`). */
export function watchQuotaErrno(q: XenstoreQuotas, domainWatches: number): XsErrno | undefined {
  return domainWatches > q.watchesPerDomain ? 'E2BIG' : undefined;
}

/** do_transaction_start: ENOSPC once the connection already holds more than the limit. */
export function transactionQuotaErrno(q: XenstoreQuotas, open: number): XsErrno | undefined {
  return open > q.transactionsPerConnection ? 'ENOSPC' : undefined;
}

/** A transaction of a guest may touch at most `quota_trans_nodes` nodes. */
export function transactionNodesFull(q: XenstoreQuotas, accessed: number): boolean {
  return accessed >= q.nodesPerTransaction;
}

/**
 * do_set_perms' argument checks: a path and at least the owner entry
 * (EINVAL), at most `quota_nb_perms_per_node` entries from a guest (ENOSPC),
 * each one parseable (EINVAL). Returns the path and perms, or the errno.
 */
export function parseSetPerms(
  strings: readonly string[],
  nstrings: number,
  q: XenstoreQuotas,
  guest: boolean,
): { path: string; perms: XsPerm[] } | XsErrno {
  if (nstrings < 2) return 'EINVAL';
  const nperms = nstrings - 1;
  if (guest && nperms > q.permsPerNode) return 'ENOSPC';
  const perms: XsPerm[] = [];
  try {
    for (let i = 1; i <= nperms; i++) perms.push(parsePerm(strings[i] ?? ''));
  } catch {
    return 'EINVAL';
  }
  return { path: strings[0] ?? '', perms };
}
