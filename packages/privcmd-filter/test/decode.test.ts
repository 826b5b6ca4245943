import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  IOCTL_PRIVCMD_DM_OP,
  IOCTL_PRIVCMD_HYPERCALL,
  IOCTL_PRIVCMD_MMAP_RESOURCE,
  IOCTL_PRIVCMD_MMAPBATCH_V2,
  IOCTL_PRIVCMD_RESTRICT,
} from '@xen-depriv/dmop-abi';
import { describe, expect, it } from 'vitest';
import {
  type DeniedRequest,
  decodePrivcmdIoctl,
  PolicyError,
  PrivcmdDeniedError,
  PrivcmdHandle,
  type PrivcmdIo,
} from '../src/index.js';

function bytes(size: number, fields: [number, 2 | 4 | 8, number | bigint][]): Uint8Array {
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  for (const [off, w, val] of fields) {
    if (w === 2) v.setUint16(off, Number(val), true);
    else if (w === 4) v.setUint32(off, Number(val), true);
    else v.setBigUint64(off, BigInt(val), true);
  }
  return b;
}

describe('decodePrivcmdIoctl', () => {
  it('reads the fields privcmd.c checks at their x86-64 offsets', () => {
    expect(
      decodePrivcmdIoctl(
        IOCTL_PRIVCMD_MMAPBATCH_V2,
        bytes(32, [
          [0, 4, 3],
          [4, 2, 9],
        ]),
      ),
    ).toEqual({
      kind: 'mmapbatch_v2',
      dom: 9,
      num: 3,
    });
    expect(
      decodePrivcmdIoctl(
        IOCTL_PRIVCMD_MMAP_RESOURCE,
        bytes(32, [
          [0, 2, 9],
          [4, 4, 0],
          [8, 4, 1],
          [12, 4, 2],
          [16, 8, 4n],
          [24, 8, 0x7f0000000000n],
        ]),
      ),
    ).toEqual({
      kind: 'mmap_resource',
      dom: 9,
      type: 0,
      id: 1,
      idx: 2,
      num: 4,
      addr: 0x7f0000000000n,
    });
    expect(decodePrivcmdIoctl(IOCTL_PRIVCMD_HYPERCALL, bytes(48, [[0, 8, 38n]]))).toEqual({
      kind: 'hypercall',
      op: 38,
    });
    expect(decodePrivcmdIoctl(IOCTL_PRIVCMD_RESTRICT, bytes(2, [[0, 2, 5]]))).toEqual({
      kind: 'restrict',
      domid: 5,
    });
    expect(decodePrivcmdIoctl(0x1234, new Uint8Array(0))).toEqual({
      kind: 'unknown',
      request: 0x1234,
    });
  });
  it('refuses an argument shorter than the struct with a PolicyError', () => {
    expect(() => decodePrivcmdIoctl(IOCTL_PRIVCMD_MMAPBATCH_V2, new Uint8Array(8))).toThrow(
      new PolicyError(
        'BAD_TRACE',
        'IOCTL_PRIVCMD_MMAPBATCH_V2',
        'expected a 32-byte argument, got 8 bytes',
      ),
    );
  });
  const haveGcc =
    spawnSync('gcc', ['--version']).status === 0 && existsSync('/usr/include/xen/sys/privcmd.h');
  it.skipIf(!haveGcc)(
    'offsets and sizes equal gcc offsetof over Debian /usr/include/xen/sys/privcmd.h (needs gcc, libxen-dev)',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'pf-dec-'));
      try {
        const q = [
          'sizeof(privcmd_hypercall_t)',
          'sizeof(privcmd_mmap_t)',
          'offsetof(privcmd_mmap_t, dom)',
          'sizeof(privcmd_mmapbatch_t)',
          'offsetof(privcmd_mmapbatch_t, dom)',
          'sizeof(privcmd_mmapbatch_v2_t)',
          'offsetof(privcmd_mmapbatch_v2_t, dom)',
          'sizeof(privcmd_dm_op_t)',
          'offsetof(privcmd_dm_op_t, num)',
          'offsetof(privcmd_dm_op_t, ubufs)',
          'sizeof(privcmd_dm_op_buf_t)',
          'offsetof(privcmd_dm_op_buf_t, size)',
          'sizeof(privcmd_mmap_resource_t)',
          'offsetof(privcmd_mmap_resource_t, type)',
          'offsetof(privcmd_mmap_resource_t, id)',
          'offsetof(privcmd_mmap_resource_t, idx)',
          'offsetof(privcmd_mmap_resource_t, num)',
          'offsetof(privcmd_mmap_resource_t, addr)',
        ];
        writeFileSync(
          join(dir, 'o.c'),
          `#include <stdio.h>
#include <stddef.h>
#include <xenctrl.h>
#define __user
#include <xen/sys/privcmd.h>
int main(void){${q.map((e) => `printf("%zu\\n", ${e});`).join('')}return 0;}`,
        );
        execFileSync('gcc', ['-o', join(dir, 'o'), join(dir, 'o.c')]);
        const got = execFileSync(join(dir, 'o'), { encoding: 'utf8' })
          .trim()
          .split('\n')
          .map(Number);
        expect(got).toEqual([48, 16, 4, 24, 4, 32, 4, 16, 2, 8, 16, 8, 32, 4, 8, 12, 16, 24]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('PrivcmdHandle.ioctl over a stub (no kernel)', () => {
  function setup() {
    const requests: number[] = [];
    const denied: DeniedRequest[] = [];
    const io: PrivcmdIo = {
      open: () => 4,
      close: () => {},
      ioctl: (_fd, request) => {
        requests.push(request);
        return 0;
      },
    };
    const h = PrivcmdHandle.open({ domid: 9, profile: null, io, onDenied: (d) => denied.push(d) });
    return { h, requests, denied };
  }
  it('passes a mapping of the restricted domid, refuses another domid, a hypercall and a second domid before the kernel', () => {
    const { h, requests, denied } = setup();
    expect(
      h.ioctl(
        IOCTL_PRIVCMD_MMAPBATCH_V2,
        bytes(32, [
          [0, 4, 1],
          [4, 2, 9],
        ]),
      ),
    ).toBe(0);
    expect(() =>
      h.ioctl(
        IOCTL_PRIVCMD_MMAPBATCH_V2,
        bytes(32, [
          [0, 4, 1],
          [4, 2, 10],
        ]),
      ),
    ).toThrow(PrivcmdDeniedError);
    expect(() => h.ioctl(IOCTL_PRIVCMD_HYPERCALL, new Uint8Array(48))).toThrow(
      'IOCTL_PRIVCMD_HYPERCALL: fd is restricted to domid 9',
    );
    expect(() => h.ioctl(IOCTL_PRIVCMD_RESTRICT, bytes(2, [[0, 2, 3]]))).toThrow(
      'PrivcmdHandle.ioctl: EINVAL (errno 22)',
    );
    expect(() => h.ioctl(IOCTL_PRIVCMD_DM_OP, new Uint8Array(16))).toThrow(TypeError);
    expect(requests).toEqual([IOCTL_PRIVCMD_RESTRICT, IOCTL_PRIVCMD_MMAPBATCH_V2]);
    expect(h.counts).toEqual({ allowed: 1, denied: 3 });
    expect(denied.map((d) => [d.domid, d.decision.code])).toEqual([
      [10, 'EPERM'],
      [9, 'EPERM'],
      [9, 'EINVAL'],
    ]);
  });
});
