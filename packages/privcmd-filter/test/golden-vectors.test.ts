import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { auditTrace, decide, type PolicyContext, qemuXenHvmProfile } from '../src/index.js';

// DM_OP buffers captured from Debian's libxendevicemodel by dmop-abi's tools/dmop-capture: the
// policy's field offsets meet bytes laid out by the real C library.
const VECTORS = join(__dirname, '..', '..', 'dmop-abi', 'test', 'vectors', 'vectors.json');

interface Vector {
  fn: string;
  ioctls: { name: string; dom: number; bufs: string[] }[];
}

const ctx: PolicyContext = {
  guestMemoryEndGfn: 0x40000n,
  ioRanges: [{ type: 'port', start: 0x3f8n, end: 0x3ffn }],
};

// What the qemu-xen-hvm profile says of each captured call, in capture order ('allowed' or a
// piece of the reason naming the value it read from the C library's bytes).
const EXPECTED: [string, string][] = [
  ['xendevicemodel_open', 'allowed'],
  ['xendevicemodel_create_ioreq_server', 'allowed'],
  ['xendevicemodel_get_ioreq_server_info', 'allowed'],
  ['xendevicemodel_get_ioreq_server_info', 'allowed'],
  [
    'xendevicemodel_map_io_range_to_ioreq_server',
    'mmio range 0xfffffffffffff000..0xffffffffffffffff is not inside',
  ],
  ['xendevicemodel_map_io_range_to_ioreq_server', 'allowed'],
  [
    'xendevicemodel_unmap_io_range_from_ioreq_server',
    'mmio range 0xf1e2d3c4b5a697..0xf1e2d3c4b5a6ff is not inside',
  ],
  [
    'xendevicemodel_map_mem_type_to_ioreq_server',
    'XEN_DMOP_map_mem_type_to_ioreq_server is not allowed',
  ],
  ['xendevicemodel_map_pcidev_to_ioreq_server', 'pci range 0xabcdefff..0xabcdefff is not inside'],
  [
    'xendevicemodel_unmap_pcidev_from_ioreq_server',
    'pci range 0x123456ab..0x123456ab is not inside',
  ],
  ['xendevicemodel_set_ioreq_server_state', 'allowed'],
  ['xendevicemodel_destroy_ioreq_server', 'allowed'],
  ['xendevicemodel_set_pci_intx_level', 'allowed'],
  ['xendevicemodel_set_isa_irq_level', 'allowed'],
  ['xendevicemodel_set_irq_level', 'XEN_DMOP_set_irq_level is not allowed'],
  ['xendevicemodel_set_pci_link_route', 'allowed'],
  ['xendevicemodel_inject_msi', 'address 0xfedcba98fee01234 is outside'],
  ['xendevicemodel_inject_msi', 'address 0xfedcba98fee01234 is outside'],
  ['xendevicemodel_track_dirty_vram', 'pages 0x23456789abcdef+70 pass the end'],
  ['xendevicemodel_modified_memory', 'extents up to 0 cover 2309737967 pages'],
  ['xendevicemodel_modified_memory_bulk', 'nr_extents 3 is over 1'],
  ['xendevicemodel_set_mem_type', 'mem_type 2 is not one of 0, 1'],
  ['xendevicemodel_inject_event', 'XEN_DMOP_inject_event is not allowed'],
  ['xendevicemodel_shutdown', 'reason 2309737967 is not one of 0, 1'],
  ['xendevicemodel_relocate_memory', 'size 2309737967 is over 32768'],
  ['xendevicemodel_pin_memory_cacheattr', 'type 4294967295 is not one of 6'],
  ['xendevicemodel_nr_vcpus', 'XEN_DMOP_nr_vcpus is not allowed'],
];

describe.skipIf(!existsSync(VECTORS))(
  'the qemu-xen-hvm profile over DM_OPs captured from Debian libxendevicemodel (dmop-abi golden vectors)',
  () => {
    const vectors = existsSync(VECTORS)
      ? (JSON.parse(readFileSync(VECTORS, 'utf8')).vectors as Vector[])
      : [];
    const calls = vectors.flatMap((v) =>
      v.ioctls
        .filter((i) => i.name === 'IOCTL_PRIVCMD_DM_OP')
        .map((i) => ({
          fn: v.fn,
          domid: i.dom,
          bufs: i.bufs.map((b) => Uint8Array.from(Buffer.from(b, 'hex'))),
        })),
    );

    it('reads each op and argument the library encoded, and decides as the profile says', () => {
      const got = calls.map((c): [string, string] => {
        const d = decide({ domid: c.domid, bufs: c.bufs }, qemuXenHvmProfile, ctx);
        const want = EXPECTED.find(([fn], i) => fn === c.fn && i === calls.indexOf(c))?.[1];
        return [
          c.fn,
          d.allowed ? 'allowed' : want !== undefined && d.reason.includes(want) ? want : d.reason,
        ];
      });
      expect(got).toEqual(EXPECTED);
    });

    it('auditTrace over the same captures as a trace counts them all', () => {
      const lines = calls.map((c, i) =>
        JSON.stringify({
          seq: i + 1,
          pid: 1,
          dev: 'privcmd',
          fd: 3,
          request: 0x00105005,
          dom: c.domid,
          num: c.bufs.length,
          bufs: c.bufs.map((b) => Buffer.from(b).toString('hex')),
          ret: 0,
          errno: 0,
        }),
      );
      const report = auditTrace(lines.join('\n'), qemuXenHvmProfile, ctx);
      expect(report.total).toBe(EXPECTED.length);
      expect(report.allowed).toBe(EXPECTED.filter(([, w]) => w === 'allowed').length);
      expect(report.deniedByKernel).toBe(0);
    });
  },
);
