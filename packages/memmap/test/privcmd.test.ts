import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  IOCTL_PRIVCMD_MMAPBATCH_V2 as FILTER_MMAPBATCH_V2,
  IOCTL_PRIVCMD_MMAPBATCH_V2,
} from '@xen-depriv/dmop-abi';
import { PrivcmdHandle } from '@xen-depriv/privcmd-filter';
import * as sys from '@xen-depriv/sys';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { MapCache, PrivcmdForeignMemory, type PrivcmdMapIo } from '../src/index.js';

// The harness's limits on a busy 2-core CI machine (property runs, gcc, child processes), not
// performance bounds: no assertion here depends on time.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const run = promisify(execFile);
const ENOENT = 2;
const EFAULT = 14;
const hasCapture =
  spawnSync(
    'sh',
    [
      '-c',
      'command -v gcc && test -e /usr/include/xenforeignmemory.h && test -e /usr/include/xen/sys/privcmd.h',
    ],
    {
      stdio: 'ignore',
    },
  ).status === 0;

type Line = Record<string, unknown>;

/** Golden vectors captured from Debian's libraries by tools/dmop-capture (owned by dmop-abi). */
const DMOP_VECTORS = join(__dirname, '../../dmop-abi/test/vectors/vectors.json');
interface GoldenVector {
  fn: string;
  args: { domid: number; prot: number; arr: string[] };
  ioctls: {
    request: number;
    arg: string;
    dom: number;
    num: number;
    arr: string;
    replyErr: string;
  }[];
  outputs: { err: number[] };
}

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/**
 * An io that answers MMAPBATCH_V2 as fm-capture.c's shim does for each scenario, and records
 * the same JSON lines the C capture prints for Debian's libxenforeignmemory.
 */
function recordingIo(scenario: 'plain' | 'paged'): {
  io: PrivcmdMapIo;
  lines: Line[];
  unmapped: ArrayBuffer[];
} {
  const lines: Line[] = [];
  const unmapped: ArrayBuffer[] = [];
  let mapping: ArrayBuffer | undefined;
  let calls = 0;
  const io: PrivcmdMapIo = {
    mmap(_fd, length, prot, flags, offset) {
      mapping = new ArrayBuffer(length);
      lines.push({ call: 'mmap', addrNull: true, length, prot, flags, offset });
      return mapping;
    },
    munmap(m) {
      unmapped.push(m);
    },
    ioctl(_fd, request, arg, pointers) {
      const p = new Map((pointers ?? []).map((x) => [x.offset, x.buffer]));
      const addr = p.get(8) as Uint8Array;
      const arr = p.get(16) as Uint8Array;
      const errBytes = p.get(24) as Uint8Array;
      expect(addr.buffer).toBe(mapping);
      const line: Line = {
        call: 'ioctl',
        request,
        arg: hex(arg),
        addrOffset: addr.byteOffset,
        arr: hex(arr),
      };
      const err = new Int32Array(errBytes.buffer, errBytes.byteOffset, errBytes.byteLength / 4);
      calls++;
      let ret = 0;
      let errno = 0;
      if (scenario === 'plain') err.set([0, -EFAULT, -ENOENT]);
      else if (calls === 1) {
        err.set([0, -ENOENT, -ENOENT, 0]);
        [ret, errno] = [-1, ENOENT];
      } else if (calls === 2) {
        err.set([0, -ENOENT]);
        [ret, errno] = [-1, ENOENT];
      } else err.set([0]);
      lines.push({ ...line, ret, errno });
      if (ret < 0) throw new sys.SysError('ioctl', errno);
      return ret;
    },
  };
  return { io, lines, unmapped };
}

