// dmop-abi's DeviceModel against a real Xen 4.17 HVM domain through the real privcmd driver, and
// the same sequence against the models (privcmd-filter's SimPrivcmd, i.e. PrivcmdModel, in front
// of @xen-depriv/dmop-abi/sim): return code, errno and outputs must agree op by op. A
// disagreement is a bug in a model.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  DeviceModel,
  HVMMEM_ram_ro,
  HVMMEM_ram_rw,
  IOCTL_PRIVCMD_DM_OP,
  IOCTL_PRIVCMD_RESTRICT,
} from '@xen-depriv/dmop-abi';
import { SimHypervisor } from '@xen-depriv/dmop-abi/sim';
import { SimPrivcmd } from '@xen-depriv/privcmd-filter';
import { close, constants, ioctl, open } from '@xen-depriv/sys';
import { dmOpArg, makeHvm } from './privcmd-filter.xen.mjs';

/** The real kernel and hypervisor with nothing of ours in front: a restricted privcmd fd. */
function rawTransport(domid) {
  const fd = open('/dev/xen/privcmd', constants.O_RDWR);
  ioctl(fd, IOCTL_PRIVCMD_RESTRICT, Uint8Array.of(domid & 0xff, domid >> 8));
  return {
    fd,
    dmOp(dom, bufs) {
      const { arg, pointers } = dmOpArg(dom, bufs);
      try {
        return ioctl(fd, IOCTL_PRIVCMD_DM_OP, arg, pointers);
      } catch (err) {
        if (typeof err?.errno === 'number') return -err.errno;
        throw err;
      }
    },
  };
}

/** The sequence: each step returns its outputs; a thrown XenError becomes its errno name. */
const steps = [
  ['nr_vcpus', (dm, d) => dm.nrVcpus(d)],
  ['create_ioreq_server', (dm, d, s) => (s.id = dm.createIoreqServer(d, 0))],
  ['get_ioreq_server_info (maps the gfns)', (dm, d, s) => dm.getIoreqServerInfo(d, s.id)],
  [
    'map_io_range port 0x3f8-0x3ff',
    (dm, d, s) => dm.mapIoRangeToIoreqServer(d, s.id, false, 0x3f8n, 0x3ffn),
  ],
  [
    'map_io_range overlapping',
    (dm, d, s) => dm.mapIoRangeToIoreqServer(d, s.id, false, 0x3fcn, 0x400n),
  ],
  [
    'map_io_range end < start',
    (dm, d, s) => dm.mapIoRangeToIoreqServer(d, s.id, false, 0x500n, 0x4ffn),
  ],
  ['set_ioreq_server_state enabled', (dm, d, s) => dm.setIoreqServerState(d, s.id, true)],
  [
    'unmap_io_range port 0x3f8-0x3ff',
    (dm, d, s) => dm.unmapIoRangeFromIoreqServer(d, s.id, false, 0x3f8n, 0x3ffn),
  ],
  [
    'unmap_io_range again',
    (dm, d, s) => dm.unmapIoRangeFromIoreqServer(d, s.id, false, 0x3f8n, 0x3ffn),
  ],
  ['set_ioreq_server_state on unknown id', (dm, d, s) => dm.setIoreqServerState(d, s.id + 7, true)],
  ['destroy_ioreq_server', (dm, d, s) => dm.destroyIoreqServer(d, s.id)],
  ['destroy_ioreq_server again', (dm, d, s) => dm.destroyIoreqServer(d, s.id)],
  ['set_mem_type ram_ro on gfn 16', (dm, d) => dm.setMemType(d, HVMMEM_ram_ro, 16n, 1)],
  ['set_mem_type back to ram_rw', (dm, d) => dm.setMemType(d, HVMMEM_ram_rw, 16n, 1)],
  ['set_mem_type beyond the last gfn', (dm, d) => dm.setMemType(d, HVMMEM_ram_rw, 0x100000n, 1)],
  ['modified_memory gfns 0-7', (dm, d) => dm.modifiedMemory(d, 0n, 8)],
  ['modified_memory beyond the last gfn', (dm, d) => dm.modifiedMemory(d, 0x100000n, 1)],
  ['track_dirty_vram 0 pages', (dm, d) => Array.from(dm.trackDirtyVram(d, 0n, 0))],
  ['inject_msi', (dm, d) => dm.injectMsi(d, 0xfee00000n, 0x41)],
];

function run(dm, domid) {
  const state = {};
  return steps.map(([name, fn]) => {
    try {
      const out = fn(dm, domid, state);
      return { name, ok: out === undefined ? null : out };
    } catch (err) {
      if (typeof err?.errno !== 'number') throw err;
      return { name, errno: err.code ?? err.errno };
    }
  });
}

const normalise = (r) =>
  JSON.parse(JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v)));

export default function (test) {
  test('DeviceModel on a real HVM domain agrees with PrivcmdModel + the DM_OP model, op by op', () => {
    const domid = makeHvm();
    const transport = rawTransport(domid);
    try {
      const real = normalise(run(new DeviceModel(transport), domid));
      const sim = new SimHypervisor();
      const simDomid = sim.createHvmDomain({
        vcpus: 1,
        memoryPages: 256,
        hap: true,
        nrIoreqServerPages: 0,
      });
      const simPrivcmd = new SimPrivcmd({ domid: simDomid, profile: null, backend: sim });
      const model = normalise(run(new DeviceModel(simPrivcmd), simDomid));
      const diffs = real
        .map((r, i) => ({ r, m: model[i] }))
        .filter(({ r, m }) => JSON.stringify(r) !== JSON.stringify(m))
        .map(
          ({ r, m }) =>
            `${r.name}: xen ${JSON.stringify(r.errno ?? r.ok)} model ${JSON.stringify(m.errno ?? m.ok)}`,
        );
      assert.deepEqual(
        diffs,
        [],
        `model disagrees with Xen on ${diffs.length} of ${real.length} ops`,
      );
      return { ops: real.length, xen: real.map((r) => `${r.name}=${r.errno ?? 'ok'}`).join('; ') };
    } finally {
      close(transport.fd);
      execFileSync('dmop-test', ['destroy', String(domid)]);
    }
  });
}
