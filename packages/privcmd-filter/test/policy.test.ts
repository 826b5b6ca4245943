import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DM_OP_NAMES } from '@xen-depriv/dmop-abi';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type DmOpCall,
  decide,
  type PolicyContext,
  PolicyError,
  PrivcmdModel,
  qemuXenHvmProfile,
  validateProfile,
} from '../src/index.js';
import { dmOp, extents, OP } from './helpers/dmop-bytes.js';

const ctx: PolicyContext = {
  guestMemoryEndGfn: 0x40000n, // 1 GiB
  ioRanges: [
    { type: 'port', start: 0x1f0n, end: 0x1f7n },
    { type: 'mmio', start: 0xf0000000n, end: 0xf0ffffffn },
    { type: 'pci', start: 0x10n, end: 0x18n },
  ],
};
const call = (...bufs: Uint8Array[]): DmOpCall => ({ domid: 7, bufs });
const ask = (c: DmOpCall) => decide(c, qemuXenHvmProfile, ctx);

describe('decide with the qemu-xen-hvm profile: allowed requests QEMU makes', () => {
  it.each([
    ['create_ioreq_server', call(dmOp(OP.create_ioreq_server, [[0, 1, 1]]))],
    [
      'map_io_range port inside a declared range',
      call(
        dmOp(OP.map_io_range_to_ioreq_server, [
          [4, 4, 0],
          [8, 8, 0x1f0n],
          [16, 8, 0x1f7n],
        ]),
      ),
    ],
    [
      'inject_msi into the APIC window',
      call(
        dmOp(OP.inject_msi, [
          [0, 4, 0x4041],
          [8, 8, 0xfee01000n],
        ]),
      ),
    ],
    [
      'set_mem_type ram_ro over the platform ROM',
      call(
        dmOp(OP.set_mem_type, [
          [0, 4, 0x40],
          [4, 2, 1],
          [8, 8, 0xc0n],
        ]),
      ),
    ],
    ['track_dirty_vram stop (nr 0)', call(dmOp(OP.track_dirty_vram), new Uint8Array(0))],
    [
      'modified_memory one extent',
      call(dmOp(OP.modified_memory, [[0, 4, 1]]), extents([[16, 0x1000n]])),
    ],
    ['remote_shutdown reboot', call(dmOp(OP.remote_shutdown, [[0, 4, 1]]))],
    [
      'pin_memory_cacheattr WB',
      call(
        dmOp(OP.pin_memory_cacheattr, [
          [0, 8, 0xf000n],
          [8, 8, 0xf0ffn],
          [16, 4, 6],
        ]),
      ),
    ],
  ])('%s', (_name, c) => {
    expect(ask(c)).toMatchObject({ allowed: true, errno: 0 });
  });
});

