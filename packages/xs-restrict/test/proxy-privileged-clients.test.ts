/**
 * Property: two clients of one privileged proxy over an in-process server share the proxy's perms
 * cache (proxy/privileged/shared-cache.ts). Random requests of both, interleaved with random
 * toolstack changes, get the same replies and watch events on each connection as two direct
 * domain-5 connections get: what one client's requests teach the cache, or change, is exact for
 * the other.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as W from '../src/wire/index.js';
import { RawConn, show, z } from './helpers/raw.js';
import { directAndProxied, dStep, initial, nStep, withWatches } from './privileged-random.js';
import type { Step } from './privileged-script.js';

/** Each step on its client (or dom0), then a barrier on both clients; both transcripts. */
async function runTwo(
  conns: readonly [RawConn, RawConn],
  dom0: RawConn,
  steps: readonly (readonly [Step, 0 | 1])[],
): Promise<string[]> {
  const out: string[] = [];
  let reqId = 100;
  const barrier = async (id: number): Promise<void> => {
    for (const [k, c] of conns.entries()) {
      c.send(W.XS_GET_DOMAIN_PATH, id, 0, z('0'));
      for (const m of await c.until(
        (x) => x.reqId === id && x.type !== W.XS_WATCH_EVENT,
        'barrier',
      ))
        out.push(`${k} [${id}] ${show(m)}`);
    }
  };
  for (const [s, k] of steps) {
    const id = reqId++;
    if (s.who === 'dom0') {
      dom0.send(s.type, id, 0, s.payload);
      await dom0.until((x) => x.reqId === id && x.type !== W.XS_WATCH_EVENT, 'dom0');
    } else {
      const c = conns[k];
      c.send(s.type, id, s.tx ?? 0, s.payload);
      for (const m of await c.until(
        (x) => x.reqId === id && x.type !== W.XS_WATCH_EVENT,
        `reply ${id}`,
      ))
        out.push(`${k} [${id}] ${show(m)}`);
    }
    await barrier(reqId++);
  }
  return out;
}

async function transcripts(
  init: { p: string; q: string[] }[],
  steps: readonly (readonly [Step, 0 | 1])[],
  dir: string,
  run: string,
): Promise<[string[], string[]]> {
  const closers: (() => unknown)[] = [];
  try {
    const { direct, proxied, a0, b0 } = await directAndProxied(
      dir,
      run,
      init,
      steps.map(([s]) => s),
      closers,
    );
    const open = async (path: string): Promise<RawConn> => {
      const c = await RawConn.open(path);
      closers.push(() => c.close());
      return c;
    };
    const want = await runTwo([await open(direct), await open(direct)], a0, steps);
    return [want, await runTwo([await open(proxied), await open(proxied)], b0, steps)];
  } finally {
    for (const f of closers.reverse()) await f();
  }
}

/** Both clients watch (withWatches' two watches), so each sees the events of the other's changes. */
function watched(ops: readonly (readonly [Step, 0 | 1])[]): (readonly [Step, 0 | 1])[] {
  const watches = withWatches([]);
  return [...watches.map((w) => [w, 0] as const), ...watches.map((w) => [w, 1] as const), ...ops];
}

describe('privileged upstream in process, two clients (property)', { timeout: 120000 }, () => {
  it('random requests of two clients and toolstack changes: the same transcripts as two attach(N)', async () => {
    const dir = mkdtempSync('/tmp/xspc-');
    let run = 0;
    try {
      await fc.assert(
        fc.asyncProperty(
          initial,
          fc.array(
            fc.tuple(
              fc.oneof({ weight: 3, arbitrary: nStep }, { weight: 1, arbitrary: dStep }),
              fc.constantFrom<0 | 1>(0, 1),
            ),
            { maxLength: 30 },
          ),
          async (init, ops) => {
            run++;
            const [want, got] = await transcripts(init, watched(ops), dir, String(run));
            expect(got).toEqual(want);
          },
        ),
        { numRuns: 150 },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Found by this test's first version: N removes, in a transaction, a node it may write but
  // not read, under a parent it may read. C's commit fires the removed node by name
  // (finalize_transaction) and judges a node no longer there by its perms as the transaction
  // read them alone, so a direct connection hears no event; an rm outside a transaction fires
  // with the node as it was and checks the parent too.
  it('no event for a node removed in a committed transaction that N could not read (one client)', async () => {
    const dir = mkdtempSync('/tmp/xspc-');
    try {
      const [want, got] = await transcripts(
        [
          { p: '/local/domain/0/dmtest/a/b/c', q: ['n0', 'w5'] },
          { p: '/local/domain/0/dmtest', q: ['n0'] },
        ],
        watched([
          [{ who: 'n', type: W.XS_TRANSACTION_START, payload: z('') }, 0],
          [{ who: 'n', type: W.XS_RM, payload: z('/local/domain/0/dmtest/a/b/c'), tx: 1 }, 0],
          [{ who: 'n', type: W.XS_TRANSACTION_END, payload: z('T'), tx: 1 }, 0],
        ]),
        dir,
        'k',
      );
      expect(got).toEqual(want);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
