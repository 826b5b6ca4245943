import { mkdtempSync, rmSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CATALOGUE } from '../src/catalogue.js';
import { XenstoreClient } from '../src/client.js';
import { readBeforeDrop } from '../src/read-before-drop.js';
import { XenstoreServer } from '../src/server/server.js';
import { peerMissing, startPeer } from './helpers/peer.js';

let dir: string;
let server: XenstoreServer;
let dom0: XenstoreClient;

beforeEach(async () => {
  dir = mkdtempSync('/tmp/xsrb-');
  server = new XenstoreServer();
  await server.listen(`${dir}/xs.sock`);
  dom0 = await XenstoreClient.connect({ path: `${dir}/xs.sock` });
});

afterEach(async () => {
  dom0.close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** What xen-hvm.c:xen_save_physmap leaves behind for a relocated VRAM region, plus the console libxl writes. */
async function seed(c: XenstoreClient, domid: number): Promise<void> {
  const pm = `/local/domain/0/device-model/${domid}/physmap`;
  await c.write(`${pm}/f0000000/start_addr`, 'fc000000');
  await c.write(`${pm}/f0000000/size`, '800000');
  await c.write(`${pm}/f0000000/name`, 'vga.vram');
  await c.write(`${pm}/1000000/start_addr`, 'f1000000');
  await c.write(`${pm}/1000000/size`, '10000');
  await c.write(`${pm}/abc/name`, 'no start_addr: skipped as QEMU skips it');
  await c.write(`/local/domain/${domid}/console/type`, 'ioemu');
  await c.write(`/local/domain/${domid}/console/output`, 'pty');
  await c.write(`/local/domain/${domid}/console/tty`, '/dev/pts/3');
}

describe('readBeforeDrop', () => {
  it('returns the physmap and console settings as typed values, exactly', async () => {
    await seed(dom0, 7);
    await seed(dom0, 8); // another guest's nodes must not leak in
    const got = await readBeforeDrop(dom0, 7);
    expect(got).toEqual({
      domid: 7,
      physmap: [
        { physOffset: 0x1000000n, startAddr: 0xf1000000n, size: 0x10000n, name: undefined },
        { physOffset: 0xf0000000n, startAddr: 0xfc000000n, size: 0x800000n, name: 'vga.vram' },
      ],
      console: { type: 'ioemu', output: 'pty' },
      values: [
        { entryId: 'dm-physmap-dir', path: '/local/domain/0/device-model/7/physmap', value: '' },
        {
          entryId: 'dm-physmap-start-addr',
          path: '/local/domain/0/device-model/7/physmap/f0000000/start_addr',
          value: 'fc000000',
        },
        {
          entryId: 'dm-physmap-start-addr',
          path: '/local/domain/0/device-model/7/physmap/1000000/start_addr',
          value: 'f1000000',
        },
        {
          entryId: 'dm-physmap-size',
          path: '/local/domain/0/device-model/7/physmap/f0000000/size',
          value: '800000',
        },
        {
          entryId: 'dm-physmap-size',
          path: '/local/domain/0/device-model/7/physmap/1000000/size',
          value: '10000',
        },
        {
          entryId: 'dm-physmap-name',
          path: '/local/domain/0/device-model/7/physmap/f0000000/name',
          value: 'vga.vram',
        },
        {
          entryId: 'dm-physmap-name',
          path: '/local/domain/0/device-model/7/physmap/abc/name',
          value: 'no start_addr: skipped as QEMU skips it',
        },
        { entryId: 'console-type', path: '/local/domain/7/console/type', value: 'ioemu' },
        { entryId: 'console-output', path: '/local/domain/7/console/output', value: 'pty' },
      ],
    });
    // Only entries the catalogue marks readBeforeDrop were read.
    const marked = new Set(CATALOGUE.filter((e) => e.readBeforeDrop).map((e) => e.id));
    expect(got.values.every((v) => marked.has(v.entryId))).toBe(true);
  });

  it('returns empty values for a fresh domain (nothing recorded yet)', async () => {
    expect(await readBeforeDrop(dom0, 9)).toEqual({
      domid: 9,
      values: [],
      physmap: [],
      console: {},
    });
  });

  it('rejects a physmap value QEMU could not have written, naming the node and the value', async () => {
    await dom0.write('/local/domain/0/device-model/7/physmap/f0000000/start_addr', '0xzz');
    await dom0.write('/local/domain/0/device-model/7/physmap/f0000000/size', '10');
    await expect(readBeforeDrop(dom0, 7)).rejects.toMatchObject({
      name: 'XenstoreError',
      code: 'EINVAL',
      message: 'physmap f0000000/start_addr: expected up to 16 hex digits, got "0xzz"',
    });
  });

  const missing = peerMissing();
  it.skipIf(missing !== undefined)(
    `reads the same from the real C xenstored 4.17 ${missing ? `(skipped: ${missing})` : ''}`,
    { timeout: 30000 },
    async () => {
      await seed(dom0, 7);
      const want = await readBeforeDrop(dom0, 7);
      const peer = startPeer([]);
      try {
        const c = await XenstoreClient.connect({ path: peer.dom0 });
        try {
          await seed(c, 7);
          expect(await readBeforeDrop(c, 7)).toEqual(want);
        } finally {
          c.close();
        }
      } finally {
        peer.stop();
      }
    },
  );
});
