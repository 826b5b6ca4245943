/**
 * The privileged session's in-step path (an embedded server in process): a cached rewrite is one
 * daemon request, as a direct write is, and the children bytes it remembers for write_node's
 * entry quota follow every change below the node, so its answers stay a direct connection's.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { RestrictingProxy } from '../src/proxy/proxy.js';
import type { XenstoreConnection } from '../src/server/connection.js';
import { XenstoreServer } from '../src/server/server.js';
import * as W from '../src/wire/index.js';
import { RawConn, show, z } from './helpers/raw.js';

const DOMID = 5;
const DIR = `/local/domain/0/device-model/${DOMID}`;
const dm: W.XsPerm[] = [
  { domid: 0, perm: 'n' },
  { domid: DOMID, perm: 'b' },
];
// A record is 24 + 8 per perm + data + children's names: 40 + data + children here.
const ENTRY_SIZE = 120;

class CountingServer extends XenstoreServer {
  dom0Requests = 0;
  override handle(conn: XenstoreConnection, m: W.XsMessage): void {
    if (conn.domid === 0) this.dom0Requests++;
    super.handle(conn, m);
  }
}

const code = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: { code?: string }) => e.code ?? 'error',
  );

describe('privileged upstream in process: in-step rewrites', { timeout: 20000 }, () => {
  let dir: string;
  let server: CountingServer;
  let proxy: RestrictingProxy;
  let ts: XenstoreClient;
  let direct: XenstoreClient;
  let qemu: XenstoreClient;
  beforeEach(async () => {
    dir = mkdtempSync('/tmp/xspi-');
    server = new CountingServer({ quotas: { entrySize: ENTRY_SIZE } });
    await server.listen(`${dir}/xs.sock`);
    await server.listenDomain(DOMID, `${dir}/dom5.sock`);
    ts = await XenstoreClient.connect({ path: `${dir}/xs.sock` });
    for (const node of ['a', 'b']) {
      await ts.write(`${DIR}/${node}`, 'v0');
      await ts.setPerms(`${DIR}/${node}`, dm);
    }
    await ts.setPerms(DIR, dm);
    proxy = new RestrictingProxy({
      domid: DOMID,
      upstream: { privileged: server },
      allowlist: ['a', 'b'].map((n) => ({
        entryId: n,
        pattern: `${DIR}/${n}`,
        ops: ['read', 'write'] as const,
      })),
      log: () => undefined,
    });
    await proxy.listen(`${dir}/proxy.sock`);
    qemu = await XenstoreClient.connect({ path: `${dir}/proxy.sock` });
    direct = await XenstoreClient.connect({ path: `${dir}/dom5.sock` });
  });
  afterEach(async () => {
    for (const c of [qemu, direct, ts]) c.close();
    await proxy.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a cached rewrite is one daemon request', async () => {
    await qemu.write(`${DIR}/a`, 'v1');
    const before = server.dom0Requests;
    await qemu.write(`${DIR}/a`, 'v2');
    expect(server.dom0Requests - before).toBe(1);
    expect((await qemu.read(`${DIR}/a`)).toString()).toBe('v2');
  });

  it('a read the cache decides decodes its path once, in decide(): the session and the server take that string', async () => {
    const path = `${DIR}/a`;
    await qemu.read(path);
    await qemu.read(path);
    const utf8Slice = vi.spyOn(Buffer.prototype, 'utf8Slice');
    try {
      const before = server.dom0Requests;
      const got = await Promise.all([qemu.read(path), qemu.read(path), qemu.read(path)]);
      expect(got.map(String)).toEqual(['v0', 'v0', 'v0']);
      // The cache decided all three: one daemon request each, as a direct read.
      expect(server.dom0Requests - before).toBe(3);
      // Before, the perms cache and the server decoded it again: 9.
      expect(utf8Slice.mock.results.filter((r) => r.value === path)).toHaveLength(3);
    } finally {
      utf8Slice.mockRestore();
    }
  });

  it('children the toolstack adds or removes below a node count in its entry quota at once', async () => {
    const data = 'x'.repeat(30);
    const child = 'c'.repeat(50);
    // Each toolstack change is made below the node of the client then writing it.
    const steps: ((node: string) => Promise<unknown>)[] = [
      async () => undefined,
      (node) => ts.write(`${DIR}/${node}/${child}`, ''),
      (node) => ts.rm(`${DIR}/${node}/${child}`),
      // Created with an implicit parent: the event names the grandchild only.
      (node) => ts.write(`${DIR}/${node}/${child}/e`, ''),
      (node) => ts.rm(`${DIR}/${node}/${child}`),
    ];
    for (const [node, client] of [
      ['a', direct],
      ['b', qemu],
    ] as const) {
      const got: string[] = [];
      for (const change of steps) {
        await change(node);
        got.push(await code(client.write(`${DIR}/${node}`, data)));
        got.push(await code(client.write(`${DIR}/${node}`, data)));
      }
      expect(got, node).toEqual([
        'ok',
        'ok',
        'ENOSPC',
        'ENOSPC',
        'ok',
        'ok',
        'ENOSPC',
        'ENOSPC',
        'ok',
        'ok',
      ]);
    }
  });

  it('a WATCH on a childless node the cache knows is primed from it: one daemon request, the same events', async () => {
    // As QEMU watches backend/<type>/N: readable by N, under a parent N cannot read.
    const node = `/local/domain/0/backend/vkbd/${DOMID}`;
    await ts.write(node, '');
    await ts.setPerms(node, [
      { domid: 0, perm: 'n' },
      { domid: DOMID, perm: 'r' },
    ]);
    const watcher = new RestrictingProxy({
      domid: DOMID,
      upstream: { privileged: server },
      allowlist: [{ entryId: 'vkbd', pattern: node, ops: ['watch'] }],
      log: () => undefined,
    });
    await watcher.listen(`${dir}/watcher.sock`);
    const first = await XenstoreClient.connect({ path: `${dir}/watcher.sock` });
    const second = await XenstoreClient.connect({ path: `${dir}/watcher.sock` });
    try {
      // The first session primes the long way (GET_PERMS, DIRECTORY): the cache learns the node.
      const w1 = await first.watch(node, 'w1');
      await w1.next();
      const before = server.dom0Requests;
      const w2 = await second.watch(node, 'w2');
      expect(server.dom0Requests - before).toBe(1);
      const wd = await direct.watch(node, 'wd');
      for (const w of [w2, wd]) expect((await w.next()).value?.path).toBe(node);
      // N loses read: it still hears of the change, by the perms the node had (watch_permitted).
      await ts.setPerms(node, [{ domid: 0, perm: 'n' }]);
      const next = (w: typeof w2): Promise<string> =>
        Promise.race([
          w.next().then((r) => r.value?.path ?? 'end'),
          new Promise<string>((r) => setTimeout(() => r('none'), 500)),
        ]);
      expect(await next(wd)).toBe(node);
      expect(await next(w2)).toBe(node);
    } finally {
      first.close();
      second.close();
      await watcher.close();
    }
  });

  it("the first reply to a client's read of several leaves at once, the rest in one write", async () => {
    await ts.write(`${DIR}/a`, 'one');
    await ts.write(`${DIR}/b`, 'two');
    const raw = await RawConn.open(`${dir}/proxy.sock`);
    try {
      // Teach the cache the perms, so the run below is decided in step.
      raw.send(W.XS_READ, 1, 0, z(`${DIR}/a`));
      raw.send(W.XS_READ, 2, 0, z(`${DIR}/b`));
      await raw.until((m) => m.reqId === 2, 'the warm-up');
      // The proxy's writes to its clients: each a list of the replies it carried.
      const writes: string[][] = [];
      const write = net.Socket.prototype.write;
      const spy = vi.spyOn(net.Socket.prototype, 'write').mockImplementation(function (
        this: net.Socket,
        ...args: Parameters<typeof write>
      ) {
        const b = args[0];
        if (Buffer.isBuffer(b) && (b.includes('one') || b.includes('two')))
          writes.push(new W.MessageParser().push(b).map((m) => `${m.reqId}:${m.payload}`));
        return write.apply(this, args);
      });
      try {
        raw.sendRaw(
          Buffer.concat([
            W.encodeMessage(W.XS_READ, 10, 0, z(`${DIR}/a`)),
            W.encodeMessage(W.XS_READ, 11, 0, z(`${DIR}/b`)),
            W.encodeMessage(W.XS_READ, 12, 0, z(`${DIR}/a`)),
          ]),
        );
        await raw.until((m) => m.reqId === 12, 'the last reply');
      } finally {
        spy.mockRestore();
      }
      expect(writes).toEqual([['10:one'], ['11:two', '12:one']]);
    } finally {
      raw.close();
    }
  });

  it('a pipelined run of reads, rewrites and mkdirs: the bytes of a direct connection, events included', async () => {
    // A second server, the same tree: direct on one, through the proxy on the other.
    const other = new XenstoreServer({ quotas: { entrySize: ENTRY_SIZE } });
    await other.listen(`${dir}/xs2.sock`);
    const ts2 = await XenstoreClient.connect({ path: `${dir}/xs2.sock` });
    try {
      for (const node of ['a', 'b']) {
        await ts2.write(`${DIR}/${node}`, 'v0');
        await ts2.setPerms(`${DIR}/${node}`, dm);
      }
      await ts2.setPerms(DIR, dm);
      const proxy2 = new RestrictingProxy({
        domid: DOMID,
        upstream: { privileged: other },
        allowlist: [
          { entryId: 'dir', pattern: DIR, ops: ['watch'] },
          ...['a', 'b'].map((n) => ({
            entryId: n,
            pattern: `${DIR}/${n}`,
            ops: ['read', 'write', 'mkdir'] as const,
          })),
        ],
        log: () => undefined,
      });
      await proxy2.listen(`${dir}/proxy2.sock`);
      const a = `${DIR}/a`;
      const b = `${DIR}/b`;
      const burst: [number, string][] = [
        [W.XS_READ, z(a)],
        [W.XS_WRITE, `${a}\0one`],
        [W.XS_READ, z(a)],
        [W.XS_WRITE, `${b}\0two`],
        [W.XS_MKDIR, z(a)],
        [W.XS_GET_PERMS, z(b)],
        [W.XS_WRITE, `${a}\0${'x'.repeat(100)}`],
        [W.XS_WRITE, `${a}\0three`],
        [W.XS_DIRECTORY, z(a)],
        [W.XS_READ, z(b)],
      ];
      const transcript = async (path: string): Promise<string[]> => {
        const c = await RawConn.open(path);
        try {
          const seen: string[] = [];
          c.send(W.XS_WATCH, 1, 0, z(DIR, 'w'));
          await c.until((m) => m.type === W.XS_WATCH_EVENT, 'the initial event');
          // Twice: the first burst teaches the proxy's cache, the second runs from it.
          for (let round = 0; round < 2; round++) {
            const base = 10 + 100 * round;
            c.sendRaw(Buffer.concat(burst.map(([t, p], i) => W.encodeMessage(t, base + i, 0, p))));
            const got = await c.until((m) => m.reqId === base + burst.length - 1, 'the last reply');
            seen.push(...got.map(show));
          }
          return seen;
        } finally {
          c.close();
        }
      };
      const want = await transcript(`${dir}/dom5.sock`);
      const got = await transcript(`${dir}/proxy2.sock`);
      expect(got).toEqual(want);
      await proxy2.close();
    } finally {
      ts2.close();
      await other.close();
    }
  });
});
