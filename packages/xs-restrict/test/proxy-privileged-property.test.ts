/**
 * Property: random requests of domain 5 over a small tree with random
 * permissions, interleaved with random toolstack changes, get the same
 * replies and watch events through the privileged proxy mode (embedded
 * server, attached as dom0) as on a direct domain-5 connection.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RestrictingProxy } from '../src/proxy.js';
import { XenstoreServer } from '../src/server.js';
import * as W from '../src/wire.js';
import { RawConn } from './helpers/raw.js';
import { A, allowAll, runPrivScript, runSetup, type Step } from './privileged-script.js';

const DOMID = 5;
const z = (...s: string[]): string => s.map((x) => `${x}\0`).join('');
const PATHS = [A, `${A}/a`, `${A}/a/b`, `${A}/a/b/c`, `${A}/d`, `${A}/d/e`, `${A}/f/g/h`];
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

const path = fc.constantFrom(...PATHS);
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
const nStep: fc.Arbitrary<Step> = fc.oneof(
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
const dStep: fc.Arbitrary<Step> = fc.oneof(
  fc
    .record({ p: path, v: value })
    .map(({ p, v }): Step => ({ who: 'dom0', type: W.XS_WRITE, payload: `${p}\0${v}` })),
  path.map((p): Step => ({ who: 'dom0', type: W.XS_RM, payload: z(p) })),
  fc
    .record({ p: path, q: perms })
    .map(({ p, q }): Step => ({ who: 'dom0', type: W.XS_SET_PERMS, payload: z(p, ...q) })),
);
const initial = fc.array(fc.record({ p: path, q: perms }), { minLength: 1, maxLength: 6 });

function setup(init: { p: string; q: string[] }[]): Step[] {
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

describe('privileged upstream (property)', { timeout: 120000 }, () => {
  it('random requests and toolstack changes: the same transcript as attach(N)', async () => {
    const dir = mkdtempSync('/tmp/xspp-');
    let run = 0;
    try {
      await fc.assert(
        fc.asyncProperty(
          initial,
          fc.array(fc.oneof({ weight: 3, arbitrary: nStep }, { weight: 1, arbitrary: dStep }), {
            maxLength: 30,
          }),
          async (init, ops) => {
            run++;
            const closers: (() => unknown)[] = [];
            try {
              const conns: { dom0: RawConn; s: XenstoreServer }[] = [];
              for (const name of ['a', 'b']) {
                const s = new XenstoreServer();
                await s.listen(`${dir}/${run}${name}.sock`);
                await s.listenDomain(DOMID, `${dir}/${run}${name}-d.sock`);
                closers.push(() => s.close());
                const dom0 = await RawConn.open(`${dir}/${run}${name}.sock`);
                closers.push(() => dom0.close());
                await runSetup(dom0, setup(init));
                conns.push({ dom0, s });
              }
              const [a, b] = conns as [
                { dom0: RawConn; s: XenstoreServer },
                { dom0: RawConn; s: XenstoreServer },
              ];
              const script: Step[] = [
                { who: 'n', type: W.XS_WATCH, payload: z(A, 'w') },
                { who: 'n', type: W.XS_WATCH, payload: z(`${A}/a/b`, 'x') },
                ...ops,
              ];
              const direct = await RawConn.open(`${dir}/${run}a-d.sock`);
              closers.push(() => direct.close());
              const want = await runPrivScript(direct, a.dom0, script, false);
              const p = new RestrictingProxy({
                domid: DOMID,
                upstream: { privileged: b.s },
                allowlist: allowAll([
                  ...script,
                  ...PATHS.map((x): Step => ({ who: 'n', type: 0, payload: z(x) })),
                ]),
                log: () => undefined,
              });
              await p.listen(`${dir}/${run}p.sock`);
              closers.push(() => p.close());
              const via = await RawConn.open(`${dir}/${run}p.sock`);
              closers.push(() => via.close());
              const got = await runPrivScript(via, b.dom0, script, false);
              expect(got).toEqual(want);
            } finally {
              for (const f of closers.reverse()) await f();
            }
          },
        ),
        { numRuns: 200 },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