describe('decide with the qemu-xen-hvm profile: one denied request per rule', () => {
  it.each([
    [
      'limits.maxBufs',
      call(dmOp(OP.nr_vcpus), new Uint8Array(8), new Uint8Array(8)),
      'E2BIG',
      'at most 2 buffers, got 3',
    ],
    [
      'limits.maxBufSize',
      call(dmOp(OP.modified_memory, [[0, 4, 1]]), new Uint8Array(4097)),
      'E2BIG',
      'buffer 1 is 4097 bytes',
    ],
    [
      'op not in the profile',
      call(dmOp(OP.inject_event)),
      'EPERM',
      'XEN_DMOP_inject_event is not allowed',
    ],
    ['op number outside 1..20', call(dmOp(99)), 'EPERM', 'op 99 is not a XEN_DMOP_* op'],
    [
      'short struct xen_dm_op',
      call(new Uint8Array(8)),
      'EINVAL',
      'expected at least 32 bytes (struct xen_dm_op), got 8',
    ],
    [
      'inject_msi msiAddress',
      call(dmOp(OP.inject_msi, [[8, 8, 0xfed00000n]])),
      'EPERM',
      'address 0xfed00000 is outside 0xfee00000..0xfeefffff (rule msiAddress)',
    ],
    [
      'set_mem_type memTypes',
      call(
        dmOp(OP.set_mem_type, [
          [0, 4, 1],
          [4, 2, 2],
          [8, 8, 0x100n],
        ]),
      ),
      'EPERM',
      'mem_type 2 is not one of 0, 1',
    ],
    [
      'set_mem_type maxPages',
      call(
        dmOp(OP.set_mem_type, [
          [0, 4, 40000],
          [8, 8, 0x100n],
        ]),
      ),
      'EPERM',
      'nr 40000 is over 32768',
    ],
    [
      'set_mem_type withinGuestMemory',
      call(
        dmOp(OP.set_mem_type, [
          [0, 4, 2],
          [8, 8, 0x3ffffn],
        ]),
      ),
      'EPERM',
      '(rule withinGuestMemory)',
    ],
    [
      'track_dirty_vram maxPages',
      call(dmOp(OP.track_dirty_vram, [[0, 4, 32769]]), new Uint8Array(0)),
      'EPERM',
      '(rule maxPages)',
    ],
    [
      'track_dirty_vram withinGuestMemory',
      call(
        dmOp(OP.track_dirty_vram, [
          [0, 4, 16],
          [8, 8, 0x40000n],
        ]),
      ),
      'EPERM',
      '(rule withinGuestMemory)',
    ],
    [
      'modified_memory maxExtents',
      call(
        dmOp(OP.modified_memory, [[0, 4, 2]]),
        extents([
          [1, 1n],
          [1, 2n],
        ]),
      ),
      'EPERM',
      'nr_extents 2 is over 1',
    ],
    [
      'modified_memory maxPages',
      call(dmOp(OP.modified_memory, [[0, 4, 1]]), extents([[262145, 0n]])),
      'EPERM',
      '(rule maxPages)',
    ],
    [
      'modified_memory withinGuestMemory',
      call(dmOp(OP.modified_memory, [[0, 4, 1]]), extents([[2, 0x3ffffn]])),
      'EPERM',
      'extent 0 0x3ffff+2 passes the end',
    ],
    [
      'modified_memory extents missing',
      call(dmOp(OP.modified_memory, [[0, 4, 1]])),
      'EINVAL',
      'got no buffer',
    ],
    [
      'relocate_memory maxPages',
      call(dmOp(OP.relocate_memory, [[0, 4, 40000]])),
      'EPERM',
      '(rule maxPages)',
    ],
    [
      'relocate_memory withinGuestMemory',
      call(
        dmOp(OP.relocate_memory, [
          [0, 4, 1],
          [8, 8, 0n],
          [16, 8, 0x50000n],
        ]),
      ),
      'EPERM',
      '(rule withinGuestMemory)',
    ],
    [
      'pin_memory_cacheattr cacheAttrs',
      call(
        dmOp(OP.pin_memory_cacheattr, [
          [0, 8, 1n],
          [8, 8, 2n],
          [16, 4, 0],
        ]),
      ),
      'EPERM',
      'type 0 is not one of 6',
    ],
    [
      'pin_memory_cacheattr withinGuestMemory',
      call(
        dmOp(OP.pin_memory_cacheattr, [
          [0, 8, 1n],
          [8, 8, 0x40000n],
          [16, 4, 6],
        ]),
      ),
      'EPERM',
      '(rule withinGuestMemory)',
    ],
    [
      'map_io_range withinDeclaredIoRanges',
      call(
        dmOp(OP.map_io_range_to_ioreq_server, [
          [4, 4, 0],
          [8, 8, 0x60n],
          [16, 8, 0x64n],
        ]),
      ),
      'EPERM',
      'port range 0x60..0x64 is not inside a declared range',
    ],
    [
      'unmap_io_range withinDeclaredIoRanges',
      call(
        dmOp(OP.unmap_io_range_from_ioreq_server, [
          [4, 4, 1],
          [8, 8, 0xf0fff000n],
          [16, 8, 0xf1000fffn],
        ]),
      ),
      'EPERM',
      'mmio range',
    ],
    [
      'set_isa_irq_level isaIrqMax',
      call(dmOp(OP.set_isa_irq_level, [[0, 1, 16]])),
      'EPERM',
      'isa_irq 16 is over 15',
    ],
    [
      'set_pci_link_route linkMax',
      call(
        dmOp(OP.set_pci_link_route, [
          [0, 1, 4],
          [1, 1, 5],
        ]),
      ),
      'EPERM',
      'link 4 is over 3',
    ],
    [
      'set_pci_link_route isaIrqMax',
      call(
        dmOp(OP.set_pci_link_route, [
          [0, 1, 1],
          [1, 1, 16],
        ]),
      ),
      'EPERM',
      'isa_irq 16 is over 15',
    ],
    [
      'set_pci_intx_level linkMax',
      call(dmOp(OP.set_pci_intx_level, [[4, 1, 4]])),
      'EPERM',
      'intx 4 is over 3',
    ],
    [
      'remote_shutdown shutdownReasons',
      call(dmOp(OP.remote_shutdown, [[0, 4, 2]])),
      'EPERM',
      'reason 2 is not one of 0, 1',
    ],
  ] as const)('%s', (_rule, c, code, text) => {
    const d = ask(c);
    expect(d).toMatchObject({ allowed: false, code });
    expect(d.reason).toContain(text);
  });
  it('the kernel model is asked first: another domid is EPERM before any profile rule', () => {
    const model = new PrivcmdModel();
    model.decide({ kind: 'restrict', domid: 8 });
    const d = decide(call(dmOp(OP.inject_event)), qemuXenHvmProfile, ctx, model);
    expect(d).toMatchObject({
      errno: 1,
      reason: 'IOCTL_PRIVCMD_DM_OP: fd is restricted to domid 8, request targets domid 7',
    });
  });
  it('the kernel model E2BIG comes before the profile: 17 buffers', () => {
    const d = decide(
      call(...new Array(17).fill(new Uint8Array(32))),
      qemuXenHvmProfile,
      ctx,
      new PrivcmdModel(),
    );
    expect(d.reason).toBe('IOCTL_PRIVCMD_DM_OP: at most dm_op_max_nr_bufs=16 buffers, got 17');
  });
});

