import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as sys from '@xen-depriv/sys';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  ForeignMemoryError,
  MapCache,
  MapCacheError,
  MemfdForeignMemory,
  Physmap,
  PROT_READ,
} from '../src/index.js';

// The harness's limits on a busy 2-core CI machine (property runs, gcc, child processes), not
// performance bounds: no assertion here depends on time.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

/** The built package, for the child process (built by `tsup` before tests run). */
const DIST = resolve(__dirname, '../dist/index.js');
const MiB = 0x10_0000;
const GiB = 0x4000_0000;
const DOMID = 9;

/** A byte that depends on its guest address, so a read at the wrong gpa shows. */
function patternAt(gpa: number): number {
  return (Math.imul(gpa ^ (gpa / 2 ** 32), 0x9e3779b1) >>> 24) & 0xff;
}

/** -1 when `view` holds the pattern of [gpa, gpa + length), else the first wrong offset (cheap on MiBs). */
function patternMismatch(view: Uint8Array, gpa: number, length: number): number {
  if (view.byteLength !== length) return view.byteLength;
  for (let i = 0; i < length; i++) if (view[i] !== patternAt(gpa + i)) return i;
  return -1;
}

function pattern(gpa: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = patternAt(gpa + i);
  return out;
}

describe.skipIf(!sys.isAvailable())(
  'MemfdForeignMemory (real mmap of a memfd through @xen-depriv/sys)',
  () => {
    // 4 MiB of RAM above the hole: lowmem ends at HVM_BELOW_4G_RAM_END, highmem starts at 4 GiB.
    const physmap = new Physmap({ ramBytes: 0xf000_0000 + 4 * MiB });
    let fm: MemfdForeignMemory;
    let cache: MapCache;

    beforeEach(() => {
      fm = new MemfdForeignMemory({
        domid: DOMID,
        frames: physmap.end / 4096,
        isPopulated: (gfn) => physmap.isPopulated(gfn),
      });
      cache = new MapCache({ foreignMemory: fm, domid: DOMID, maxBytes: 8 * MiB });
    });
    afterEach(() => {
      cache.close();
      fm.close();
    });

    it('a write through a mapcache mapping is visible through an independent mapping of the same frame and through pread', () => {
      const gpa = 0x12_3456;
      const view = cache.translate(gpa, 16, true);
      view.set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
      const other = fm.map(DOMID, [Math.floor(gpa / 4096)], PROT_READ);
      expect(other.bytes.buffer).not.toBe(view.buffer);
      expect(Array.from(other.bytes.subarray(gpa % 4096, (gpa % 4096) + 16))).toEqual([
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
      ]);
      expect(Array.from(fm.read(gpa, 4))).toEqual([1, 2, 3, 4]);
      // And the other way: the guest (pwrite) changes what the locked mapping shows.
      fm.write(gpa + 15, Uint8Array.of(0xee));
      expect(view[15]).toBe(0xee);
      other.unmap();
      expect(other.bytes.byteLength).toBe(0);
      expect(() => other.unmap()).toThrowError(ForeignMemoryError);
      cache.unlock(view);
    });

    it('reads a guest-RAM pattern written before mapping at the right gpa, across bucket boundaries and across the 4 GiB hole', () => {
      const ranges = [
        [0, 0xa0000],
        [0x1f_f000, 0x2000], // straddles the 2 MiB bucket boundary
        [0xefe0_0000, 0x20_0000], // the last 2 MiB of RAM below the hole
        [4 * GiB, 4 * MiB], // all RAM above the hole
      ] as const;
      for (const [gpa, length] of ranges) fm.write(gpa, pattern(gpa, length));
      for (const [gpa, length] of ranges) {
        // Every 1 MiB bucket of the range, plus requests that straddle bucket boundaries.
        for (let at = gpa; at < gpa + length; at += MiB) {
          const size = Math.min(MiB, gpa + length - at);
          expect({ at, mismatch: patternMismatch(cache.translate(at, size), at, size) }).toEqual({
            at,
            mismatch: -1,
          });
        }
        if (length > MiB) {
          const straddle = gpa + MiB - 0x800;
          expect(patternMismatch(cache.translate(straddle, 0x1000), straddle, 0x1000)).toBe(-1);
        }
      }
      expect(patternMismatch(cache.translate(0x1f_f800, 0x1000), 0x1f_f800, 0x1000)).toBe(-1);
      // The first highmem byte lives at memfd offset 4 GiB: not folded onto lowmem.
      expect(cache.translate(4 * GiB, 1)[0]).toBe(patternAt(4 * GiB));
      expect(cache.translate(4 * GiB - 0x1000_0000 - 1, 1)[0]).toBe(patternAt(0xefff_ffff));
      expect(cache.stats.mappedBytes).toBeLessThanOrEqual(8 * MiB);
      expect(cache.stats.evictions).toBeGreaterThan(0);
    });

    it('a range reaching into the MMIO hole or the VGA window is BAD_FRAME with the gfn and -EINVAL', () => {
      const caught = (fn: () => unknown) => {
        try {
          fn();
        } catch (e) {
          return e;
        }
        return undefined;
      };
      const intoHole = caught(() => cache.translate(0xefff_f000, 0x2000));
      expect(intoHole).toBeInstanceOf(MapCacheError);
      expect(intoHole).toMatchObject({
        code: 'BAD_FRAME',
        gfn: 0xf0000,
        frameError: -22,
        message:
          'MapCache.translate: expected every frame of [0xeffff000, +0x2000) mapped, gfn 0xf0000 failed with -22',
      });
      // The bucket of the VGA window stays cached (as QEMU keeps it): its RAM part is then a hit.
      fm.write(0x9_f000, pattern(0x9_f000, 0x1000));
      expect(caught(() => cache.translate(0x9_f000, 0x2000))).toMatchObject({
        code: 'BAD_FRAME',
        gfn: 0xa0,
      });
      const before = cache.stats;
      expect(patternMismatch(cache.translate(0x9_f000, 0x1000), 0x9_f000, 0x1000)).toBe(-1);
      expect(cache.stats.hits).toBe(before.hits + 1);
      expect(cache.stats.misses).toBe(before.misses);
    });

    it('frames past the guest read as zeroes without SIGBUS, reported per frame', () => {
      const last = physmap.end / 4096 - 1;
      const m = fm.map(DOMID, [last, last + 1, last + 2], PROT_READ);
      expect(Array.from(m.errors)).toEqual([0, -22, -22]);
      expect(m.bytes[2 * 4096 + 5]).toBe(0);
      expect(fm.fileBytes).toBe(physmap.end + 2 * 4096);
      m.unmap();
    });

    it('refuses non-consecutive frames, another domid, bad prot and out-of-guest pread with typed errors', () => {
      expect(() => fm.map(DOMID, [1, 3], PROT_READ)).toThrowError(
        expect.objectContaining({
          code: 'NONCONTIGUOUS',
          message: 'MemfdForeignMemory.map: expected consecutive gfns, got 1 then 3 at index 1',
        }),
      );
      expect(() => fm.map(DOMID + 1, [1], PROT_READ)).toThrowError(
        expect.objectContaining({ code: 'WRONG_DOMAIN', errno: 1 }),
      );
      expect(() => fm.map(DOMID, [1], 4)).toThrowError(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
      expect(() => fm.map(DOMID, [], PROT_READ)).toThrowError(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
      expect(() => fm.read(physmap.end - 1, 2)).toThrowError(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
      expect(fm.live).toBe(0);
    });

    it.skipIf(!existsSync(DIST))(
      'a PROT_READ mapping is read-only in the kernel: a write kills the writer with SIGSEGV (child process)',
      () => {
        const script = [
          `import { MemfdForeignMemory, PROT_READ } from ${JSON.stringify(pathToFileURL(DIST).href)};`,
          'const fm = new MemfdForeignMemory({ domid: 1, frames: 4 });',
          'fm.write(0x1000, Uint8Array.of(42));',
          'const m = fm.map(1, [1], PROT_READ);',
          "process.stdout.write('read ' + m.bytes[0] + '\\n');",
          'm.bytes[0] = 1;',
          "process.stdout.write('wrote\\n');",
        ].join('\n');
        // No core file, whatever the host's core limit: the crash is the expected outcome.
        const r = spawnSync(
          'sh',
          ['-c', 'ulimit -c 0 && exec "$0" --input-type=module -e "$1"', process.execPath, script],
          {
            cwd: tmpdir(),
            encoding: 'utf8',
            timeout: 60_000,
          },
        );
        expect({ stdout: r.stdout, signal: r.signal }).toEqual({
          stdout: 'read 42\n',
          signal: 'SIGSEGV',
        });
      },
    );
  },
);
