// xs-restrict's XenstoreClient against dom0's real C xenstored (Xen 4.17), over its unix socket
// and over /dev/xen/xenbus, and the embedded server's answers compared with the real daemon's.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenstoreClient, XenstoreServer } from '@xen-depriv/xs-restrict';

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