describe('decide: properties', () => {
  it('an op the profile does not list is never allowed, whatever its arguments', () => {
    const listed = new Set(Object.keys(qemuXenHvmProfile.ops));
    const unlisted = DM_OP_NAMES.map((n, i) => [n, i] as const).filter(
      ([n]) => n !== undefined && !listed.has(n),
    );
    fc.assert(
      fc.property(
        fc.constantFrom(...unlisted),
        fc.uint8Array({ minLength: 24, maxLength: 24 }),
        ([, op], body) => {
          const buf = dmOp(op);
          buf.set(body, 8);
          expect(ask(call(buf))).toMatchObject({ allowed: false, errno: 1 });
        },
      ),
    );
  });
  it('an allowed inject_msi always has its address in the APIC window', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (addr) => {
        const d = ask(call(dmOp(OP.inject_msi, [[8, 8, addr]])));
        expect(d.allowed).toBe(addr >= 0xfee00000n && addr <= 0xfeefffffn);
      }),
    );
  });
  it('an allowed modified_memory extent always lies inside guest memory and under the cap', () => {
    fc.assert(
      fc.property(fc.nat(300000), fc.bigInt({ min: 0n, max: 0x80000n }), (nr, pfn) => {
        const d = ask(call(dmOp(OP.modified_memory, [[0, 4, 1]]), extents([[nr, pfn]])));
        expect(d.allowed).toBe(nr <= 262144 && pfn + BigInt(nr) <= ctx.guestMemoryEndGfn);
      }),
    );
  });
});

