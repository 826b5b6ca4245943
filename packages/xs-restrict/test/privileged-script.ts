/**
 * The differential script of the privileged upstream mode: a tree with every
 * kind of permission a device model meets, then requests of domain N
 * (reads, creates with implicit ancestors, rm, set_perms, transactions,
 * quotas, watches) interleaved with toolstack (dom0) changes whose watch
 * events N may or may not see. Run through the proxy and on a direct
 * domain-N connection, the transcripts must be identical.
 */
import type { AllowRule } from '../src/proxy/allowlist.js';
import * as W from '../src/wire/index.js';
import type { RawConn } from './helpers/raw.js';
import { show, z } from './helpers/raw.js';

export const A = '/local/domain/0/dmtest';

export interface Step {
  /** `n`: a request of domain N; `dom0`: a toolstack request on the dom0 connection (not recorded). */
  who: 'n' | 'dom0';
  type: number;
  payload: string | Buffer;
  tx?: number;
}

const n = (type: number, payload: string | Buffer, tx = 0): Step => ({
  who: 'n',
  type,
  payload,
  tx,
});
const d = (type: number, payload: string): Step => ({ who: 'dom0', type, payload });

/** The toolstack's setup, as dom0 requests. */
export function setupSteps(domid: number): Step[] {
  const perms = (path: string, ...p: string[]): Step => d(W.XS_SET_PERMS, z(path, ...p));
  return [
    d(W.XS_MKDIR, z(`/local/domain/${domid}`)),
    perms(`/local/domain/${domid}`, `n${domid}`),
    d(W.XS_WRITE, `${A}\0top`),
    perms(A, 'n0', `b${domid}`),
    d(W.XS_WRITE, `${A}/ro\0ro-value`),
    perms(`${A}/ro`, 'n0', `r${domid}`),
    d(W.XS_WRITE, `${A}/hidden\0secret`),
    perms(`${A}/hidden`, 'n0'),
    d(W.XS_WRITE, `${A}/hidden/child\0visible`),
    perms(`${A}/hidden/child`, 'n0', `r${domid}`),
    d(W.XS_WRITE, `${A}/owned\0mine`),
    perms(`${A}/owned`, `n${domid}`),
    d(W.XS_WRITE, `${A}/wo\0write-only`),
    perms(`${A}/wo`, 'n0', `w${domid}`),
    d(W.XS_WRITE, `${A}/shared\0everyone`),
    perms(`${A}/shared`, 'r0'),
    d(W.XS_WRITE, `${A}/denied\0no`),
    perms(`${A}/denied`, 'r0', `n${domid}`),
  ];
}

/** Every path the script names, so a test allowlist can allow exactly those. */
function pathsOf(steps: readonly Step[]): string[] {
  const out = new Set<string>();
  for (const s of steps) {
    if (s.who !== 'n') continue;
    const p = Buffer.from(s.payload);
    const nul = p.indexOf(0);
    if (nul > 0) out.add(p.subarray(0, nul).toString('utf8'));
  }
  return [...out];
}

export function allowAll(steps: readonly Step[]): AllowRule[] {
  return pathsOf(steps).map((pattern, i) => ({
    entryId: `t${i}`,
    pattern,
    ops: ['read', 'write', 'mkdir', 'rm', 'watch', 'setPerms'],
  }));
}

