import { ftruncateSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  close,
  constants,
  flock,
  ioctl,
  memfdCreate,
  mmap,
  munmap,
  open,
  SysError,
} from '../src/index.js';
import { canRun, tempDir } from './helpers.js';

const FIONREAD = 0x541b;
const TCGETS = 0x5401;
const SIOCGIFCONF = 0x8912;
const IFREQ_SIZE = 40; // struct ifreq on x86-64: char ifr_name[16] + a 24-byte union
const { PROT_READ, PROT_WRITE, MAP_SHARED, O_RDWR, O_CREAT, LOCK_EX, LOCK_NB, LOCK_SH, LOCK_UN } =
  constants;

function handleFd(server: Server): number {
  return (server as unknown as { _handle: { fd: number } })._handle.fd;
}

describe.skipIf(!canRun)('ioctl (real kernel ioctls)', () => {
  const dir = tempDir('ioctl');
  let server: Server;
  let sockFd: number;
  beforeAll(async () => {
    server = createServer();
    await new Promise<void>((resolve) => server.listen(join(dir.path, 's'), resolve));
    sockFd = handleFd(server);
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    dir[Symbol.dispose]();
  });

  it('FIONREAD on a memfd returns the bytes left to read, written into arg', () => {
    const fd = memfdCreate('fionread');
    try {
      ftruncateSync(fd, 1234);
      const arg = new Uint8Array(4);
      expect(ioctl(fd, FIONREAD, arg)).toBe(0);
      expect(new DataView(arg.buffer).getInt32(0, true)).toBe(1234);
    } finally {
      close(fd);
    }
  });

  it('SIOCGIFCONF fills the buffer whose address is patched into struct ifconf.ifc_buf', () => {
    // struct ifconf { int ifc_len; /* pad */ union { char *ifc_buf; ... }; }: pointer at 8.
    const probe = new Uint8Array(16);
    expect(ioctl(sockFd, SIOCGIFCONF, probe)).toBe(0);
    const needed = new DataView(probe.buffer).getInt32(0, true);
    expect(needed % IFREQ_SIZE).toBe(0);
    expect(needed).toBeGreaterThanOrEqual(IFREQ_SIZE);

    const buf = new Uint8Array(needed).fill(0xaa);
    const arg = new Uint8Array(16);
    new DataView(arg.buffer).setInt32(0, needed, true);
    expect(ioctl(sockFd, SIOCGIFCONF, arg, [{ offset: 8, buffer: buf }])).toBe(0);
    expect(new DataView(arg.buffer).getInt32(0, true)).toBe(needed);
    // The pointer slot is restored once the call returns.
    expect([...arg.subarray(8)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    const entries = Array.from({ length: needed / IFREQ_SIZE }, (_, i) =>
      buf.subarray(i * IFREQ_SIZE, (i + 1) * IFREQ_SIZE),
    );
    const lo = entries.find((e) => e[0] === 0x6c && e[1] === 0x6f && e[2] === 0);
    expect(lo).toBeDefined();
    // "lo" NUL-padded to IFNAMSIZ, then sockaddr_in { AF_INET, port 0, 127.0.0.1, zero[8] }.
    expect([...(lo as Uint8Array).subarray(0, 32)]).toEqual([
      0x6c, 0x6f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 127, 0, 0, 1, 0, 0, 0, 0, 0,
      0, 0, 0,
    ]);
  });

  it('a failing ioctl throws SysError with the errno and the request', () => {
    const fd = memfdCreate('enotty');
    try {
      const err = (() => {
        try {
          ioctl(fd, TCGETS, new Uint8Array(60));
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(SysError);
      expect(err).toMatchObject({ errno: 25, code: 'ENOTTY', syscall: 'ioctl' });
      expect((err as SysError).message).toContain('request 0x00005401');
    } finally {
      close(fd);
    }
  });

  it('rejects pointers outside arg or overlapping each other before the syscall', () => {
    const arg = new Uint8Array(16);
    const b = new Uint8Array(4);
    // An fd that is not open: if the syscall ran, this would be SysError EBADF.
    const badFd = 999_999;
    expect(() => ioctl(badFd, SIOCGIFCONF, arg, [{ offset: 9, buffer: b }])).toThrow(
      new TypeError(
        'ioctl pointers[0].offset: expected an 8-byte slot inside the 16-byte arg, got 9',
      ),
    );
    expect(() => ioctl(badFd, SIOCGIFCONF, arg, [{ offset: -8, buffer: b }])).toThrow(TypeError);
    expect(() => ioctl(badFd, SIOCGIFCONF, arg, [{ offset: 1.5, buffer: b }])).toThrow(TypeError);
    expect(() =>
      ioctl(badFd, SIOCGIFCONF, arg, [
        { offset: 0, buffer: b },
        { offset: 4, buffer: b },
      ]),
    ).toThrow(
      new TypeError('ioctl pointers[1].offset: expected no overlap with pointers[0] at 0, got 4'),
    );
    expect(() =>
      ioctl(badFd, SIOCGIFCONF, arg, [{ offset: 0, buffer: [1, 2] as unknown as Uint8Array }]),
    ).toThrow(TypeError);
    expect([...arg]).toEqual(new Array(16).fill(0));
    expect(() => ioctl(badFd, SIOCGIFCONF, arg)).toThrow(
      expect.objectContaining({ code: 'EBADF' }),
    );
  });

  it('the addon itself rejects the same pointers when called without the TypeScript checks', async () => {
    const { binding } = await import('../src/native.js');
    const arg = new Uint8Array(16);
    expect(() =>
      binding().ioctl(999_999, 0, arg, [{ offset: 12, buffer: new Uint8Array(1) }]),
    ).toThrow(TypeError);
    expect(() =>
      binding().ioctl(999_999, 0, arg, [
        { offset: 0, buffer: new Uint8Array(1) },
        { offset: 7, buffer: new Uint8Array(1) },
      ]),
    ).toThrow(TypeError);
  });
});

describe.skipIf(!canRun)('mmap of a memfd', () => {
  it('writes through one mapping are visible through a second mapping', () => {
    const fd = memfdCreate('shared');
    try {
      ftruncateSync(fd, 8192);
      const a = mmap(fd, 8192, PROT_READ | PROT_WRITE, MAP_SHARED);
      const b = mmap(fd, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, 4096n);
      expect(a.byteLength).toBe(8192);
      new Uint8Array(a).set([1, 2, 3], 4096);
      expect([...new Uint8Array(b, 0, 4)]).toEqual([1, 2, 3, 0]);
      new Uint8Array(b)[100] = 0x5a;
      expect(new Uint8Array(a)[4096 + 100]).toBe(0x5a);
      munmap(a);
      munmap(b);
    } finally {
      close(fd);
    }
  });

  it('munmap detaches the ArrayBuffer; a second munmap is SysError EINVAL, not a crash', () => {
    const fd = memfdCreate('twice');
    try {
      ftruncateSync(fd, 4096);
      const a = mmap(fd, 4096, PROT_READ | PROT_WRITE, MAP_SHARED);
      munmap(a);
      expect(a.byteLength).toBe(0);
      expect(() => munmap(a)).toThrow(
        expect.objectContaining({ name: 'SysError', errno: 22, code: 'EINVAL', syscall: 'munmap' }),
      );
      expect(() => munmap(new ArrayBuffer(8))).toThrow(TypeError);
    } finally {
      close(fd);
    }
  });

  it('a mapping is unmapped when its ArrayBuffer is garbage-collected', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const fd = memfdCreate('gc-probe');
    const mapped = () =>
      readFileSync('/proc/self/maps', 'utf8')
        .split('\n')
        .filter((l) => l.includes('/memfd:gc-probe')).length;
    try {
      ftruncateSync(fd, 4096);
      (() => {
        new Uint8Array(mmap(fd, 4096, PROT_READ | PROT_WRITE, MAP_SHARED))[0] = 1;
      })();
      expect(mapped()).toBe(1);
      let left = mapped();
      for (let round = 0; round < 50 && left > 0; round++) {
        gc();
        await new Promise((r) => setImmediate(r));
        left = mapped();
      }
      expect(left).toBe(0);
    } finally {
      close(fd);
    }
  });

  it('bad arguments are TypeError or SysError', () => {
    const fd = memfdCreate('bad');
    try {
      expect(() => mmap(fd, 0, PROT_READ, MAP_SHARED)).toThrow(TypeError);
      expect(() => mmap(fd, 2 ** 60, PROT_READ, MAP_SHARED)).toThrow(TypeError);
      expect(() => mmap(fd, 2 ** 50, PROT_READ, MAP_SHARED)).toThrow(
        expect.objectContaining({ name: 'SysError', syscall: 'mmap', code: 'ENOMEM' }),
      );
      expect(() => mmap(999_999, 4096, PROT_READ, MAP_SHARED)).toThrow(
        expect.objectContaining({ code: 'EBADF' }),
      );
      expect(() => mmap(fd, 4096, PROT_READ, MAP_SHARED, -4096)).toThrow(TypeError);
      expect(() => mmap(fd, 4096, PROT_READ, MAP_SHARED, 2n ** 64n)).toThrow(TypeError);
      expect(() => munmap({} as ArrayBuffer)).toThrow(TypeError);
    } finally {
      close(fd);
    }
  });
});

describe.skipIf(!canRun)('open, close, flock', () => {
  it('LOCK_NB on a held lock is SysError EAGAIN (EWOULDBLOCK); LOCK_UN releases it', () => {
    using dir = tempDir('flock');
    const file = join(dir.path, 'lock');
    writeFileSync(file, '');
    const a = open(file, O_RDWR);
    const b = open(file, O_RDWR | O_CREAT, 0o600);
    try {
      flock(a, LOCK_EX);
      expect(() => flock(b, LOCK_EX | LOCK_NB)).toThrow(
        expect.objectContaining({ name: 'SysError', errno: 11, code: 'EAGAIN', syscall: 'flock' }),
      );
      expect(() => flock(b, LOCK_SH | LOCK_NB)).toThrow(
        expect.objectContaining({ code: 'EAGAIN' }),
      );
      flock(a, LOCK_UN);
      flock(b, LOCK_SH | LOCK_NB);
    } finally {
      close(a);
      close(b);
    }
  });

  it('open reports the path; close of an fd that is not open is EBADF', () => {
    expect(() => open('/nonexistent/xen-depriv', O_RDWR)).toThrow(
      expect.objectContaining({
        code: 'ENOENT',
        syscall: 'open',
        message: expect.stringContaining('/nonexistent'),
      }),
    );
    const fd = openSync('/dev/null', 'r');
    close(fd);
    // Not close(fd) again: another part of this process may already own that number.
    expect(() => close(999_999)).toThrow(
      expect.objectContaining({ code: 'EBADF', syscall: 'close' }),
    );
  });
});
