/**
 * Property: random requests of domain 5 over a small tree with random
 * permissions, interleaved with random toolstack changes, get the same
 * replies and watch events through the privileged proxy mode (embedded
 * server, attached as dom0) as on a direct domain-5 connection.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RestrictingProxy } from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';
import { RawConn } from './helpers/raw.js';
import { dStep, initial, nStep, PATH_STEPS, setup, withWatches } from './privileged-random.js';
import { allowAll, runPrivScript, runSetup } from './privileged-script.js';

const DOMID = 5;

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
              const script = withWatches(ops);
              const direct = await RawConn.open(`${dir}/${run}a-d.sock`);
              closers.push(() => direct.close());
              const want = await runPrivScript(direct, a.dom0, script, false);
              const p = new RestrictingProxy({
                domid: DOMID,
                upstream: { privileged: b.s },
                allowlist: allowAll([...script, ...PATH_STEPS]),
                limits: { maxTransactions: 100 },
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
