/**
 * The privileged session's perms cache: a read the cache can decide costs one
 * daemon request, and every change the toolstack makes (perms, removal and
 * re-creation, an ancestor's removal, a domain's release) is seen by the next
 * read, over the in-process link and over a dom0 socket.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { RestrictingProxy } from '../src/proxy/proxy.js';
import type { XenstoreConnection } from '../src/server/connection.js';
import { XenstoreServer } from '../src/server/server.js';
import type * as W from '../src/wire/index.js';
import { type Peer, peerMissing, startPeer } from './helpers/peer.js';

const DOMID = 5;
const DIR = `/local/domain/0/device-model/${DOMID}`;
const NODE = `${DIR}/physmap/f0000000/size`;
const dm: W.XsPerm[] = [
  { domid: 0, perm: 'n' },
  { domid: DOMID, perm: 'b' },
];

/** Counts the requests of dom0 connections. */
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

const missing = peerMissing();

for (const mode of ['in process', 'dom0 socket', 'C xenstored 4.17'] as const) {
  const skip = mode === 'C xenstored 4.17' && missing !== undefined;
  describe.skipIf(skip)(`privileged perms cache (${mode})`, { timeout: 20000 }, () => {
    let dir: string;
    let peer: Peer | undefined;
    let server: CountingServer;
    let proxy: RestrictingProxy;
    let ts: XenstoreClient;
    let qemu: XenstoreClient;
    beforeEach(async () => {
      dir = mkdtempSync('/tmp/xspc-');
      server = new CountingServer();
      await server.listen(`${dir}/xs.sock`);
      // Against C xenstored the daemon is the peer's (domain 5 introduced over a ring, unused).
      peer = mode === 'C xenstored 4.17' ? startPeer([DOMID]) : undefined;
      const dom0 = peer?.dom0 ?? `${dir}/xs.sock`;
      ts = await XenstoreClient.connect({ path: dom0 });
      await ts.write(NODE, 'v0');
      for (const p of [DIR, `${DIR}/physmap`, `${DIR}/physmap/f0000000`, NODE])
        await ts.setPerms(p, dm);
      proxy = new RestrictingProxy({
        domid: DOMID,
        upstream: { privileged: mode === 'in process' ? server : dom0 },
        log: () => undefined,
      });
      await proxy.listen(`${dir}/proxy.sock`);
      qemu = await XenstoreClient.connect({ path: `${dir}/proxy.sock` });
    });
    afterEach(async () => {
      qemu.close();
      ts.close();
      await proxy.close();
      await server.close();
      peer?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it.skipIf(mode === 'C xenstored 4.17')(
      'a read the cache decides is one daemon request',
      async () => {
        expect((await qemu.read(NODE)).toString()).toBe('v0');
        const before = server.dom0Requests;
        expect((await qemu.read(NODE)).toString()).toBe('v0');
        expect(server.dom0Requests - before).toBe(1);
      },
    );

    it('sees every toolstack change at the next read', async () => {
      await qemu.read(NODE);
      await ts.setPerms(NODE, [{ domid: 0, perm: 'n' }]);
      expect(await code(qemu.read(NODE))).toBe('EACCES');
      await ts.setPerms(NODE, dm);
      expect((await qemu.read(NODE)).toString()).toBe('v0');
      // Removed and created again: the new node inherits its parent's perms (N may read them).
      await ts.rm(NODE);
      expect(await code(qemu.read(NODE))).toBe('ENOENT');
      await ts.setPerms(`${DIR}/physmap/f0000000`, [{ domid: 0, perm: 'n' }]);
      await ts.write(NODE, 'v1');
      expect(await code(qemu.read(NODE))).toBe('EACCES');
      await ts.setPerms(NODE, dm);
      expect((await qemu.read(NODE)).toString()).toBe('v1');
      // An ancestor removed and the subtree created again by the toolstack with other perms.
      await ts.rm(`${DIR}/physmap`);
      await ts.write(`${DIR}/physmap/f0000000/size`, 'v2');
      await ts.setPerms(`${DIR}/physmap/f0000000/size`, [{ domid: 0, perm: 'n' }]);
      expect(await code(qemu.read(NODE))).toBe('EACCES');
      for (const p of [`${DIR}/physmap`, `${DIR}/physmap/f0000000`, NODE]) await ts.setPerms(p, dm);
      expect((await qemu.read(NODE)).toString()).toBe('v2');
      await qemu.read(NODE);
      // The same, the new node inheriting its perms: only the ancestor's removal names it.
      await ts.setPerms(DIR, [{ domid: 0, perm: 'n' }]);
      await ts.setPerms(DIR, dm);
      await qemu.read(NODE);
      await ts.rm(`${DIR}/physmap`);
      await ts.mkdir(`${DIR}/physmap`);
      await ts.setPerms(`${DIR}/physmap`, [{ domid: 0, perm: 'n' }]);
      await ts.write(NODE, 'v3');
      expect(await code(qemu.read(NODE))).toBe('EACCES');
    });

    it('a change racing a read: the answer is the one before or the one after, never a mix', async () => {
      await qemu.read(NODE);
      for (let i = 0; i < 50; i++) {
        const deny = i % 2 === 0;
        const [got] = await Promise.all([
          code(qemu.read(NODE)),
          ts.setPerms(NODE, deny ? [{ domid: 0, perm: 'n' }] : dm),
        ]);
        expect(['ok', 'EACCES']).toContain(got);
        // Once the toolstack's change is answered, the DM's next read must see it.
        expect(await code(qemu.read(NODE))).toBe(deny ? 'EACCES' : 'ok');
      }
    });

    it('pipelined reads racing a change: every answer after the first refusal is a refusal too', async () => {
      await qemu.read(NODE);
      await qemu.read(NODE);
      for (let i = 0; i < 20; i++) {
        await ts.setPerms(NODE, dm);
        await qemu.read(NODE);
        const reads = Array.from({ length: 16 }, () => code(qemu.read(NODE)));
        const change = ts.setPerms(NODE, [{ domid: 0, perm: 'n' }]);
        const more = Array.from({ length: 16 }, () => code(qemu.read(NODE)));
        const got = await Promise.all([...reads, ...more]);
        await change;
        const first = got.indexOf('EACCES');
        if (first >= 0) expect(got.slice(first).every((g) => g === 'EACCES')).toBe(true);
        expect(got.slice(0, first < 0 ? got.length : first).every((g) => g === 'ok')).toBe(true);
        expect(await code(qemu.read(NODE))).toBe('EACCES');
      }
    });
  });
}
