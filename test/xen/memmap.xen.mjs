// memmap's PrivcmdForeignMemory and MapCache on the frames of a real Xen 4.17 HVM domain: bytes
// written through the mapcache are read back through an independent privcmd mapping.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { MapCache, PROT_READ, PROT_WRITE, PrivcmdForeignMemory } from '@xen-depriv/memmap';
import { PrivcmdHandle } from '@xen-depriv/privcmd-filter';
import { makeHvm } from './privcmd-filter.xen.mjs';

export default function (test) {
  test('a write through the mapcache is seen through an independent mapping of the same guest frames', () => {
    const domid = makeHvm(); // 256 populated frames, gfn 0..255
    const h1 = PrivcmdHandle.open({ domid, profile: null });
    const h2 = PrivcmdHandle.open({ domid, profile: null });
    try {
      const cache = new MapCache({
        foreignMemory: new PrivcmdForeignMemory({ handle: h1 }),
        domid,
        bucketShift: 16,
      });
      // A range across a 64 KiB bucket boundary: gpa 0xfff0 .. 0x10010.
      const gpa = 0xfff0;
      const pattern = Uint8Array.from({ length: 32 }, (_, i) => (i * 37 + domid) & 0xff);
      cache.withMapping(gpa, pattern.length, (bytes) => bytes.set(pattern));
      const other = new PrivcmdForeignMemory({ handle: h2 }).map(
        domid,
        [0xf, 0x10],
        PROT_READ | PROT_WRITE,
      );
      try {
        assert.deepEqual([...other.errors], [0, 0]);
        assert.deepEqual(Buffer.from(other.bytes.subarray(0xff0, 0x1010)), Buffer.from(pattern));
      } finally {
        other.unmap();
      }
      // A frame past the populated RAM reports its own error, as xenforeignmemory_map does.
      const beyond = new PrivcmdForeignMemory({ handle: h2 }).map(domid, [0x10, 0x5000], PROT_READ);
      const errors = [...beyond.errors];
      beyond.unmap();
      assert.equal(errors[0], 0);
      assert.ok(errors[1] < 0, `unpopulated gfn 0x5000 gives a negative errno, saw ${errors[1]}`);
      return { stats: cache.stats, unpopulatedFrameErrno: errors[1] };
    } finally {
      h1.close();
      h2.close();
      execFileSync('dmop-test', ['destroy', String(domid)]);
    }
  });
}