describe('validateProfile', () => {
  it('accepts the shipped profile and a JSON round trip of it (bigints as strings)', () => {
    expect(validateProfile(qemuXenHvmProfile)).toEqual(qemuXenHvmProfile);
    const json = JSON.parse(
      JSON.stringify(qemuXenHvmProfile, (_k, v) =>
        typeof v === 'bigint' ? `0x${v.toString(16)}` : v,
      ),
    );
    expect(validateProfile(json)).toEqual(qemuXenHvmProfile);
  });
  it.each([
    [null, '/: expected an object, got null'],
    [
      { name: '', limits: { maxBufs: 1, maxBufSize: 64 }, ops: {} },
      '/name: expected a non-empty string, got ""',
    ],
    [
      { name: 'p', limits: { maxBufs: 0, maxBufSize: 64 }, ops: {} },
      '/limits/maxBufs: expected an integer >= 1, got 0',
    ],
    [
      { name: 'p', limits: { maxBufs: 1, maxBufSize: 8 }, ops: {} },
      '/limits/maxBufSize: expected an integer >= 32',
    ],
    [
      { name: 'p', limits: { maxBufs: 1, maxBufSize: 64 }, ops: { hypercall: {} } },
      '/ops/hypercall: expected a XEN_DMOP_* name',
    ],
    [
      {
        name: 'p',
        limits: { maxBufs: 1, maxBufSize: 64 },
        ops: { inject_msi: { msiAddres: [1, 2] } },
      },
      '/ops/inject_msi/msiAddres: expected one of',
    ],
    [
      {
        name: 'p',
        limits: { maxBufs: 1, maxBufSize: 64 },
        ops: { inject_msi: { msiAddress: [2, 1] } },
      },
      '/ops/inject_msi/msiAddress: expected low <= high',
    ],
    [
      {
        name: 'p',
        limits: { maxBufs: 1, maxBufSize: 64 },
        ops: { inject_msi: { msiAddress: ['x', 1] } },
      },
      '/ops/inject_msi/msiAddress/0: expected an integer',
    ],
    [
      {
        name: 'p',
        limits: { maxBufs: 1, maxBufSize: 64 },
        ops: { set_mem_type: { memTypes: [-1] } },
      },
      '/ops/set_mem_type/memTypes: expected an array of non-negative integers, got [-1]',
    ],
    [
      {
        name: 'p',
        limits: { maxBufs: 1, maxBufSize: 64 },
        ops: { set_mem_type: { maxPages: 1.5 } },
      },
      '/ops/set_mem_type/maxPages: expected a non-negative integer, got 1.5',
    ],
    [
      {
        name: 'p',
        limits: { maxBufs: 1, maxBufSize: 64 },
        ops: { set_mem_type: { withinGuestMemory: 1 } },
      },
      '/ops/set_mem_type/withinGuestMemory: expected a boolean, got 1',
    ],
  ])('refuses %j with a PolicyError naming the path', (data, message) => {
    let err: unknown;
    try {
      validateProfile(data);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect((err as PolicyError).code).toBe('BAD_PROFILE');
    expect((err as PolicyError).message).toContain(message);
  });
});

const haveGcc =
  spawnSync('gcc', ['--version']).status === 0 && existsSync('/usr/include/xen/hvm/dm_op.h');
describe('struct xen_dm_op offsets the policy reads', () => {
  it.skipIf(!haveGcc)(
    'equal gcc offsetof over Debian /usr/include/xen/hvm/dm_op.h (needs gcc and libxen-dev)',
    () => {
      const fields: [string, number][] = [
        ['u.create_ioreq_server.handle_bufioreq', 8],
        ['u.map_io_range_to_ioreq_server.type', 12],
        ['u.map_io_range_to_ioreq_server.start', 16],
        ['u.map_io_range_to_ioreq_server.end', 24],
        ['u.track_dirty_vram.nr', 8],
        ['u.track_dirty_vram.first_pfn', 16],
        ['u.set_pci_intx_level.intx', 12],
        ['u.set_isa_irq_level.isa_irq', 8],
        ['u.set_pci_link_route.link', 8],
        ['u.set_pci_link_route.isa_irq', 9],
        ['u.modified_memory.nr_extents', 8],
        ['u.set_mem_type.nr', 8],
        ['u.set_mem_type.mem_type', 12],
        ['u.set_mem_type.first_pfn', 16],
        ['u.inject_msi.addr', 16],
        ['u.remote_shutdown.reason', 8],
        ['u.relocate_memory.size', 8],
        ['u.relocate_memory.src_gfn', 16],
        ['u.relocate_memory.dst_gfn', 24],
        ['u.pin_memory_cacheattr.start', 8],
        ['u.pin_memory_cacheattr.end', 16],
        ['u.pin_memory_cacheattr.type', 24],
      ];
      const dir = mkdtempSync(join(tmpdir(), 'pf-off-'));
      try {
        const src = `#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
int main(void){printf("%zu %zu %zu\\n", sizeof(struct xen_dm_op), sizeof(struct xen_dm_op_modified_memory_extent), offsetof(struct xen_dm_op_modified_memory_extent, first_pfn));${fields.map(([f]) => `printf("%zu\\n", offsetof(struct xen_dm_op, ${f}));`).join('')}return 0;}`;
        writeFileSync(join(dir, 'off.c'), src);
        execFileSync('gcc', ['-o', join(dir, 'off'), join(dir, 'off.c')]);
        const lines = execFileSync(join(dir, 'off'), { encoding: 'utf8' }).trim().split('\n');
        expect(lines[0]).toBe('32 16 8');
        expect(lines.slice(1).map(Number)).toEqual(fields.map(([, off]) => off));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