/** Domain N's part, with toolstack changes in between. */
export function privilegedScript(domid: number): Step[] {
  const reads = (p: string): Step[] => [
    n(W.XS_READ, z(p)),
    n(W.XS_DIRECTORY, z(p)),
    n(W.XS_GET_PERMS, z(p)),
    n(W.XS_DIRECTORY_PART, z(p, '0')),
  ];
  const big = (len: number): string => 'x'.repeat(len);
  return [
    // get_node and errno_from_parents
    ...[
      A,
      `${A}/ro`,
      `${A}/hidden`,
      `${A}/hidden/child`,
      `${A}/hidden/missing`,
      `${A}/missing`,
      `${A}/ro/missing`,
      `${A}/wo`,
      `${A}/shared`,
      `${A}/denied`,
      `${A}/owned`,
      '/local/domain/0/nothing/here',
      '/tool/xenstored',
      `${A}/bad//path`,
    ].flatMap(reads),
    n(W.XS_READ, `${A}\0extra\0`),
    n(W.XS_DIRECTORY_PART, z(`${A}/hidden`, '0', 'extra')),
    n(W.XS_DIRECTORY_PART, z(`${A}/ro`, 'x')),
    n(W.XS_DIRECTORY_PART, z(`${A}/ro`)),
    n(W.XS_WATCH, z(A, 'wa')),
    n(W.XS_WATCH, z(`${A}/hidden`, 'wh')),
    n(W.XS_WATCH, z(`${A}/ro`, 'wr')),
    n(W.XS_WATCH, z(A, 'wa')),
    // creates: owner N, the rest inherited; intermediate nodes too
    n(W.XS_WRITE, `${A}/new\0x`),
    n(W.XS_GET_PERMS, z(`${A}/new`)),
    n(W.XS_WRITE, `${A}/deep/er/node\0y`),
    n(W.XS_GET_PERMS, z(`${A}/deep`)),
    n(W.XS_GET_PERMS, z(`${A}/deep/er`)),
    n(W.XS_GET_PERMS, z(`${A}/deep/er/node`)),
    n(W.XS_DIRECTORY, z(`${A}/deep/er`)),
    n(W.XS_MKDIR, z(`${A}/mk/dir`)),
    n(W.XS_GET_PERMS, z(`${A}/mk/dir`)),
    n(W.XS_MKDIR, z(`${A}/mk/dir`)),
    n(W.XS_MKDIR, z(`${A}/ro/sub`)),
    n(W.XS_WRITE, `${A}/ro\0z`),
    n(W.XS_WRITE, `${A}/wo\0w`),
    n(W.XS_WRITE, `${A}/shared/sub\0s`),
    n(W.XS_WRITE, `${A}/owned/x/y\0o`),
    n(W.XS_GET_PERMS, z(`${A}/owned/x`)),
    n(W.XS_WRITE, `${A}/hidden/x\0h`),
    n(W.XS_WRITE, `${A}/hidden/child/x\0h`),
    n(W.XS_WRITE, `${A}/denied\0d`),
    // node size and path quotas
    n(W.XS_WRITE, `${A}/big\0${big(2000)}`),
    n(W.XS_WRITE, `${A}/big\0${big(2008)}`),
    n(W.XS_WRITE, `${A}/big2\0${big(2008)}`),
    n(W.XS_WRITE, `${A}/big3\0${big(2007)}`),
    n(W.XS_WRITE, `${A}/${'p'.repeat(2040)}\0long`),
    n(W.XS_WRITE, `${A}/${'q'.repeat(2100)}\0long`),
    // set_perms: only the owner, the owner stays, at most 5 entries
    n(W.XS_SET_PERMS, z(`${A}/new`, `n${domid}`, 'r0')),
    n(W.XS_GET_PERMS, z(`${A}/new`)),
    n(W.XS_SET_PERMS, z(`${A}/new`, 'n0')),
    n(W.XS_SET_PERMS, z(`${A}/new`, `n${domid}`, 'r1', 'r2', 'r3', 'r4', 'r6')),
    n(W.XS_SET_PERMS, z(`${A}/new`, `n${domid}`, 'r1', 'r2', 'r3', 'r4')),
    n(W.XS_SET_PERMS, z(`${A}/new`, 'x5')),
    n(W.XS_SET_PERMS, z(`${A}/new`)),
    n(W.XS_SET_PERMS, z(`${A}/ro`, `n${domid}`)),
    n(W.XS_SET_PERMS, z(`${A}/missing`, `n${domid}`)),
    n(W.XS_SET_PERMS, z(`${A}/hidden/child`, `n${domid}`)),
    // Not SET_PERMS of @releaseDomain / @nonsense: C xenstored 4.17 answers them with a stale errno
    // (do_set_perms returns errno, which set_perms_special does not set); see README.
    n(W.XS_SET_PERMS, z(`${A}/big`, `n${domid}`, 'r1')),
    n(W.XS_SET_PERMS, z(`${A}/big3`, `n${domid}`, 'r1')),
    // toolstack changes: events on nodes N can and cannot read, lost access, deletions
    n(W.XS_WATCH, z(`${A}/hidden/child`, 'wc')),
    n(W.XS_WATCH, z(`${A}/hidden/ev`, 'we')),
    d(W.XS_WRITE, `${A}/hidden/ev\0e`),
    d(W.XS_WRITE, `${A}/ro/ev\0e`),
    d(W.XS_WRITE, `${A}/hidden/child\0changed`),
    d(W.XS_SET_PERMS, z(`${A}/ro`, 'n0')),
    d(W.XS_SET_PERMS, z(`${A}/ro`, 'n0')),
    d(W.XS_RM, z(`${A}/hidden`)),
    d(W.XS_WRITE, `/local/domain/0/elsewhere\0e`),
    d(W.XS_RM, z(`${A}/ro/ev`)),
    n(W.XS_READ, z(`${A}/hidden/child`)),
    // rm: subtree, missing node with and without a parent, no permission
    n(W.XS_RM, z(`${A}/deep`)),
    n(W.XS_RM, z(`${A}/missing`)),
    n(W.XS_RM, z(`${A}/missing/deeper`)),
    n(W.XS_RM, z(`${A}/ro`)),
    n(W.XS_RM, z(`${A}/shared`)),
    n(W.XS_RM, z('/')),
    // transactions: ids, reads of perms inside, create inside, commit, abort, errors
    n(W.XS_TRANSACTION_START, z('')),
    n(W.XS_WRITE, `${A}/txn/a\0one`, 1),
    n(W.XS_GET_PERMS, z(`${A}/txn/a`), 1),
    n(W.XS_GET_PERMS, z(`${A}/txn`), 1),
    n(W.XS_READ, z(`${A}/txn/a`)),
    n(W.XS_READ, z(`${A}/txn/a`), 1),
    n(W.XS_SET_PERMS, z(`${A}/txn/a`, `n${domid}`), 1),
    n(W.XS_GET_PERMS, z(`${A}/txn/a`), 1),
    n(W.XS_TRANSACTION_START, z(''), 1),
    n(W.XS_TRANSACTION_END, z('X'), 1),
    n(W.XS_TRANSACTION_END, z('T'), 1),
    n(W.XS_GET_PERMS, z(`${A}/txn/a`)),
    n(W.XS_GET_PERMS, z(`${A}/txn`)),
    n(W.XS_TRANSACTION_START, z('')),
    n(W.XS_WRITE, `${A}/new\0aborted`, 2),
    n(W.XS_RM, z(`${A}/owned`), 2),
    n(W.XS_TRANSACTION_END, z('F'), 2),
    n(W.XS_READ, z(`${A}/new`)),
    n(W.XS_READ, z(`${A}/new`), 2),
    n(W.XS_TRANSACTION_END, z('T'), 9),
    n(W.XS_TRANSACTION_START, z('')),
    n(W.XS_TRANSACTION_START, z('')),
    n(W.XS_WRITE, `${A}/c1\0a`, 3),
    n(W.XS_WRITE, `${A}/c1\0b`, 4),
    n(W.XS_TRANSACTION_END, z('T'), 3),
    n(W.XS_TRANSACTION_END, z('T'), 4),
    n(W.XS_READ, z(`${A}/c1`)),
    // special watches: the first event always, then nothing (dom0 owns @releaseDomain's perms)
    n(W.XS_WATCH, z('@releaseDomain', 'rel')),
    n(W.XS_WATCH, z('@introduceDomain', 'intro')),
    d(W.XS_INTRODUCE, z('6', '0', '1')),
    d(W.XS_RELEASE, z('6')),
    n(W.XS_UNWATCH, z('@releaseDomain', 'rel')),
    n(W.XS_UNWATCH, z(`${A}/ro`, 'wr')),
    n(W.XS_UNWATCH, z(`${A}/ro`, 'wr')),
    n(W.XS_GET_DOMAIN_PATH, z(String(domid))),
    n(W.XS_RESET_WATCHES, z('')),
    d(W.XS_WRITE, `${A}/after-reset\0r`),
    n(W.XS_READ, z(`${A}/after-reset`)),
  ];
}

