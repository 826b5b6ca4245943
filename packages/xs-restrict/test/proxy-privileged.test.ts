/**
 * The privileged upstream mode against a direct domain-N connection to a
 * second, identical daemon: the embedded server (attach(0) vs a domain
 * socket) and the real C xenstored 4.17 (its dom0 `socket` vs `domN.sock`
 * over a ring page). Transcripts must be identical byte for byte, including
 * the perms of created nodes and the watch events N may and may not see.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { PENDING_OUTPUT_MAX } from '../src/proxy/privileged/book.js';
import { type ProxyLogRecord, RestrictingProxy } from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';
import * as W from '../src/wire/index.js';
import { type Peer, peerMissing, startPeer } from './helpers/peer.js';
import { RawConn } from './helpers/raw.js';
import { dStep, initial, nStep, PATH_STEPS, setup, withWatches } from './privileged-random.js';
import {
  A,
  allowAll,
  privilegedScript,
  runPrivScript,
  runSetup,
  type Step,
  setupSteps,
} from './privileged-script.js';

const DOMID = 5;

function check(direct: string[], proxied: string[]): void {
  if (process.env.XSPV_DUMP)
    writeFileSync(process.env.XSPV_DUMP, `${direct.join('\n')}\n=====\n${proxied.join('\n')}\n`);
  expect(proxied).toEqual(direct);
  const text = direct.join('\n');
  // The script covers what it claims: created perms, both errnos of errno_from_parents, quotas.
  expect(text).toMatch(
    new RegExp(`GET_PERMS req=\\d+ tx=0 "n${DOMID}\\\\u0000b${DOMID}\\\\u0000"`),
  );
  for (const e of ['EACCES', 'ENOENT', 'ENOSPC', 'EPERM', 'EINVAL', 'EEXIST', 'EAGAIN'])
    expect(text, e).toContain(`"${e}\\u0000"`);
  expect(text).toContain(
    'WATCH_EVENT req=0 tx=0 "/local/domain/0/dmtest/hidden/child\\u0000wh\\u0000"',
  );
  expect(text).not.toContain('/local/domain/0/dmtest/hidden/ev\\u0000wa');
  expect(text).toContain('"@releaseDomain\\u0000rel\\u0000"');
  // A deleted node N could read fires its exact watch (perms from before the rm); one it could not, not.
  expect(text).toContain('"/local/domain/0/dmtest/hidden/child\\u0000wc\\u0000"');
  expect(text.match(/hidden\/ev\\u0000we/g)?.length).toBe(1);
}

describe('privileged upstream on XenstoreServer', { timeout: 30000 }, () => {
  let dir: string;
  let cleanup: (() => unknown)[];
  beforeEach(() => {
    dir = mkdtempSync('/tmp/xspv-');
    cleanup = [];
  });
  afterEach(async () => {
    for (const f of cleanup.reverse()) await f();
    rmSync(dir, { recursive: true, force: true });
  });

  async function daemon(name: string): Promise<{ s: XenstoreServer; dom0: RawConn }> {
    const s = new XenstoreServer();
    await s.listen(`${dir}/${name}.sock`);
    await s.listenDomain(DOMID, `${dir}/${name}-dom${DOMID}.sock`);
    cleanup.push(() => s.close());
    const dom0 = await RawConn.open(`${dir}/${name}.sock`);
    cleanup.push(() => dom0.close());
    await runSetup(dom0, setupSteps(DOMID));
    return { s, dom0 };
  }

  it('gives the same replies, created perms and watch events as attach(N)', async () => {
    const a = await daemon('a');
    const b = await daemon('b');
    const script = privilegedScript(DOMID);
    const direct = await RawConn.open(`${dir}/a-dom${DOMID}.sock`);
    cleanup.push(() => direct.close());
    const want = await runPrivScript(direct, a.dom0, script);
    const logs: ProxyLogRecord[] = [];
    const p = new RestrictingProxy({
      domid: DOMID,
      upstream: { privileged: b.s },
      allowlist: allowAll(script),
      log: (l) => logs.push(JSON.parse(l) as ProxyLogRecord),
    });
    await p.listen(`${dir}/p.sock`);
    cleanup.push(() => p.close());
    const via = await RawConn.open(`${dir}/p.sock`);
    cleanup.push(() => via.close());
    const got = await runPrivScript(via, b.dom0, script);
    check(want, got);
    expect(logs).toEqual([]);
  });
});

describe('privileged upstream: a burst of watch events', { timeout: 30000 }, () => {
  it(`closes only the client whose undecided output passes PENDING_OUTPUT_MAX (${PENDING_OUTPUT_MAX}), with a log line; others and new clients are served`, async () => {
    const dir = mkdtempSync('/tmp/xspo-');
    const closers: (() => unknown)[] = [];
    try {
      const s = new XenstoreServer();
      await s.listen(`${dir}/s.sock`);
      closers.push(() => s.close());
      const dom0 = await XenstoreClient.connect({ path: `${dir}/s.sock` });
      closers.push(() => dom0.close());
      const state = (d: number) => `/local/domain/${d}/device/vif/0/state`;
      for (const d of [DOMID, DOMID + 1]) {
        await dom0.mkdir(`/local/domain/${d}`);
        await dom0.setPerms(`/local/domain/${d}`, [{ domid: d, perm: 'n' }]);
        await dom0.write(state(d), '1');
      }
      const logs: ProxyLogRecord[] = [];
      const proxies = [DOMID, DOMID + 1].map(
        (d) =>
          new RestrictingProxy({
            domid: d,
            upstream: { privileged: `${dir}/s.sock` },
            log: (l) => logs.push(JSON.parse(l) as ProxyLogRecord),
          }),
      );
      for (const [i, p] of proxies.entries()) {
        await p.listen(`${dir}/p${i}.sock`);
        closers.push(() => p.close());
      }
      const victim = await XenstoreClient.connect({ path: `${dir}/p0.sock` });
      closers.push(() => victim.close());
      const bystander = await XenstoreClient.connect({ path: `${dir}/p1.sock` });
      closers.push(() => bystander.close());
      const watch = await victim.watch(state(DOMID), 'burst');
      let events = 0;
      const ended = (async () => {
        for await (const _ of watch) events++;
      })();
      // The embedded server answers a whole read at once: 4000 pipelined writes fire 4000 events
      // on the proxy's dom0 link before any of its perms lookups is answered.
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 4000; i++) writes.push(dom0.write(state(DOMID), String(i)));
      await Promise.all(writes);
      await ended;
      expect(events).toBeLessThan(PENDING_OUTPUT_MAX + 1);
      const overflow = logs.filter((l) => l.event === 'event-overflow');
      expect(overflow).toHaveLength(1);
      expect(overflow[0]?.domid).toBe(DOMID);
      expect(overflow[0]?.detail).toContain(`limit ${PENDING_OUTPUT_MAX}`);
      expect(proxies[0]?.stats()).toEqual([]);
      // The other proxy's client and a new client of the same proxy are served.
      expect(await bystander.readString(state(DOMID + 1))).toBe('1');
      const again = await XenstoreClient.connect({ path: `${dir}/p0.sock` });
      closers.push(() => again.close());
      expect(await again.readString(state(DOMID))).toBe('3999');
    } finally {
      for (const c of closers.reverse()) await c();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('privileged upstream: entries per domain', { timeout: 30000 }, () => {
  it('refuses creates beyond quota_nb_entry_per_domain with ENOSPC, counted as the daemon counts them when N owns nothing else', async () => {
    const dir = mkdtempSync('/tmp/xspe-');
    const closers: (() => unknown)[] = [];
    try {
      const daemons: { s: XenstoreServer; dom0: RawConn }[] = [];
      for (const name of ['a', 'b']) {
        const s = new XenstoreServer({ quotas: { nodesPerDomain: 5 } });
        await s.listen(`${dir}/${name}.sock`);
        await s.listenDomain(DOMID, `${dir}/${name}-d.sock`);
        closers.push(() => s.close());
        const dom0 = await RawConn.open(`${dir}/${name}.sock`);
        closers.push(() => dom0.close());
        await runSetup(dom0, [
          { who: 'dom0', type: W.XS_WRITE, payload: `${A}\0` },
          { who: 'dom0', type: W.XS_SET_PERMS, payload: `${A}\0n0\0b${DOMID}\0` },
        ]);
        daemons.push({ s, dom0 });
      }
      const [a, b] = daemons as [(typeof daemons)[0], (typeof daemons)[0]];
      const w = (p: string): Step => ({ who: 'n', type: W.XS_WRITE, payload: `${A}/${p}\0v` });
      const script: Step[] = [
        w('n1'),
        w('n2/x'),
        w('n3'),
        w('n4'),
        w('n5'),
        { who: 'n', type: W.XS_RM, payload: `${A}/n1\0` },
        w('n6/y'),
        w('n6'),
        { who: 'dom0', type: W.XS_RM, payload: `${A}/n2\0` },
        w('n7/z'),
        w('n8'),
        { who: 'n', type: W.XS_TRANSACTION_START, payload: '\0' },
        { who: 'n', type: W.XS_RM, payload: `${A}/n3\0`, tx: 1 },
        w('n9'),
        { who: 'n', type: W.XS_TRANSACTION_END, payload: 'T\0', tx: 1 },
        w('n9'),
      ];
      const direct = await RawConn.open(`${dir}/a-d.sock`);
      closers.push(() => direct.close());
      const want = await runPrivScript(direct, a.dom0, script);
      const p = new RestrictingProxy({
        domid: DOMID,
        upstream: { privileged: b.s },
        allowlist: allowAll(script),
        log: () => undefined,
      });
      await p.listen(`${dir}/p.sock`);
      closers.push(() => p.close());
      const via = await RawConn.open(`${dir}/p.sock`);
      closers.push(() => via.close());
      const got = await runPrivScript(via, b.dom0, script);
      expect(got).toEqual(want);
      expect(want.filter((l) => l.includes('ENOSPC')).length).toBeGreaterThanOrEqual(2);
    } finally {
      for (const f of closers.reverse()) await f();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const missing = peerMissing();

describe.skipIf(missing !== undefined)(
  `privileged upstream on C xenstored 4.17 ${missing ? `(skipped: ${missing})` : ''}`,
  { timeout: 60000 },
  () => {
    let a: Peer;
    let b: Peer;
    let dir: string;
    const cleanup: (() => unknown)[] = [];
    beforeAll(() => {
      dir = mkdtempSync('/tmp/xspq-');
      a = startPeer([DOMID]);
      cleanup.push(() => a.stop());
      b = startPeer([DOMID]);
      cleanup.push(() => b.stop());
    });
    afterAll(async () => {
      for (const f of cleanup.reverse()) await f();
      rmSync(dir, { recursive: true, force: true });
    });

    it('random requests and toolstack changes (3 seeded scripts of 150 steps): the same transcript as the ring', async () => {
      for (const seed of (process.env.XSPV_SEEDS ?? '1,2,3').split(',').map(Number)) {
        const pa = startPeer([DOMID]);
        const pb = startPeer([DOMID]);
        cleanup.push(
          () => pa.stop(),
          () => pb.stop(),
        );
        const [init] = fc.sample(initial, { seed, numRuns: 1 }) as [{ p: string; q: string[] }[]];
        const [ops] = fc.sample(
          fc.array(fc.oneof({ weight: 3, arbitrary: nStep }, { weight: 1, arbitrary: dStep }), {
            minLength: 150,
            maxLength: 150,
          }),
          { seed, numRuns: 1 },
        ) as [Step[]];
        const script = withWatches(ops);
        const a0 = await RawConn.open(pa.dom0);
        const b0 = await RawConn.open(pb.dom0);
        cleanup.push(
          () => a0.close(),
          () => b0.close(),
        );
        await runSetup(a0, [...setupSteps(DOMID).slice(0, 2), ...setup(init)]);
        await runSetup(b0, [...setupSteps(DOMID).slice(0, 2), ...setup(init)]);
        const direct = await RawConn.open(pa.dom(DOMID));
        const want = await runPrivScript(direct, a0, script, false);
        direct.close();
        const p = new RestrictingProxy({
          domid: DOMID,
          upstream: { privileged: pb.dom0 },
          allowlist: allowAll([...script, ...PATH_STEPS]),
          // The daemon's transaction quota is under test here, not the proxy's own DM limit.
          limits: { maxTransactions: 100 },
          log: () => undefined,
        });
        await p.listen(`${dir}/r${seed}.sock`);
        cleanup.push(() => p.close());
        const via = await RawConn.open(`${dir}/r${seed}.sock`);
        cleanup.push(() => via.close());
        const got = await runPrivScript(via, b0, script, false);
        expect(got, `seed ${seed}`).toEqual(want);
        pa.stop();
        pb.stop();
      }
    });

    it("gives the same replies, created perms and watch events as the daemon's domain-5 ring", async () => {
      const a0 = await RawConn.open(a.dom0);
      const b0 = await RawConn.open(b.dom0);
      cleanup.push(
        () => a0.close(),
        () => b0.close(),
      );
      await runSetup(a0, setupSteps(DOMID));
      await runSetup(b0, setupSteps(DOMID));
      const script = privilegedScript(DOMID);
      const direct = await RawConn.open(a.dom(DOMID));
      const want = await runPrivScript(direct, a0, script);
      direct.close();
      const p = new RestrictingProxy({
        domid: DOMID,
        upstream: { privileged: b.dom0 },
        allowlist: allowAll(script),
        log: () => undefined,
      });
      await p.listen(`${dir}/p.sock`);
      cleanup.push(() => p.close());
      const via = await RawConn.open(`${dir}/p.sock`);
      cleanup.push(() => via.close());
      const got = await runPrivScript(via, b0, script);
      check(want, got);
    });
  },
);
