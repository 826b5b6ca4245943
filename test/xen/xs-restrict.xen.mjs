// xs-restrict's XenstoreClient against dom0's real C xenstored (Xen 4.17), over its unix socket
// and over /dev/xen/xenbus, the embedded server's answers compared with the real daemon's, and
// the RestrictingProxy in front of the real daemon's privileged socket giving a DM domain N's view.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RestrictingProxy, XenstoreClient, XenstoreServer } from '@xen-depriv/xs-restrict';
import { makeHvm } from './privcmd-filter.xen.mjs';

const settle = (p) =>
  p.then(
    (v) => ({ ok: v ?? null }),
    (e) => ({ err: e.code ?? String(e) }),
  );
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What libxl and the launcher leave in xenstore before a DM of domain `d` starts, written by dom0. */
async function dmFixture(dom0, d) {
  const dm = `/local/domain/0/device-model/${d}`;
  await dom0.mkdir(dm);
  await dom0.setPerms(dm, [
    { domid: 0, perm: 'n' },
    { domid: d, perm: 'b' },
  ]);
  await dom0.write(`${dm}/physmap/f0000/start_addr`, 'f0000');
  await dom0.setPerms(`${dm}/physmap`, [{ domid: 0, perm: 'n' }]);
  await dom0.mkdir(`/local/domain/${d}`);
  await dom0.setPerms(`/local/domain/${d}`, [
    { domid: 0, perm: 'n' },
    { domid: d, perm: 'r' },
  ]);
  await dom0.write(`/local/domain/${d}/console/type`, 'ioemu');
  await dom0.mkdir(`/local/domain/0/backend/vkbd/${d}/0`);
  await dom0.setPerms(`/local/domain/0/backend/vkbd/${d}/0`, [
    { domid: 0, perm: 'n' },
    { domid: d, perm: 'r' },
  ]);
  await dom0.write(`/local/domain/0/backend/vkbd/${d}/0/state`, '1');
  await dom0.mkdir(`/local/domain/0/backend/vkbd/${d}/9`);
  await dom0.setPerms(`/local/domain/0/backend/vkbd/${d}/9`, [{ domid: 0, perm: 'n' }]);
}

async function dmFixtureRemove(dom0, d) {
  for (const p of [
    `/local/domain/0/device-model/${d}`,
    `/local/domain/${d}`,
    `/local/domain/0/backend/vkbd/${d}`,
  ]) {
    await dom0.rm(p).catch(() => {});
  }
}

/**
 * The DM's script through the proxy: creates, reads it may and may not do, a transaction, a
 * watch that must not see a node domain `d` cannot read, and operations outside the allowlist.
 * Returns one settled result per step and the watch events seen.
 */
async function dmScript(dm, dom0, d) {
  const dmp = `/local/domain/0/device-model/${d}`;
  const steps = [
    ['write state (relative)', () => dm.write(`device-model/${d}/state`, 'running')],
    ['perms of the created node, as dom0 sees them', () => dom0.getPerms(`${dmp}/state`)],
    ['read state', () => dm.readString(`${dmp}/state`)],
    ['read physmap (dom0 only)', () => dm.directory(`${dmp}/physmap`)],
    ['read under physmap', () => dm.readString(`${dmp}/physmap/f0000/start_addr`)],
    ['write under physmap', () => dm.write(`${dmp}/physmap/f0000/size`, '10000')],
    ['read console type', () => dm.readString(`/local/domain/${d}/console/type`)],
    ['read missing ring-ref', () => dm.readString(`/local/domain/${d}/console/ring-ref`)],
    [
      'write console tty (read-only parent)',
      () => dm.write(`/local/domain/${d}/console/tty`, 'pty'),
    ],
    ['read backend state', () => dm.readString(`/local/domain/0/backend/vkbd/${d}/0/state`)],
    [
      'write backend state (read-only)',
      () => dm.write(`/local/domain/0/backend/vkbd/${d}/0/state`, '4'),
    ],
    ['mkdir an existing read-only backend', () => dm.mkdir(`/local/domain/0/backend/vkbd/${d}/0`)],
    [
      'a committed transaction',
      async () => {
        const tx = await dm.transactionStart();
        await dm.write(`${dmp}/state`, 'paused', { tx });
        await dm.transactionEnd(tx, true);
        return dom0.readString(`${dmp}/state`);
      },
    ],
    [
      "another domain's DM state",
      () => dm.readString(`/local/domain/0/device-model/${d + 1}/state`),
    ],
    ['dom0 name (not in the allowlist)', () => dm.readString('/local/domain/0/name')],
    ['INTRODUCE', () => dm.introduce(d + 1, 1234, 5)],
    ['SET_TARGET', () => dm.setTarget(d + 1, d)],
    ['set perms', () => dm.setPerms(`${dmp}/state`, [{ domid: d, perm: 'b' }])],
    ['get domain path', () => dm.getDomainPath(d)],
  ];
  const results = [];
  for (const [name, run] of steps) results.push([name, await settle(run())]);
  // Watches: the registration event, then a dom0 write N cannot read (no event), then one it can.
  const events = [];
  const bk = `/local/domain/0/backend/vkbd/${d}`;
  const w = await dm.watch(bk, 'bk');
  const loop = (async () => {
    for await (const e of w) events.push(`${e.path} ${e.token}`);
  })();
  await sleep(200);
  await dom0.write(`${bk}/9/state`, '1');
  await sleep(200);
  await dom0.write(`${bk}/0/state`, '2');
  await sleep(300);
  await w.close();
  await loop;
  results.push(['rm state', await settle(dm.rm(`${dmp}/state`))]);
  return { results, events };
}

