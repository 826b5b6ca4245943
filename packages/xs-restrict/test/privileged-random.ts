/** Random requests of domain 5 and toolstack changes over a small tree with random perms (for the property tests). */
import fc from 'fast-check';
import { RestrictingProxy } from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';
import * as W from '../src/wire/index.js';
import { RawConn, z } from './helpers/raw.js';
import { A, allowAll, runSetup, type Step } from './privileged-script.js';

const DOMID = 5;
export const PROPERTY_PATHS = [
  A,
  `${A}/a`,
  `${A}/a/b`,
  `${A}/a/b/c`,
  `${A}/d`,
  `${A}/d/e`,
  `${A}/f/g/h`,
];
const PERMS = [
  ['n0'],
  ['n0', 'r5'],
  ['n0', 'w5'],
  ['n0', 'b5'],
  ['n5'],
  ['r0'],
  ['b0', 'n5'],
  ['n5', 'r0'],
];

const path = fc.constantFrom(...PROPERTY_PATHS);
const perms = fc.constantFrom(...PERMS);
const value = fc.string({ maxLength: 6 }).map((s) => s.replace(/\0/g, ''));

const txOf = fc.constantFrom(0, 0, 0, 1, 2);
const nPlain: fc.Arbitrary<Step> = fc.oneof(
  fc
    .record({
      p: path,
      t: fc.constantFrom(W.XS_READ, W.XS_DIRECTORY, W.XS_GET_PERMS, W.XS_MKDIR, W.XS_RM),
    })
    .map(({ p, t }): Step => ({ who: 'n', type: t, payload: z(p) })),
  fc
    .record({ p: path, v: value })
    .map(({ p, v }): Step => ({ who: 'n', type: W.XS_WRITE, payload: `${p}\0${v}` })),
  fc
    .record({ p: path, q: perms })
    .map(({ p, q }): Step => ({ who: 'n', type: W.XS_SET_PERMS, payload: z(p, ...q) })),
);
/** Requests, some in a transaction (ids 1 and 2 are the first two a connection gets), and transaction ends. */
export const nStep: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ s: nPlain, tx: txOf }).map(({ s, tx }): Step => ({ ...s, tx })),
  },
  {
    weight: 1,
    arbitrary: fc.constant<Step>({ who: 'n', type: W.XS_TRANSACTION_START, payload: z('') }),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({ tx: fc.constantFrom(1, 2), c: fc.constantFrom('T', 'F') })
      .map(({ tx, c }): Step => ({ who: 'n', type: W.XS_TRANSACTION_END, payload: z(c), tx })),
  },
);
export const dStep: fc.Arbitrary<Step> = fc.oneof(
  fc
    .record({ p: path, v: value })
    .map(({ p, v }): Step => ({ who: 'dom0', type: W.XS_WRITE, payload: `${p}\0${v}` })),
  path.map((p): Step => ({ who: 'dom0', type: W.XS_RM, payload: z(p) })),
  fc
    .record({ p: path, q: perms })
    .map(({ p, q }): Step => ({ who: 'dom0', type: W.XS_SET_PERMS, payload: z(p, ...q) })),
);
export const initial = fc.array(fc.record({ p: path, q: perms }), { minLength: 1, maxLength: 6 });

export function setup(init: { p: string; q: string[] }[]): Step[] {
  const steps: Step[] = [
    { who: 'dom0', type: W.XS_WRITE, payload: `${A}\0` },
    { who: 'dom0', type: W.XS_SET_PERMS, payload: z(A, 'n0', `b${DOMID}`) },
  ];
  for (const { p, q } of init) {
    steps.push({ who: 'dom0', type: W.XS_WRITE, payload: `${p}\0init` });
    steps.push({ who: 'dom0', type: W.XS_SET_PERMS, payload: z(p, ...q) });
  }
  return steps;
}

/** Two watches of N (one above, one inside), then `ops`. */
export function withWatches(ops: readonly Step[]): Step[] {
  return [
    { who: 'n', type: W.XS_WATCH, payload: z(A, 'w') },
    { who: 'n', type: W.XS_WATCH, payload: z(`${A}/a/b`, 'x') },
    ...ops,
  ];
}

/** Every path the random steps may name, as steps (for `allowAll`). */
export const PATH_STEPS: Step[] = PROPERTY_PATHS.map(
  (x): Step => ({ who: 'n', type: 0, payload: z(x) }),
);

/**
 * Both sides of one property run: two embedded servers set up alike from `init` (a and b, each
 * with its dom0 connection), a direct domain-N socket on a, and a privileged proxy in process
 * over b allowing every path `steps` and PATH_STEPS name. What to close goes on `closers`.
 */
export async function directAndProxied(
  dir: string,
  run: string,
  init: { p: string; q: string[] }[],
  steps: readonly Step[],
  closers: (() => unknown)[],
): Promise<{ direct: string; proxied: string; a0: RawConn; b0: RawConn }> {
  const dom0s: RawConn[] = [];
  const servers: XenstoreServer[] = [];
  for (const name of ['a', 'b']) {
    const s = new XenstoreServer();
    await s.listen(`${dir}/${run}${name}.sock`);
    await s.listenDomain(DOMID, `${dir}/${run}${name}-d.sock`);
    closers.push(() => s.close());
    const dom0 = await RawConn.open(`${dir}/${run}${name}.sock`);
    closers.push(() => dom0.close());
    await runSetup(dom0, setup(init));
    dom0s.push(dom0);
    servers.push(s);
  }
  const p = new RestrictingProxy({
    domid: DOMID,
    upstream: { privileged: servers[1] as XenstoreServer },
    allowlist: allowAll([...steps, ...PATH_STEPS]),
    limits: { maxTransactions: 100 },
    log: () => undefined,
  });
  await p.listen(`${dir}/${run}p.sock`);
  closers.push(() => p.close());
  return {
    direct: `${dir}/${run}a-d.sock`,
    proxied: `${dir}/${run}p.sock`,
    a0: dom0s[0] as RawConn,
    b0: dom0s[1] as RawConn,
  };
}