describe('PrivcmdForeignMemory', () => {
  it('uses the ioctl number of Linux privcmd.h, as privcmd-filter has it', () => {
    expect(IOCTL_PRIVCMD_MMAPBATCH_V2).toBe(FILTER_MMAPBATCH_V2);
    expect(IOCTL_PRIVCMD_MMAPBATCH_V2).toBe(0x00205004);
  });

  describe.skipIf(!hasCapture)(
    "bytes equal Debian's libxenforeignmemory (test/golden/fm-capture.c)",
    () => {
      let dir: string;
      let bin: string;
      beforeAll(async () => {
        dir = mkdtempSync(join(tmpdir(), 'memmap-fm-'));
        bin = join(dir, 'fm-capture');
        await run('gcc', [
          '-O1',
          '-Wall',
          '-o',
          bin,
          join(__dirname, 'golden/fm-capture.c'),
          '-Wl,--export-dynamic',
          '-lxenforeignmemory',
        ]);
      });
      afterAll(() => rmSync(dir, { recursive: true, force: true }));

      const capture = async (scenario: string): Promise<Line[]> => {
        const { stdout } = await run(bin, [scenario]);
        return stdout
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Line);
      };

      it('plain map: same mmap, same MMAPBATCH_V2 struct and gfn array, per-frame errors reported as the library does', async () => {
        const golden = await capture('plain');
        const { io, lines } = recordingIo('plain');
        const fm = new PrivcmdForeignMemory({ handle: { fd: 99, domid: 32751 }, io });
        const m = fm.map(32751, [0x123456789, 0x12345, 0xfffffffff], 3);
        lines.push({ call: 'result', mapped: true, errno: 0, err: Array.from(m.errors) });
        expect(lines).toEqual(golden);
        expect(golden[1]).toMatchObject({
          request: 0x00205004,
          arg: `03000000ef7f${'00'.repeat(26)}`,
        });
      });

      it('paged-out frames: the same sequence of retries as retry_paged, ending with every frame mapped', async () => {
        const golden = await capture('paged');
        const { io, lines } = recordingIo('paged');
        const retries: number[] = [];
        const fm = new PrivcmdForeignMemory({
          handle: { fd: 99, domid: 32751 },
          io,
          onPagedRetry: (n) => retries.push(n),
        });
        const m = fm.map(32751, [0x123456789, 0x12345, 0xfffffffff, 0x1000], 3);
        lines.push({ call: 'result', mapped: true, errno: 0, err: Array.from(m.errors) });
        expect(lines).toEqual(golden);
        expect(golden.filter((l) => l.call === 'ioctl').map((l) => l.addrOffset)).toEqual([
          0, 4096, 8192,
        ]);
        expect(retries).toEqual([1, 2]);
      });
    },
  );

  it.skipIf(!existsSync(DMOP_VECTORS))(
    'xenforeignmemory_map golden vector of the dmop-abi capture harness: same ioctl, struct, pfn array and per-frame errors',
    () => {
      const { vectors } = JSON.parse(readFileSync(DMOP_VECTORS, 'utf8')) as {
        vectors: GoldenVector[];
      };
      const v = vectors.find((x) => x.fn === 'xenforeignmemory_map');
      expect(v).toBeDefined();
      const golden = v as GoldenVector;
      const replies = golden.ioctls.map((c) => c.replyErr);
      const seen: { request: number; arg: string; num: number; dom: number; arr: string }[] = [];
      const io: PrivcmdMapIo = {
        mmap: (_fd, length) => new ArrayBuffer(length),
        munmap: () => {},
        ioctl: (_fd, request, arg, pointers) => {
          const p = new Map((pointers ?? []).map((x) => [x.offset, x.buffer]));
          const num = new DataView(arg.buffer, arg.byteOffset).getUint32(0, true);
          const dom = new DataView(arg.buffer, arg.byteOffset).getUint16(4, true);
          seen.push({ request, arg: hex(arg), num, dom, arr: hex(p.get(16) as Uint8Array) });
          (p.get(24) as Uint8Array).set(Buffer.from(replies.shift() as string, 'hex'));
          return 0;
        },
      };
      const fm = new PrivcmdForeignMemory({ handle: { fd: 9, domid: golden.args.domid }, io });
      const m = fm.mapPfns(golden.args.domid, golden.args.arr.map(BigInt), golden.args.prot);
      expect(seen).toEqual(
        golden.ioctls.map((c) => ({
          request: c.request,
          arg: c.arg,
          num: c.num,
          dom: c.dom,
          arr: c.arr,
        })),
      );
      expect(Array.from(m.errors)).toEqual(golden.outputs.err);
    },
  );

  it('a failed ioctl unmaps and throws MAP_FAILED with the errno; another domid is refused before any syscall', () => {
    const unmapped: ArrayBuffer[] = [];
    let syscalls = 0;
    const io: PrivcmdMapIo = {
      mmap: (_f, length) => {
        syscalls++;
        return new ArrayBuffer(length);
      },
      munmap: (m) => {
        unmapped.push(m);
      },
      ioctl: () => {
        syscalls++;
        throw new sys.SysError('ioctl', 1);
      },
    };
    const fm = new PrivcmdForeignMemory({ handle: { fd: 5, domid: 7 }, io });
    expect(() => fm.map(7, [1, 2], 3)).toThrowError(
      expect.objectContaining({ code: 'MAP_FAILED', errno: 1 }),
    );
    expect(unmapped).toHaveLength(1);
    expect(syscalls).toBe(2);
    expect(() => fm.map(8, [1], 3)).toThrowError(
      expect.objectContaining({ code: 'WRONG_DOMAIN', errno: 1 }),
    );
    expect(syscalls).toBe(2);
  });

  it('drives a MapCache over a PrivcmdHandle of @xen-depriv/privcmd-filter (restricted fd, injected OS)', () => {
    const restricts: number[] = [];
    const handle = PrivcmdHandle.open({
      domid: 12,
      profile: null,
      io: {
        open: () => 42,
        close: () => {},
        ioctl: (_fd, _req, arg) => {
          restricts.push(arg[0] as number);
          return 0;
        },
      },
    });
    const batches: string[] = [];
    const fm = new PrivcmdForeignMemory({
      handle,
      io: {
        mmap: (fd, length) => {
          expect(fd).toBe(42);
          return new ArrayBuffer(length);
        },
        munmap: () => {},
        ioctl: (fd, request, arg) => {
          batches.push(`${fd}:${request.toString(16)}:${hex(arg.subarray(0, 8))}`);
          return 0;
        },
      },
    });
    const cache = new MapCache({ foreignMemory: fm, domid: 12, maxBytes: 4 * 0x10_0000 });
    cache.translate(0x10_0000, 8);
    expect(restricts).toEqual([12]);
    expect(batches).toEqual([`42:205004:000100000c000000`]);
  });

  it.skipIf(!sys.isAvailable())(
    'the real sys path: a fd without privcmd answers ENOTTY, the mapping is released',
    () => {
      const fd = sys.open('/dev/zero', sys.constants.O_RDWR);
      try {
        const fm = new PrivcmdForeignMemory({ handle: { fd, domid: 3 } });
        expect(() => fm.map(3, [0x10, 0x11], 3)).toThrowError(
          expect.objectContaining({
            code: 'MAP_FAILED',
            errno: 25,
            message: expect.stringContaining('IOCTL_PRIVCMD_MMAPBATCH_V2 of 2 frames for domid 3'),
          }),
        );
      } finally {
        sys.close(fd);
      }
    },
  );
});