async function exercise(client, base) {
  await client.write(`${base}/a`, 'one');
  assert.equal(await client.readString(`${base}/a`), 'one');
  await client.mkdir(`${base}/dir/sub`);
  assert.deepEqual((await client.directory(`${base}/dir`)).sort(), ['sub']);
  await client.setPerms(`${base}/a`, [
    { domid: 0, perm: 'n' },
    { domid: 5, perm: 'r' },
  ]);
  assert.deepEqual(await client.getPerms(`${base}/a`), [
    { domid: 0, perm: 'n' },
    { domid: 5, perm: 'r' },
  ]);
  await assert.rejects(client.read(`${base}/missing`), (e) => e.code === 'ENOENT');
  const tx = await client.transactionStart();
  await client.write(`${base}/t`, 'in-tx', { tx });
  await client.transactionEnd(tx, true);
  assert.equal(await client.readString(`${base}/t`), 'in-tx');
  await client.rm(base);
}

async function opsPerSecond(client, base, n) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    await client.write(`${base}/k`, String(i));
    await client.read(`${base}/k`);
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await client.rm(base);
  return Math.round((2 * n) / s);
}

export default function (test) {
  test('XenstoreClient on the real xenstored socket: nodes, perms, errors, transactions, ops/s', async () => {
    const c = await XenstoreClient.connect({ path: '/run/xenstored/socket' });
    try {
      assert.equal(await c.readString('/local/domain/0/name'), 'Domain-0');
      await exercise(c, '/xen-depriv-test/sock');
      return {
        realXenstoredOpsPerSecondSocket: await opsPerSecond(c, '/xen-depriv-test/bench', 100),
      };
    } finally {
      await c.close();
    }
  });

  test('the embedded XenstoreServer gives the same answers as the real xenstored for the same requests', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xs-'));
    const server = new XenstoreServer();
    await server.listen(join(dir, 'sock'));
    const real = await XenstoreClient.connect({ path: '/run/xenstored/socket' });
    const ours = await XenstoreClient.connect({ path: join(dir, 'sock') });
    try {
      const steps = [
        (c) => c.write('/t/a', 'v'),
        (c) => c.readString('/t/a'),
        (c) => c.mkdir('/t/b/c'),
        (c) => c.directory('/t'),
        (c) => c.getPerms('/t/b/c'),
        (c) => c.read('/t/none'),
        (c) => c.write('/t/a/', 'x'),
        (c) => c.rm('/t/b'),
        (c) => c.directory('/t'),
        (c) => c.rm('/t'),
      ];
      for (const [i, step] of steps.entries()) {
        const settle = (p) =>
          p.then(
            (v) => ({ ok: v ?? null }),
            (e) => ({ err: e.code }),
          );
        const [a, b] = [await settle(step(real)), await settle(step(ours))];
        if (Array.isArray(a.ok)) a.ok.sort?.();
        if (Array.isArray(b.ok)) b.ok.sort?.();
        assert.deepEqual(b, a, `step ${i}: ${step}`);
      }
      return { steps: steps.length };
    } finally {
      await real.close();
      await ours.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test('the RestrictingProxy in front of the real xenstored (privileged upstream) gives domain N its own view and refuses the rest', async () => {
    const d = makeHvm();
    const dir = mkdtempSync(join(tmpdir(), 'xsp-'));
    const refusals = { real: [], embedded: [] };
    const real0 = await XenstoreClient.connect({ path: '/run/xenstored/socket' });
    const server = new XenstoreServer();
    await server.listen(join(dir, 'sock'));
    const emb0 = await XenstoreClient.connect({ path: join(dir, 'sock') });
    // The proxy on the real daemon decides as domain d itself; on the embedded server it attaches
    // as domain d, so the server decides. The two views must be the same.
    const realProxy = new RestrictingProxy({
      domid: d,
      upstream: { privileged: '/run/xenstored/socket' },
      log: (l) => refusals.real.push(JSON.parse(l)),
    });
    const embProxy = new RestrictingProxy({
      domid: d,
      upstream: server,
      log: (l) => refusals.embedded.push(JSON.parse(l)),
    });
    await realProxy.listen(join(dir, 'real.sock'));
    await embProxy.listen(join(dir, 'emb.sock'));
    let realDm;
    let embDm;
    try {
      await dmFixture(real0, d);
      await dmFixture(emb0, d);
      realDm = await XenstoreClient.connect({ path: join(dir, 'real.sock') });
      embDm = await XenstoreClient.connect({ path: join(dir, 'emb.sock') });
      const real = await dmScript(realDm, real0, d);
      const emb = await dmScript(embDm, emb0, d);
      const byName = Object.fromEntries(real.results);
      const seen = `real: ${JSON.stringify(real)}\nembedded: ${JSON.stringify(emb)}`;
      // Domain d's decisions, stated outright for the real daemon.
      assert.deepEqual(byName['write state (relative)'], { ok: null }, seen);
      assert.deepEqual(
        byName['perms of the created node, as dom0 sees them'],
        {
          ok: [
            { domid: d, perm: 'n' },
            { domid: d, perm: 'b' },
          ],
        },
        seen,
      );
      assert.deepEqual(byName['read physmap (dom0 only)'], { err: 'EACCES' }, seen);
      // Permissions belong to each node: the child kept the ones it was created with.
      assert.deepEqual(byName['read under physmap'], { ok: 'f0000' }, seen);
      assert.deepEqual(byName['a committed transaction'], { ok: 'paused' }, seen);
      assert.deepEqual(byName['read missing ring-ref'], { err: 'ENOENT' }, seen);
      assert.deepEqual(byName['write backend state (read-only)'], { err: 'EACCES' }, seen);
      assert.deepEqual(byName.INTRODUCE, { err: 'EACCES' }, seen);
      assert.deepEqual(byName['rm state'], { err: 'EACCES' }, seen); // not in the allowlist
      assert.deepEqual(
        real.events,
        [`/local/domain/0/backend/vkbd/${d} bk`, `/local/domain/0/backend/vkbd/${d}/0/state bk`],
        seen,
      );
      // And the whole transcript equals the embedded server's native domain-d view.
      assert.deepEqual(real, emb, seen);
      assert.deepEqual(
        refusals.real.map((r) => r.rule),
        refusals.embedded.map((r) => r.rule),
        JSON.stringify(refusals),
      );
      return {
        steps: real.results.length,
        events: real.events.length,
        refusedByProxy: refusals.real.length,
        refusedByDomainPerms:
          real.results.filter(([, r]) => r.err === 'EACCES').length - refusals.real.length,
      };
    } finally {
      realDm?.close();
      embDm?.close();
      await realProxy.close();
      await embProxy.close();
      await dmFixtureRemove(real0, d);
      real0.close();
      emb0.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
      execFileSync('dmop-test', ['destroy', String(d)]);
    }
  });
  // Last: a xenbus client leaves a blocking read in libuv's thread pool after close.
  test('XenstoreClient over /dev/xen/xenbus on the real xenstored', async () => {
    const c = await XenstoreClient.connect({ path: '/dev/xen/xenbus' });
    try {
      await exercise(c, '/xen-depriv-test/xenbus');
      return {
        realXenstoredOpsPerSecondXenbus: await opsPerSecond(c, '/xen-depriv-test/bench2', 50),
      };
    } finally {
      await c.close();
    }
  });
}
