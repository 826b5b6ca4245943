import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkImage, reservePort } from '../src/service/devices.js';

const dir = mkdtempSync(join(tmpdir(), 'xd-devices-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A qcow2 v3 header (QEMU's docs/interop/qcow2.txt): magic, version, backing offset and size. */
function qcow2(backing: string | null): Buffer {
  const h = Buffer.alloc(512);
  h.writeUInt32BE(0x514649fb, 0);
  h.writeUInt32BE(3, 4);
  if (backing !== null) {
    h.writeBigUInt64BE(0x100n, 8);
    h.writeUInt32BE(Buffer.byteLength(backing), 16);
    h.write(backing, 0x100);
  }
  return h;
}

function withImage(bytes: Buffer, fn: (path: string, fd: number) => void): void {
  const path = join(dir, `img-${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, bytes);
  const fd = openSync(path, 'r');
  try {
    fn(path, fd);
  } finally {
    closeSync(fd);
  }
}

describe('checkImage: what QEMU would open by path is refused, naming the file', () => {
  it('a qcow2 image with a backing file is refused with both names', () => {
    withImage(qcow2('/srv/base.qcow2'), (path, fd) => {
      expect(() => checkImage({ path, format: 'qcow2' }, fd)).toThrow(
        `disk ${path}: a qcow2 image with a backing file ("/srv/base.qcow2") is refused`,
      );
    });
  });
  it('a qcow2 image without one, and any raw image, pass', () => {
    withImage(qcow2(null), (path, fd) => {
      expect(() => checkImage({ path, format: 'qcow2' }, fd)).not.toThrow();
    });
    withImage(qcow2('/srv/base.qcow2'), (path, fd) => {
      // Raw: the bytes are the guest's, whatever they look like.
      expect(() => checkImage({ path, format: 'raw' }, fd)).not.toThrow();
    });
  });
  it('format qcow2 on a file that is not one is refused', () => {
    withImage(Buffer.from('not a qcow2 image at all, just text\n'), (path, fd) => {
      expect(() => checkImage({ path, format: 'qcow2' }, fd)).toThrow(
        `disk ${path}: format qcow2, but it has no qcow2 header`,
      );
    });
  });
});

describe("reservePort: the VNC port, bound before the DM's plan", () => {
  it('takes the asked port when free; with findUnused the next free one; without, fails naming it', async () => {
    // A port the kernel picks, then held by another listener.
    const holder = createServer();
    await new Promise<void>((r) => holder.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    const taken = (holder.address() as { port: number }).port;
    try {
      const next = await reservePort('127.0.0.1', taken, true);
      expect(next.port).toBeGreaterThan(taken);
      expect(next.port).toBeLessThanOrEqual(taken + 99);
      // Connections wait (paused) until the bridge serves them.
      const c = connect(next.port, '127.0.0.1');
      await new Promise<void>((r) => c.on('connect', () => r()));
      c.destroy();
      next.server.close();
      await expect(reservePort('127.0.0.1', taken, false)).rejects.toThrow(
        `listen 127.0.0.1:${taken}: listen EADDRINUSE`,
      );
    } finally {
      holder.close();
    }
  });
});
