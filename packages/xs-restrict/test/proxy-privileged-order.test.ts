/**
 * The privileged session over a socket holds a watch event back behind the reply before it until
 * the handlers that reply resolved have run. A client that answers the WATCH reply at once with a
 * request the proxy answers itself (EEXIST for the watch it has, or a refusal) must still get the
 * watch's first event first, as from xenstored, which queues that event right behind the reply.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { RestrictingProxy } from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';
import * as W from '../src/wire/index.js';
import { type Peer, peerMissing, startPeer } from './helpers/peer.js';

const DOMID = 5;
const DIR = `/local/domain/0/device-model/${DOMID}`;
const ROUNDS = 40;

const missing = peerMissing();
const daemons: [string, boolean][] = [
  ['the embedded server', false],
  ['C xenstored 4.17', true],
];

describe.each(daemons)('privileged upstream over a socket to %s: output order', (_name, c) => {
  const skip = c && missing !== undefined;
  const dir = mkdtempSync('/tmp/xspo-');
  let server: XenstoreServer | undefined;
  let peer: Peer | undefined;
  let dom0 = `${dir}/xs.sock`;
  let proxy: RestrictingProxy | undefined;
  beforeAll(async () => {
    if (skip) return;
    if (c) {
      peer = startPeer([DOMID]);
      dom0 = peer.dom0;
    } else {
      server = new XenstoreServer();
      await server.listen(dom0);
    }
    const ts = await XenstoreClient.connect({ path: dom0 });
    for (let i = 0; i < ROUNDS; i++) await ts.write(`${DIR}/n${i}`, 'v');
    await ts.setPerms(DIR, [
      { domid: 0, perm: 'n' },
      { domid: DOMID, perm: 'b' },
    ]);
    ts.close();
    proxy = new RestrictingProxy({
      domid: DOMID,
      upstream: { privileged: dom0 },
      allowlist: Array.from({ length: ROUNDS }, (_, i) => ({
        entryId: `n${i}`,
        pattern: `${DIR}/n${i}`,
        ops: ['watch'] as const,
      })),
      log: () => undefined,
    });
    await proxy.listen(`${dir}/p.sock`);
  }, 20000);
  afterAll(async () => {
    await proxy?.close();
    await server?.close();
    peer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(skip)(
    "a watch's first event reaches the client before the reply to its next request, even one the proxy answers itself",
    { timeout: 20000 },
    async () => {
      const sock = net.createConnection(`${dir}/p.sock`);
      await new Promise((r) => sock.once('connect', r));
      const parser = new W.MessageParser();
      const got: string[] = [];
      let round = 0;
      const watch = (i: number) =>
        sock.write(W.encodeMessage(W.XS_WATCH, 2 * i + 1, 0, `${DIR}/n${i}\0t${i}\0`));
      const done = new Promise<void>((resolve) => {
        sock.on('data', (d) => {
          for (const m of parser.push(d)) {
            const kind = W.XS_TYPE_NAMES[m.type] ?? String(m.type);
            got.push(`${kind} ${m.reqId} ${m.payload.toString('latin1').replaceAll('\0', '|')}`);
            if (m.type === W.XS_WATCH && m.reqId === 2 * round + 1) {
              // At once, in the same callback: the same watch again (EEXIST, the session's own
              // answer) and a request the proxy refuses (INTRODUCE, never a DM's).
              sock.write(
                Buffer.concat([
                  W.encodeMessage(W.XS_WATCH, 2 * round + 2, 0, `${DIR}/n${round}\0t${round}\0`),
                  W.encodeMessage(W.XS_INTRODUCE, 1000 + round, 0, '7\x001\x001\0'),
                ]),
              );
            }
            if (m.reqId === 1000 + round) {
              round++;
              if (round === ROUNDS) resolve();
              else watch(round);
            }
          }
        });
      });
      watch(0);
      await done;
      sock.destroy();
      const want: string[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        want.push(
          `WATCH ${2 * i + 1} OK|`,
          `WATCH_EVENT 0 ${DIR}/n${i}|t${i}|`,
          `ERROR ${2 * i + 2} EEXIST|`,
          `ERROR ${1000 + i} EACCES|`,
        );
      }
      expect(got).toEqual(want);
    },
  );
});
