/**
 * RestrictingProxy against the embedded XenstoreServer: two servers get the
 * same fixture; one is spoken to directly as domain N, the other through the
 * proxy, and the transcripts must be identical byte for byte for every
 * allowed request of the catalogue. Everything else gets EACCES from the
 * proxy, with one JSON log line each.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CATALOGUE } from '../src/catalogue.js';
import { XenstoreClient } from '../src/client.js';
import { type ProxyLogRecord, type ProxyUpstream, RestrictingProxy } from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';
import * as W from '../src/wire/index.js';
import { RawConn, show, z } from './helpers/raw.js';
import {
  allowedScript,
  prepareFixture,
  refusedCases,
  requestsFor,
  runScript,
} from './proxy-fixture.js';

const DOMID = 5;

let dir: string;
let servers: XenstoreServer[];
let proxies: RestrictingProxy[];
let conns: (RawConn | XenstoreClient)[];
let logs: ProxyLogRecord[];

beforeEach(() => {
  dir = mkdtempSync('/tmp/xsrp-');
  servers = [];
  proxies = [];
  conns = [];
  logs = [];
});

afterEach(async () => {
  for (const c of conns) c.close();
  for (const p of proxies) await p.close();
  for (const s of servers) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function server(name: string): Promise<{ s: XenstoreServer; dom0: string; domN: string }> {
  const s = new XenstoreServer();
  servers.push(s);
  const dom0 = `${dir}/${name}.sock`;
  const domN = `${dir}/${name}-dom${DOMID}.sock`;
  await s.listen(dom0);
  await s.listenDomain(DOMID, domN);
  const c = await XenstoreClient.connect({ path: dom0 });
  conns.push(c);
  await prepareFixture(c, DOMID);
  return { s, dom0, domN };
}

/** Both upstream modes: a connection acting as domain N, or dom0's with the proxy deciding as N. */
const MODES = ['domain', 'privileged'] as const;
type Mode = (typeof MODES)[number];
let mode: Mode = 'domain';

function upstreamOf(s: XenstoreServer): ProxyUpstream {
  return mode === 'domain' ? s : { privileged: s };
}

async function proxyFor(s: XenstoreServer, name: string, domid = DOMID): Promise<string> {
  const p = new RestrictingProxy({
    domid,
    upstream: upstreamOf(s),
    log: (line) => logs.push(JSON.parse(line) as ProxyLogRecord),
  });
  proxies.push(p);
  const path = `${dir}/${name}-proxy.sock`;
  await p.listen(path);
  return path;
}

async function raw(path: string): Promise<RawConn> {
  const c = await RawConn.open(path);
  conns.push(c);
  return c;
}

