/**
 * A hostile device model against RestrictingProxy (embedded server upstream):
 * garbage, oversized frames, floods of watches and transactions, a client that
 * never reads. The bound per client, stated in the README and checked here:
 * at most 2 x (16 + 4096) bytes of partial messages (`parserBytes`), at most
 * `maxInFlight` + 4096 unanswered requests (the most 16-byte requests one 64 KiB
 * read can hold before the proxy stops reading), at most `maxWatches` watches
 * and `maxTransactions` transactions, and reply bytes queued only up to
 * `maxOutputBytes` plus one upstream read before the client is closed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import {
  type ProxyLogRecord,
  proxyClientBufferBound,
  RestrictingProxy,
} from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';
import * as W from '../src/wire/index.js';
import { RawConn, show, z } from './helpers/raw.js';
import { prepareFixture } from './proxy-fixture.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let dir: string;
let server: XenstoreServer;
let proxies: RestrictingProxy[];
let conns: (RawConn | XenstoreClient)[];
let logs: ProxyLogRecord[];
let dom0: XenstoreClient;
/** Both upstream modes: a connection acting as the domain, or dom0's with the proxy deciding as it. */
const MODES = ['domain', 'privileged'] as const;
let mode: (typeof MODES)[number] = 'domain';

beforeEach(async () => {
  dir = mkdtempSync('/tmp/xsrh-');
  server = new XenstoreServer();
  await server.listen(`${dir}/xs.sock`);
  server.introduce(5);
  server.introduce(6);
  proxies = [];
  conns = [];
  logs = [];
  dom0 = await XenstoreClient.connect({ path: `${dir}/xs.sock` });
  conns.push(dom0);
  await prepareFixture(dom0, 5);
  await prepareFixture(dom0, 6);
});

