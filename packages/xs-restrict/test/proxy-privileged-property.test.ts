/**
 * Property: random requests of domain 5 over a small tree with random
 * permissions, interleaved with random toolstack changes, get the same
 * replies and watch events through the privileged proxy mode (embedded
 * server, attached as dom0) as on a direct domain-5 connection.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RawConn } from './helpers/raw.js';
import { directAndProxied, dStep, initial, nStep, withWatches } from './privileged-random.js';
import { runPrivScript } from './privileged-script.js';

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
              const script = withWatches(ops);
              const { direct, proxied, a0, b0 } = await directAndProxied(
                dir,
                String(run),
                init,
                script,
                closers,
              );
              const d = await RawConn.open(direct);
              closers.push(() => d.close());
              const want = await runPrivScript(d, a0, script, false);
              const via = await RawConn.open(proxied);
              closers.push(() => via.close());
              const got = await runPrivScript(via, b0, script, false);
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