/** Run `steps`, recording N's replies and events; a dom0 step is followed by a barrier on N. */
export async function runPrivScript(
  conn: RawConn,
  dom0: RawConn,
  steps: readonly Step[],
  strictDom0 = true,
): Promise<string[]> {
  const out: string[] = [];
  let reqId = 100;
  const norm = (m: W.XsMessage): string => {
    if (m.type === W.XS_DIRECTORY_PART) {
      const i = m.payload.indexOf(0);
      return show({ ...m, payload: Buffer.concat([Buffer.from('<gen>'), m.payload.subarray(i)]) });
    }
    return show(m);
  };
  for (const s of steps) {
    const id = reqId++;
    if (s.who === 'dom0') {
      dom0.send(s.type, id, 0, s.payload);
      const r = await dom0.until((x) => x.reqId === id && x.type !== W.XS_WATCH_EVENT, 'dom0');
      const last = r[r.length - 1] as W.XsMessage;
      if (strictDom0 && last.type === W.XS_ERROR)
        throw new Error(`dom0 step failed: ${show(last)}`);
      conn.send(W.XS_GET_DOMAIN_PATH, id, 0, z('0'));
      for (const m of await conn.until((x) => x.reqId === id, 'barrier'))
        out.push(`[${id}] ${norm(m)}`);
      continue;
    }
    conn.send(s.type, id, s.tx ?? 0, s.payload);
    for (const m of await conn.until(
      (x) => x.reqId === id && x.type !== W.XS_WATCH_EVENT,
      `reply ${id}`,
    )) {
      out.push(`[${id}] ${norm(m)}`);
    }
  }
  conn.send(W.XS_GET_DOMAIN_PATH, 99, 0, z('0'));
  for (const m of await conn.until((x) => x.reqId === 99, 'barrier')) out.push(`end ${norm(m)}`);
  return out;
}

/** Run setup steps on a dom0 connection. */
export async function runSetup(dom0: RawConn, steps: readonly Step[]): Promise<void> {
  let id = 1;
  for (const s of steps) {
    dom0.send(s.type, id, 0, s.payload);
    const r = await dom0.until((x) => x.reqId === id && x.type !== W.XS_WATCH_EVENT, 'setup');
    const last = r[r.length - 1] as W.XsMessage;
    if (last.type === W.XS_ERROR) throw new Error(`setup step failed: ${show(last)}`);
    id++;
  }
}
