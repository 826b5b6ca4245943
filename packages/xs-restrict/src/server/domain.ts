/** Domains of the embedded xenstored (xenstored_domain.c): introduction, release, targets. */
import { childPath } from '../rules/paths.js';
import type { XsPerm } from '../wire/perms.js';
import { oneArg, splitStrings } from '../wire/strings.js';
import type { XenstoreConnection } from './connection.js';
import type { ServerCore } from './core.js';
import { XsFail } from './node.js';
import { fireWatches } from './watch.js';

/** DOMID_SELF: always reported as introduced. */
const DOMID_SELF = 0x7ff0;

/** C atoi: leading blanks, optional sign, digits; anything else stops it. */
export function atoi(s: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)/.exec(s);
  if (!m || m[1] === undefined) return 0;
  return Number(BigInt.asIntN(32, BigInt(m[1])));
}

/** A domid argument as xenstored reads it: atoi, stored in an unsigned int. */
export function domidArg(s: string): number {
  return atoi(s) >>> 0;
}

/** Introduce a domain as XS_INTRODUCE does (fires `@introduceDomain` the first time). */
export function introduce(core: ServerCore, domid: number): void {
  const d = core.domains.get(domid);
  if (d?.introduced) return;
  core.domains.set(domid, { introduced: true, target: undefined });
  fireWatches(core, undefined, '@introduceDomain', undefined, true, undefined);
}

/** domain_tree_remove and friends: a released domain's nodes go away, and it leaves the special nodes' ACLs. */
function release(core: ServerCore, domid: number): void {
  const owned: string[] = [];
  const visit = (path: string): void => {
    const n = core.store.get(path);
    if (!n) return;
    if ((n.perms[0] as XsPerm).domid === domid) {
      owned.push(path);
      return;
    }
    for (const c of n.children) visit(childPath(path, c));
  };
  visit('/');
  for (const path of owned) if (core.store.has(path)) core.rmNode(undefined, undefined, path);
  for (const [k, perms] of core.specialPerms) {
    const next = perms.map((x) => ({ ...x }));
    if ((next[0] as XsPerm).domid === domid) (next[0] as XsPerm).domid = core.privDomid;
    core.specialPerms.set(k, [
      next[0] as XsPerm,
      ...next.slice(1).filter((x) => x.domid !== domid),
    ]);
  }
  core.domains.delete(domid);
  core.entries.delete(domid);
  for (const c of [...core.connections]) if (c.domid === domid) c.close();
  fireWatches(core, undefined, '@releaseDomain', undefined, true, undefined);
}

export function getDomainPath(_core: ServerCore, _conn: XenstoreConnection, p: Buffer): string {
  const arg = oneArg(p);
  if (arg === undefined) throw new XsFail('EINVAL');
  return `/local/domain/${domidArg(arg)}\0`;
}

export function isDomainIntroduced(core: ServerCore, _conn: XenstoreConnection, p: Buffer): string {
  const arg = oneArg(p);
  if (arg === undefined) throw new XsFail('EINVAL');
  const domid = domidArg(arg);
  const yes = domid === DOMID_SELF || domid === 0 || core.domains.get(domid)?.introduced === true;
  return yes ? 'T\0' : 'F\0';
}

export function doIntroduce(core: ServerCore, _conn: XenstoreConnection, p: Buffer): string {
  const strings = splitStrings(p);
  if (strings.length < 3) throw new XsFail('EINVAL');
  const domid = domidArg(strings[0] as string);
  const port = atoi(strings[2] as string);
  if (port <= 0) throw new XsFail('EINVAL');
  if (core.domains.get(domid)?.introduced) {
    // domain_conn_reset: a re-introduced domain starts with no watches or transactions.
    for (const c of core.connections) if (c.domid === domid) c.dropWatchesAndTransactions();
  } else introduce(core, domid);
  return 'OK\0';
}

/** XS_RELEASE and XS_RESUME: the same checks; only RELEASE acts. */
export function releaseOrResume(
  core: ServerCore,
  _conn: XenstoreConnection,
  p: Buffer,
  isRelease: boolean,
): string {
  const arg = oneArg(p);
  if (arg === undefined) throw new XsFail('EINVAL');
  const domid = domidArg(arg);
  if (domid === 0) throw new XsFail('EINVAL');
  if (!core.domains.get(domid)?.introduced) throw new XsFail('ENOENT');
  if (isRelease) release(core, domid);
  return 'OK\0';
}

export function setTarget(core: ServerCore, _conn: XenstoreConnection, p: Buffer): string {
  const strings = splitStrings(p);
  if (strings.length < 2) throw new XsFail('EINVAL');
  const domid = domidArg(strings[0] as string);
  const target = domidArg(strings[1] as string);
  const d = core.domains.get(domid);
  if (!d?.introduced) throw new XsFail('ENOENT');
  if (!core.domains.get(target)?.introduced) throw new XsFail('ENOENT');
  d.target = target;
  return 'OK\0';
}