for (const m of MODES)
  describe(`RestrictingProxy on XenstoreServer (${m} upstream)`, { timeout: 30000 }, () => {
    beforeEach(() => {
      mode = m;
    });

    it('gives the same replies and events as a direct domain-N connection for every allowed catalogue request', async () => {
      const a = await server('a');
      const b = await server('b');
      const script = allowedScript(DOMID);
      const direct = await runScript(await raw(a.domN), script);
      const proxied = await runScript(await raw(await proxyFor(b.s, 'b')), script);
      expect(proxied).toEqual(direct);
      // The script really did something: reads return fixture values, writes succeed.
      expect(direct.some((l) => l.includes('"v:dm-physmap-size"'))).toBe(true);
      expect(direct.filter((l) => l.includes(' WRITE ')).length).toBeGreaterThan(10);
      expect(direct.filter((l) => l.includes('ERROR'))).toEqual([]);
      expect(logs).toEqual([]);
    });

    for (const e of CATALOGUE.filter((x) => x.deprivNeeds && x.ops.length > 0)) {
      it(`allows ${e.id} (${e.ops.join(', ')}) exactly as domain ${DOMID} is allowed`, async () => {
        const a = await server('a');
        const b = await server('b');
        const steps = e.ops.flatMap((op) =>
          requestsFor(
            op,
            e.pattern
              .replaceAll('{domid}', String(DOMID))
              .replace(/\{[^}]*\}/g, (m) =>
                m === '{hex}'
                  ? 'f0000000'
                  : m === '{type}'
                    ? 'vkbd'
                    : m === '{devid}'
                      ? '0'
                      : m === '{n}'
                        ? '1'
                        : (m.slice(1).split(',')[0] as string),
              ),
            `${e.id}:${op}`,
          ),
        );
        const direct = await runScript(await raw(a.domN), steps);
        const proxied = await runScript(await raw(await proxyFor(b.s, 'b')), steps);
        expect(proxied).toEqual(direct);
        expect(logs).toEqual([]);
      });
    }

    it('answers EACCES, with one log line each, for every operation a catalogue entry does not allow', async () => {
      const b = await server('b');
      const c = await raw(await proxyFor(b.s, 'b'));
      const cases = refusedCases(DOMID);
      expect(cases.length).toBeGreaterThan(100);
      let reqId = 1;
      for (const k of cases) {
        for (const s of requestsFor(k.op, k.path, k.label)) {
          if (s.type === W.XS_UNWATCH) continue; // UNWATCH only removes what WATCH registered
          const id = reqId++;
          c.send(s.type, id, 0, s.payload);
          const got = await c.until((m) => m.reqId === id, k.label);
          expect(`${k.label} ${show(got[got.length - 1] as W.XsMessage)}`).toBe(
            `${k.label} ERROR req=${id} tx=0 "EACCES\\u0000"`,
          );
          const rec = logs[logs.length - 1] as ProxyLogRecord;
          expect(rec).toMatchObject({
            event: 'refused',
            domid: DOMID,
            errno: 'EACCES',
            rule: `not-in-allowlist:${k.op}`,
            request: { reqId: id, txId: 0, path: k.path },
          });
        }
      }
      expect(logs.length).toBe(reqId - 1);
    });

    it('refuses every privileged operation with EACCES and names it in the log', async () => {
      const b = await server('b');
      const c = await raw(await proxyFor(b.s, 'b'));
      const cases: [number, string, string][] = [
        [W.XS_INTRODUCE, z('7', '4096', '1007'), 'INTRODUCE'],
        [W.XS_RELEASE, z('5'), 'RELEASE'],
        [W.XS_SET_TARGET, z('5', '0'), 'SET_TARGET'],
        [W.XS_CONTROL, z('log', 'on'), 'CONTROL'],
        [W.XS_RESUME, z('5'), 'RESUME'],
        [W.XS_IS_DOMAIN_INTRODUCED, z('0'), 'IS_DOMAIN_INTRODUCED'],
      ];
      for (const [i, [type, payload, name]] of cases.entries()) {
        c.send(type, 10 + i, 3, payload);
        const got = await c.until((m) => m.reqId === 10 + i, name);
        expect(show(got[0] as W.XsMessage)).toBe(`ERROR req=${10 + i} tx=3 "EACCES\\u0000"`);
        expect(logs[i]).toMatchObject({
          event: 'refused',
          rule: `privileged-op:${name}`,
          errno: 'EACCES',
          request: { type: name, reqId: 10 + i, txId: 3 },
        });
      }
      // Setting perms on another domain's node: no rule allows SET_PERMS at all.
      c.send(
        W.XS_SET_PERMS,
        40,
        0,
        z(`/local/domain/0/backend/vkbd/${DOMID}/0/state`, `b${DOMID}`),
      );
      const got = await c.until((m) => m.reqId === 40, 'SET_PERMS');
      expect(show(got[0] as W.XsMessage)).toBe('ERROR req=40 tx=0 "EACCES\\u0000"');
      // Special watch paths are not in the catalogue.
      c.send(W.XS_WATCH, 41, 0, z('@introduceDomain', 't'));
      const got2 = await c.until((m) => m.reqId === 41, 'WATCH @introduceDomain');
      expect(show(got2[0] as W.XsMessage)).toBe('ERROR req=41 tx=0 "EACCES\\u0000"');
    });

    it('writes a refusal to the DM before it formats the log line', async () => {
      const b = await server('b');
      const order: string[] = [];
      const p = new RestrictingProxy({
        domid: DOMID,
        upstream: upstreamOf(b.s),
        log: (line) => order.push(`log ${(JSON.parse(line) as ProxyLogRecord).event}`),
      });
      proxies.push(p);
      await p.listen(`${dir}/order-proxy.sock`);
      const c = await raw(`${dir}/order-proxy.sock`);
      const original = net.Socket.prototype.write;
      const write = vi.spyOn(net.Socket.prototype, 'write').mockImplementation(function (
        this: net.Socket,
        ...args: Parameters<net.Socket['write']>
      ) {
        const b0 = args[0];
        if (Buffer.isBuffer(b0) && b0.length >= 16 && b0.readUInt32LE(0) === W.XS_ERROR)
          order.push(`reply ${b0.readUInt32LE(4)}`);
        return original.apply(this, args);
      });
      try {
        c.send(W.XS_READ, 7, 0, z('/tool/x'));
        const got = await c.until((m) => m.reqId === 7, 'READ /tool/x');
        expect(show(got[0] as W.XsMessage)).toBe('ERROR req=7 tx=0 "EACCES\\u0000"');
      } finally {
        write.mockRestore();
      }
      expect(order).toEqual(['reply 7', 'log refused']);
    });

    it("binds {domid} to its own domain: another guest's nodes are refused", async () => {
      const b = await server('b');
      const c = await raw(await proxyFor(b.s, 'b'));
      c.send(W.XS_READ, 1, 0, z('/local/domain/0/device-model/6/physmap'));
      c.send(W.XS_WRITE, 2, 0, '/local/domain/6/console/tty\0x');
      const got = await c.until((m) => m.reqId === 2, 'two replies');
      expect(got.map(show)).toEqual([
        'ERROR req=1 tx=0 "EACCES\\u0000"',
        'ERROR req=2 tx=0 "EACCES\\u0000"',
      ]);
    });

    it('resolves relative paths against /local/domain/0 (the DM is a dom0 backend) and strips the prefix from their events', async () => {
      const b = await server('b');
      const c = await raw(await proxyFor(b.s, 'b'));
      c.send(W.XS_WRITE, 1, 0, `device-model/${DOMID}/state\0running`);
      c.send(W.XS_WATCH, 2, 0, z(`backend/vkbd/${DOMID}/0/state`, 'be'));
      const got = await c.until((m) => m.reqId === 2 && m.type === W.XS_WATCH);
      const ev = await c.until((m) => m.type === W.XS_WATCH_EVENT, 'the initial event');
      expect([...got, ...ev].map(show)).toEqual([
        'WRITE req=1 tx=0 "OK\\u0000"',
        'WATCH req=2 tx=0 "OK\\u0000"',
        `WATCH_EVENT req=0 tx=0 "backend/vkbd/${DOMID}/0/state\\u0000be\\u0000"`,
      ]);
      const dom0 = await XenstoreClient.connect({ path: `${dir}/b.sock` });
      conns.push(dom0);
      expect(await dom0.readString(`/local/domain/0/device-model/${DOMID}/state`)).toBe('running');
    });

    it('keeps transactions per client and ends them upstream when the client goes away', async () => {
      const b = await server('b');
      const path = await proxyFor(b.s, 'b');
      const p = proxies[0] as RestrictingProxy;
      const one = await XenstoreClient.connect({ path });
      const two = await XenstoreClient.connect({ path });
      conns.push(one, two);
      const tx = await one.transactionStart();
      const node = `/local/domain/0/device-model/${DOMID}/physmap/f0000000/size`;
      await one.write(node, '1000', { tx });
      // The other client does not see the uncommitted write, and the tx id means nothing on its connection.
      expect(await two.readString(node)).toBe('v:dm-physmap-size');
      await expect(two.transactionEnd(tx, true)).rejects.toMatchObject({ code: 'ENOENT' });
      expect(
        p
          .stats()
          .map((s) => s.transactions)
          .sort(),
      ).toEqual([0, 1]);
      await one.transactionEnd(tx, true);
      expect(await two.readString(node)).toBe('1000');
      expect(p.stats().map((s) => s.transactions)).toEqual([0, 0]);
    });

    it('refuses a client beyond maxClients with a log line, and RESET_WATCHES / relative UNWATCH keep the books right', async () => {
      const b = await server('b');
      const p = new RestrictingProxy({
        domid: DOMID,
        upstream: upstreamOf(b.s),
        limits: { maxClients: 1 },
        log: (l) => logs.push(JSON.parse(l) as ProxyLogRecord),
      });
      proxies.push(p);
      await p.listen(`${dir}/one.sock`);
      const first = await raw(`${dir}/one.sock`);
      const second = await raw(`${dir}/one.sock`);
      await second.closedPromise;
      expect(logs).toEqual([
        expect.objectContaining({ event: 'too-many-clients', detail: 'limit 1' }),
      ]);
      first.send(W.XS_WATCH, 1, 0, z(`backend/vkbd/${DOMID}/0/state`, 'a'));
      first.send(W.XS_WATCH, 2, 0, z(`/local/domain/${DOMID}/device/vkbd/0/state`, 'b'));
      await first.until((m) => m.reqId === 2 && m.type === W.XS_WATCH);
      expect(p.stats()[0]?.watches).toBe(2);
      first.send(W.XS_UNWATCH, 3, 0, z(`backend/vkbd/${DOMID}/0/state`, 'a'));
      expect(show((await first.until((m) => m.reqId === 3)).pop() as W.XsMessage)).toBe(
        'UNWATCH req=3 tx=0 "OK\\u0000"',
      );
      expect(p.stats()[0]?.watches).toBe(1);
      first.send(W.XS_TRANSACTION_START, 4, 0, z(''));
      first.send(W.XS_RESET_WATCHES, 5, 0, z(''));
      const got = (await first.until((m) => m.reqId === 5)).filter(
        (m) => m.type !== W.XS_WATCH_EVENT,
      );
      expect(got.map(show)).toEqual([
        'TRANSACTION_START req=4 tx=0 "1\\u0000"',
        'RESET_WATCHES req=5 tx=0 "OK\\u0000"',
      ]);
      expect(p.stats()[0]).toMatchObject({ watches: 0, transactions: 0 });
    });
  });