afterEach(async () => {
  for (const c of conns) c.close();
  for (const p of proxies) await p.close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

async function proxy(
  domid: number,
  limits: Partial<RestrictingProxy['limits']> = {},
): Promise<[RestrictingProxy, string]> {
  const p = new RestrictingProxy({
    domid,
    upstream: mode === 'domain' ? server : { privileged: server },
    limits,
    log: (l) => logs.push(JSON.parse(l) as ProxyLogRecord),
  });
  proxies.push(p);
  const path = `${dir}/proxy${domid}-${proxies.length}.sock`;
  await p.listen(path);
  return [p, path];
}

async function raw(path: string): Promise<RawConn> {
  const c = await RawConn.open(path);
  conns.push(c);
  return c;
}

/** A well-behaved DM of domain 6 on its own proxy: one round trip. */
async function bystanderWorks(path: string): Promise<void> {
  const c = await XenstoreClient.connect({ path });
  conns.push(c);
  await c.write('/local/domain/0/device-model/6/physmap/f0000000/size', '42');
  expect(await c.readString('/local/domain/0/device-model/6/physmap/f0000000/size')).toBe('42');
  expect(await dom0.readString('/local/domain/5/console/type')).toBe('v:console-type');
}

for (const m of MODES)
  describe(`RestrictingProxy against a hostile client (${m} upstream)`, { timeout: 30000 }, () => {
    beforeEach(() => {
      mode = m;
    });

    it('closes only the client that sends a frame over 4096 bytes, and logs it', async () => {
      const [p, path] = await proxy(5);
      const [, other] = await proxy(6);
      const good = await raw(path);
      const bad = await raw(path);
      const before = server.connectionCount;
      const hdr = Buffer.alloc(16);
      hdr.writeUInt32LE(W.XS_WRITE, 0);
      hdr.writeUInt32LE(1, 4);
      hdr.writeUInt32LE(4097, 12);
      bad.sendRaw(hdr);
      await bad.closedPromise;
      expect(logs).toEqual([
        expect.objectContaining({
          event: 'protocol-error',
          domid: 5,
          detail: expect.stringContaining('length field 4097'),
        }),
      ]);
      good.send(W.XS_READ, 7, 0, z('/local/domain/5/console/type'));
      expect((await good.until((m) => m.reqId === 7)).map(show)).toEqual([
        'READ req=7 tx=0 "v:console-type"',
      ]);
      expect(p.stats().length).toBe(1);
      expect(server.connectionCount).toBe(before - 1);
      await bystanderWorks(other);
    });

    it('survives arbitrary bytes (property): the proxy, other clients and the upstream keep working', async () => {
      const [p, path] = await proxy(5);
      const [, other] = await proxy(6);
      const base = server.connectionCount;
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 600 }), async (bytes) => {
          const c = await RawConn.open(path);
          c.sendRaw(bytes);
          await sleep(3);
          for (const s of p.stats())
            expect(s.parserBytes).toBeLessThanOrEqual(proxyClientBufferBound());
          c.close();
          await c.closedPromise;
        }),
        { numRuns: 60 },
      );
      for (let i = 0; i < 500 && p.stats().length > 0; i++) await sleep(10);
      expect(p.stats()).toEqual([]);
      for (let i = 0; i < 500 && server.connectionCount > base; i++) await sleep(10);
      expect(server.connectionCount).toBe(base);
      await bystanderWorks(other);
    });

    it('caps watches at maxWatches with E2BIG, across the clients of one proxy', async () => {
      const [p, path] = await proxy(5);
      const [, other] = await proxy(6);
      const c = await raw(path);
      for (let i = 0; i < 300; i++)
        c.send(W.XS_WATCH, i + 1, 0, z(`/local/domain/5/device/vkbd/0/state`, `t${i}`));
      const got = await c.until(
        (m) => m.reqId === 300 && m.type !== W.XS_WATCH_EVENT,
        'the 300th reply',
      );
      const replies = got.filter((m) => m.type !== W.XS_WATCH_EVENT);
      expect(replies.filter((m) => m.type === W.XS_WATCH).length).toBe(128);
      expect(replies.slice(128).map((m) => m.payload.toString())).toEqual(
        Array(172).fill('E2BIG\0'),
      );
      expect(p.stats()[0]?.watches).toBe(128);
      const c2 = await raw(path);
      c2.send(W.XS_WATCH, 1, 0, z('/local/domain/5/device/vkbd/0/state', 'again'));
      expect(show((await c2.until((m) => m.reqId === 1))[0] as W.XsMessage)).toBe(
        'ERROR req=1 tx=0 "E2BIG\\u0000"',
      );
      expect(logs.filter((l) => l.rule === 'quota:watches').length).toBe(173);
      await bystanderWorks(other);
    });

    it('caps transactions at maxTransactions with ENOSPC, and a closed client leaves none behind', async () => {
      const [p, path] = await proxy(5);
      const c = await raw(path);
      for (let i = 0; i < 30; i++) c.send(W.XS_TRANSACTION_START, i + 1, 0, z(''));
      const got = await c.until((m) => m.reqId === 30);
      expect(got.filter((m) => m.type === W.XS_TRANSACTION_START).length).toBe(10);
      expect(got.slice(10).map(show)).toEqual(
        Array.from({ length: 20 }, (_, i) => `ERROR req=${i + 11} tx=0 "ENOSPC\\u0000"`),
      );
      expect(p.stats()[0]?.transactions).toBe(10);
      c.close();
      for (let i = 0; i < 500 && p.stats().length > 0; i++) await sleep(10);
      expect(p.stats()).toEqual([]);
    });

    it('refuses a payload that the relative-path rewrite would push over 4096 bytes with E2BIG', async () => {
      const [, path] = await proxy(5);
      const c = await raw(path);
      const rel = 'device-model/5/physmap/f0000000/name';
      const value = 'x'.repeat(W.XENSTORE_PAYLOAD_MAX - rel.length - 1);
      c.send(W.XS_WRITE, 1, 0, `${rel}\0${value}`);
      expect((await c.until((m) => m.reqId === 1)).map(show)).toEqual([
        'ERROR req=1 tx=0 "E2BIG\\u0000"',
      ]);
      expect(logs[0]).toMatchObject({ rule: 'payload-after-rewrite', errno: 'E2BIG' });
    });

    it('closes a client that does not read its replies, within the stated bound, and nobody else notices', async () => {
      const limits = { maxOutputBytes: 64 * 1024, maxInFlight: 16 };
      const [p, path] = await proxy(5, limits);
      const [, other] = await proxy(6);
      await dom0.write('/local/domain/0/device-model/5/physmap/f0000000/name', 'n'.repeat(2000));
      const c = await raw(path);
      // Stop reading: the kernel buffers fill, then the proxy's queue for this client grows.
      (c as unknown as { sock: { pause(): void } }).sock.pause();
      const req = W.encodeMessage(
        W.XS_READ,
        1,
        0,
        z('/local/domain/0/device-model/5/physmap/f0000000/name'),
      );
      let maxInFlight = 0;
      let maxParser = 0;
      let maxOut = 0;
      for (let round = 0; round < 400 && !c.closed; round++) {
        c.sendRaw(Buffer.concat(Array(64).fill(req)));
        await sleep(2);
        for (const s of p.stats()) {
          maxInFlight = Math.max(maxInFlight, s.inFlight);
          maxParser = Math.max(maxParser, s.parserBytes);
          maxOut = Math.max(maxOut, s.outputBytes);
        }
      }
      const rec = logs.find((l) => l.event === 'slow-reader');
      expect(rec).toMatchObject({ domid: 5, event: 'slow-reader' });
      // The proxy dropped its queue for the client (destroy, not end): once the client reads, it sees the close.
      (c as unknown as { sock: { resume(): void } }).sock.resume();
      await c.closedPromise;
      const queued = Number(/^(\d+) reply bytes/.exec(rec?.detail ?? '')?.[1]);
      expect(queued).toBeGreaterThan(limits.maxOutputBytes);
      expect(queued).toBeLessThanOrEqual(limits.maxOutputBytes + 65536);
      expect(maxInFlight).toBeLessThanOrEqual(limits.maxInFlight + 4096);
      expect(maxParser).toBeLessThanOrEqual(proxyClientBufferBound());
      expect(maxOut).toBeLessThanOrEqual(limits.maxOutputBytes + 65536);
      expect(p.stats()).toEqual([]);
      await bystanderWorks(other);
    });

    it('upstream restart: the client is closed with EIO for what was in flight and a log line; new clients reach the new daemon', async () => {
      // The proxy's upstream socket: domain 5's, or the privileged one; both daemons serve it in turn.
      const up = `${dir}/up5.sock`;
      const dom0Of = (name: string): string => (mode === 'domain' ? `${dir}/${name}.sock` : up);
      const first = new XenstoreServer();
      await first.listen(dom0Of('first'));
      if (mode === 'domain') await first.listenDomain(5, up);
      else first.introduce(5);
      const d0 = await XenstoreClient.connect({ path: dom0Of('first') });
      await prepareFixture(d0, 5);
      d0.close();
      const p = new RestrictingProxy({
        domid: 5,
        upstream: mode === 'domain' ? up : { privileged: up },
        log: (l) => logs.push(JSON.parse(l) as ProxyLogRecord),
      });
      proxies.push(p);
      await p.listen(`${dir}/restart.sock`);
      const c = await XenstoreClient.connect({ path: `${dir}/restart.sock` });
      conns.push(c);
      const w = await c.watch('/local/domain/5/device/vkbd/0/state');
      expect((await w.next()).value).toEqual({
        path: '/local/domain/5/device/vkbd/0/state',
        token: w.token,
      });
      await first.close();
      await expect(c.readString('/local/domain/5/console/type')).rejects.toMatchObject({
        code: expect.stringMatching(/^(ECONNRESET|EIO)$/),
      });
      expect(logs.find((l) => l.event === 'upstream-closed')).toMatchObject({
        domid: 5,
        errno: 'EIO',
      });
      expect(p.stats()).toEqual([]);

      const second = new XenstoreServer();
      await second.listen(dom0Of('second'));
      if (mode === 'domain') await second.listenDomain(5, up);
      else second.introduce(5);
      const d1 = await XenstoreClient.connect({ path: dom0Of('second') });
      await prepareFixture(d1, 5);
      d1.close();
      const again = await XenstoreClient.connect({ path: `${dir}/restart.sock` });
      conns.push(again);
      expect(await again.readString('/local/domain/5/console/type')).toBe('v:console-type');
      again.close();
      await second.close();
    });
  });
