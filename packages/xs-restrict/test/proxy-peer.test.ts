/**
 * RestrictingProxy in front of the real C xenstored of Xen 4.17 (through
 * ../shared/tools/xenstored-peer; domain sockets speak over real ring pages).
 * Two fresh daemons get the same fixture; domain 5 talks to one directly and
 * to the other through the proxy, and the transcripts must be identical.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { type ProxyLogRecord, type ProxyUpstream, RestrictingProxy } from '../src/proxy/proxy.js';
import * as W from '../src/wire/index.js';
import { type Peer, peerMissing, startPeer } from './helpers/peer.js';
import { RawConn, show, z } from './helpers/raw.js';
import {
  allowedScript,
  prepareFixture,
  refusedCases,
  requestsFor,
  runScript,
} from './proxy-fixture.js';

const missing = peerMissing();
const DOMID = 5;
/** Both upstream modes: the ring of domain 5 (`domN.sock`), or the privileged `socket` with the proxy deciding as 5. */
const MODES = ['domain', 'privileged'] as const;

for (const mode of MODES)
  describe.skipIf(missing !== undefined)(
    `RestrictingProxy on C xenstored 4.17, ${mode} upstream ${missing ? `(skipped: ${missing})` : ''}`,
    { timeout: 60000 },
    () => {
      const upstreamOf = (peer: Peer): ProxyUpstream =>
        mode === 'domain' ? peer.dom(DOMID) : { privileged: peer.dom0 };
      let a: Peer;
      let b: Peer;
      let dir: string;
      const logs: ProxyLogRecord[] = [];
      beforeAll(() => {
        logs.length = 0;
      });
      const cleanup: (() => void | Promise<void>)[] = [];

      beforeAll(async () => {
        dir = mkdtempSync('/tmp/xsrq-');
        a = startPeer([DOMID]);
        cleanup.push(() => a.stop());
        b = startPeer([DOMID]);
        cleanup.push(() => b.stop());
        for (const peer of [a, b]) {
          const dom0 = await XenstoreClient.connect({ path: peer.dom0 });
          await prepareFixture(dom0, DOMID);
          dom0.close();
        }
      });

      afterAll(async () => {
        for (const f of cleanup.reverse()) await f();
        rmSync(dir, { recursive: true, force: true });
      });

      async function proxy(): Promise<string> {
        const p = new RestrictingProxy({
          domid: DOMID,
          upstream: upstreamOf(b),
          log: (line) => logs.push(JSON.parse(line) as ProxyLogRecord),
        });
        const path = `${dir}/proxy.sock`;
        await p.listen(path);
        cleanup.push(() => p.close());
        return path;
      }

      it('gives the same replies and events as a direct domain-5 ring connection for every allowed catalogue request', async () => {
        const script = allowedScript(DOMID);
        const direct = await RawConn.open(a.dom(DOMID));
        const want = await runScript(direct, script);
        direct.close();
        const path = await proxy();
        const viaProxy = await RawConn.open(path);
        const got = await runScript(viaProxy, script);
        expect(got).toEqual(want);
        expect(want.filter((l) => l.includes('ERROR'))).toEqual([]);
        expect(want.some((l) => l.includes('"v:dm-physmap-size"'))).toBe(true);
        expect(logs).toEqual([]);

        // Then everything outside the allowlist, and the privileged operations: EACCES from the proxy.
        let reqId = 1000;
        for (const k of refusedCases(DOMID)) {
          for (const s of requestsFor(k.op, k.path, k.label)) {
            if (s.type === W.XS_UNWATCH) continue;
            const id = reqId++;
            viaProxy.send(s.type, id, 0, s.payload);
            const r = await viaProxy.until((m) => m.reqId === id, k.label);
            expect(`${k.label} ${show(r[r.length - 1] as W.XsMessage)}`).toBe(
              `${k.label} ERROR req=${id} tx=0 "EACCES\\u0000"`,
            );
          }
        }
        const priv: [number, string][] = [
          [W.XS_INTRODUCE, z('7', '4096', '1007')],
          [W.XS_RELEASE, z(String(DOMID))],
          [W.XS_SET_TARGET, z(String(DOMID), '0')],
          [W.XS_CONTROL, z('log', 'on')],
          [W.XS_RESUME, z(String(DOMID))],
        ];
        for (const [type, payload] of priv) {
          const id = reqId++;
          viaProxy.send(type, id, 0, payload);
          const r = await viaProxy.until((m) => m.reqId === id, W.XS_TYPE_NAMES[type]);
          expect(show(r[0] as W.XsMessage)).toBe(`ERROR req=${id} tx=0 "EACCES\\u0000"`);
        }
        expect(logs.length).toBe(reqId - 1000);
        expect(logs.every((l) => l.event === 'refused' && l.errno === 'EACCES')).toBe(true);
        viaProxy.close();
        await viaProxy.closedPromise;
      });

      it("ends a closed client's transactions and watches on the ring, which C xenstored would otherwise keep", async () => {
        const p = new RestrictingProxy({
          domid: DOMID,
          upstream: upstreamOf(b),
          log: (l) => logs.push(JSON.parse(l) as ProxyLogRecord),
        });
        const path = `${dir}/leak.sock`;
        await p.listen(path);
        cleanup.push(() => p.close());
        for (let round = 0; round < 3; round++) {
          const c = await RawConn.open(path);
          for (let i = 0; i < 10; i++) c.send(W.XS_TRANSACTION_START, i + 1, 0, z(''));
          for (let i = 0; i < 100; i++)
            c.send(
              W.XS_WATCH,
              100 + i,
              0,
              z(`/local/domain/${DOMID}/device/vkbd/0/state`, `r${round}-${i}`),
            );
          const got = await c.until(
            (m) => m.reqId === 199 && m.type !== W.XS_WATCH_EVENT,
            `round ${round}`,
          );
          const replies = got.filter((m) => m.type !== W.XS_WATCH_EVENT);
          // Every round gets the full quota again: nothing leaked from the previous client on the ring.
          expect(
            replies.filter((m) => m.type === W.XS_TRANSACTION_START).length,
            `round ${round}`,
          ).toBe(10);
          expect(replies.filter((m) => m.type === W.XS_WATCH).length, `round ${round}`).toBe(100);
          c.close();
          await c.closedPromise;
          // The next client may use the ring only once this one's undo replies have been read.
          for (let i = 0; i < 700 && (p.stats().length > 0 || p.drainingCount > 0); i++)
            await new Promise((r) => setTimeout(r, 10));
          expect(p.stats()).toEqual([]);
          expect(p.drainingCount).toBe(0);
        }
      });

      it('a client sending garbage is closed without a byte of it reaching the ring; the next client is served', async () => {
        const p = new RestrictingProxy({
          domid: DOMID,
          upstream: upstreamOf(b),
          log: (l) => logs.push(JSON.parse(l) as ProxyLogRecord),
        });
        const path = `${dir}/garbage.sock`;
        await p.listen(path);
        cleanup.push(() => p.close());
        const bad = await RawConn.open(path);
        // A valid READ followed by half a header and then a length over the limit.
        bad.send(W.XS_READ, 1, 0, z(`/local/domain/${DOMID}/console/type`));
        const hdr = Buffer.alloc(16);
        hdr.writeUInt32LE(W.XS_WRITE, 0);
        hdr.writeUInt32LE(2, 4);
        hdr.writeUInt32LE(0xffffffff, 12);
        bad.sendRaw(hdr);
        await bad.closedPromise;
        for (let i = 0; i < 700 && (p.stats().length > 0 || p.drainingCount > 0); i++)
          await new Promise((r) => setTimeout(r, 10));
        expect(
          logs.some(
            (l) => l.event === 'protocol-error' && l.detail?.includes('length field 4294967295'),
          ),
        ).toBe(true);
        const next = await RawConn.open(path);
        next.send(W.XS_READ, 9, 0, z(`/local/domain/${DOMID}/console/type`));
        const got = await next.until((m) => m.reqId === 9, 'a reply on the ring after the garbage');
        // The only message: the reply to this request (a stale reply to req 1 would come first).
        expect(got.map(show)).toEqual(['READ req=9 tx=0 "v:console-type"']);
        next.close();
        await next.closedPromise;
      });

      it('upstream restart: when C xenstored goes away the client is closed and the event logged', async () => {
        const peer = startPeer([DOMID]);
        cleanup.push(() => peer.stop());
        const d0 = await XenstoreClient.connect({ path: peer.dom0 });
        await prepareFixture(d0, DOMID);
        d0.close();
        const p = new RestrictingProxy({
          domid: DOMID,
          upstream: upstreamOf(peer),
          log: (l) => logs.push(JSON.parse(l) as ProxyLogRecord),
        });
        const path = `${dir}/restart.sock`;
        await p.listen(path);
        cleanup.push(() => p.close());
        const c = await XenstoreClient.connect({ path });
        const w = await c.watch(`/local/domain/${DOMID}/device/vkbd/0/state`);
        expect((await w.next()).value?.path).toBe(`/local/domain/${DOMID}/device/vkbd/0/state`);
        peer.stop();
        expect((await w.next()).done).toBe(true);
        await expect(c.readString(`/local/domain/${DOMID}/console/type`)).rejects.toMatchObject({
          code: 'ECONNRESET',
        });
        expect(logs.find((l) => l.event === 'upstream-closed')).toMatchObject({
          domid: DOMID,
          errno: 'EIO',
        });
        expect(p.stats()).toEqual([]);
      });
    },
  );
