import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as abi from '../src/index.js';
import {
  DeviceModel,
  type DmOpTransport,
  DOMID_INVALID,
  decodeDmOpResult,
  decodeMmapbatchErrors,
  encodeDmOp,
  encodeDomid,
  encodePrivcmdDmOp,
  encodePrivcmdDmOpBufs,
  encodePrivcmdMmapbatchV2,
  encodePrivcmdMmapResource,
  encodeXenPfnArray,
  XenError,
} from '../src/index.js';
import { DM_OPS } from '../src/layout.js';
import { here, hex, loadLayout, loadVectors, toDmOp, unhex, type Vector } from './helpers.js';

const vectors = loadVectors();
const dmOpVectors = vectors.filter((v) => v.dmop !== null);

describe('golden vectors captured from Debian libxendevicemodel', () => {
  it('cover every one of the 20 XEN_DMOP_* ops, and no op lacks a vector', () => {
    const covered = new Set(dmOpVectors.map((v) => v.dmop?.op));
    expect([...covered].sort()).toEqual(Object.keys(DM_OPS).sort());
    expect(Object.keys(DM_OPS)).toHaveLength(20);
  });

  it.each(dmOpVectors.map((v, i) => [`${i} ${v.fn} (${v.dmop?.op})`, v] as const))(
    'encodeDmOp is byte-identical: %s',
    (_, v) => {
      const ioctl = v.ioctls[0];
      expect(ioctl?.name).toBe('IOCTL_PRIVCMD_DM_OP');
      const { bufs } = encodeDmOp(toDmOp(v.dmop as Record<string, unknown>));
      expect(bufs.map(hex)).toEqual(ioctl?.bufs);
      // privcmd_dm_op with its pointer zeroed, as the shim records it, and the ubufs sizes.
      expect(
        hex(encodePrivcmdDmOp({ dom: v.args.domid as number, num: bufs.length, ubufs: 0n })),
      ).toBe(ioctl?.arg);
      expect(
        bufs.map((b) => hex(encodePrivcmdDmOpBufs([{ uptr: 0n, size: BigInt(b.byteLength) }]))),
      ).toEqual(ioctl?.ubufs);
    },
  );

  it.each(
    dmOpVectors
      .filter((v) => Object.keys(v.outputs).length > 0)
      .map((v, i) => [`${i} ${v.fn}`, v] as const),
  )('decodeDmOpResult reads the fake reply as the library does: %s', (_, v) => {
    const reply = (v.ioctls[0]?.replyBufs ?? []).map(unhex);
    const name = v.dmop?.op as keyof typeof DM_OPS;
    const got = decodeDmOpResult(name, reply) as Record<string, unknown>;
    for (const [key, want] of Object.entries(v.outputs)) {
      const value = got[key];
      if (value instanceof Uint8Array) expect(hex(value)).toBe(want);
      else if (typeof value === 'bigint') expect(value).toBe(BigInt(want as string));
      else expect(value).toBe(want);
    }
  });

  it('the open-time probe is a privcmd_dm_op for DOMID_INVALID with no buffers', () => {
    const open = vectors.find((v) => v.fn === 'xendevicemodel_open');
    expect(open?.ioctls).toHaveLength(1);
    expect(open?.ioctls[0]?.request).toBe(abi.IOCTL_PRIVCMD_DM_OP);
    expect(open?.ioctls[0]?.arg).toBe(
      hex(encodePrivcmdDmOp({ dom: DOMID_INVALID, num: 0, ubufs: 0n })),
    );
  });

  it('every recorded ioctl number equals the exported IOCTL_PRIVCMD_* constant of its name', () => {
    const seen = new Set<string>();
    for (const v of vectors) {
      for (const i of v.ioctls) {
        expect((abi as unknown as Record<string, number>)[i.name], i.name).toBe(i.request);
        seen.add(i.name);
      }
    }
    expect([...seen].sort()).toEqual([
      'IOCTL_PRIVCMD_DM_OP',
      'IOCTL_PRIVCMD_MMAPBATCH_V2',
      'IOCTL_PRIVCMD_MMAP_RESOURCE',
      'IOCTL_PRIVCMD_RESTRICT',
      'IOCTL_PRIVCMD_UNIMPLEMENTED',
    ]);
  });

  it('xenforeignmemory_map: privcmd_mmapbatch_v2, the gfn array and the err array', () => {
    const v = vectors.find((x) => x.fn === 'xenforeignmemory_map') as Vector;
    const ioctl = v.ioctls[0];
    const arr = (v.args.arr as string[]).map((s) => BigInt(s));
    expect(ioctl?.request).toBe(abi.IOCTL_PRIVCMD_MMAPBATCH_V2);
    expect(ioctl?.arg).toBe(
      hex(
        encodePrivcmdMmapbatchV2({
          num: arr.length,
          dom: v.args.domid as number,
          addr: 0n,
          arr: 0n,
          err: 0n,
        }),
      ),
    );
    expect(ioctl?.arr).toBe(hex(encodeXenPfnArray(arr)));
    expect(decodeMmapbatchErrors(unhex(ioctl?.replyErr ?? ''), arr.length)).toEqual(v.outputs.err);
  });

  it('xenforeignmemory_map_resource: privcmd_mmap_resource', () => {
    const v = vectors.find((x) => x.fn === 'xenforeignmemory_map_resource') as Vector;
    const a = v.args as {
      domid: number;
      type: number;
      id: number;
      frame: number;
      nrFrames: number;
    };
    expect(v.ioctls[0]?.arg).toBe(
      hex(
        encodePrivcmdMmapResource({
          dom: a.domid,
          type: a.type,
          id: a.id,
          idx: a.frame,
          num: BigInt(a.nrFrames),
          addr: 0n,
        }),
      ),
    );
  });

  it('restrict (devicemodel and foreignmemory) passes a bare domid_t', () => {
    for (const fn of ['xendevicemodel_restrict', 'xenforeignmemory_restrict']) {
      const v = vectors.find((x) => x.fn === fn) as Vector;
      expect(v.ioctls[0]?.request).toBe(abi.IOCTL_PRIVCMD_RESTRICT);
      expect(v.ioctls[0]?.arg).toBe(hex(encodeDomid(v.args.domid as number)));
    }
  });
});

/** Replays one vector: answers the DM_OP with the captured reply and records what was sent. */
function replay(v: Vector): { sent: string[][]; transport: DmOpTransport } {
  const sent: string[][] = [];
  let n = 0;
  const transport: DmOpTransport = {
    dmOp(domid, bufs) {
      const ioctl = v.ioctls[n++];
      expect(domid).toBe(v.args.domid);
      sent.push(bufs.map(hex));
      for (const [i, r] of (ioctl?.replyBufs ?? []).entries()) bufs[i]?.set(unhex(r));
      return ioctl !== undefined && ioctl.ret < 0 ? -ioctl.errno : 0;
    },
    restrict(domid) {
      sent.push([hex(encodeDomid(domid))]);
      return 0;
    },
  };
  return { sent, transport };
}

const big = (x: unknown): bigint => BigInt(x as string);
const num = (x: unknown): number => x as number;

/** One DeviceModel call per library function, with the vector's arguments in the library's order. */
const CALLS: Record<string, (dm: DeviceModel, a: Record<string, unknown>) => unknown> = {
  xendevicemodel_create_ioreq_server: (dm, a) => ({
    id: dm.createIoreqServer(num(a.domid), num(a.handleBufioreq)),
  }),
  xendevicemodel_get_ioreq_server_info: (dm, a) => {
    const r = dm.getIoreqServerInfo(num(a.domid), num(a.id), { gfns: a.gfns as boolean });
    return {
      ...r,
      ...(r.ioreqGfn !== undefined
        ? { ioreqGfn: `0x${r.ioreqGfn.toString(16).padStart(16, '0')}` }
        : {}),
      ...(r.bufioreqGfn !== undefined
        ? { bufioreqGfn: `0x${r.bufioreqGfn.toString(16).padStart(16, '0')}` }
        : {}),
    };
  },
  xendevicemodel_map_io_range_to_ioreq_server: (dm, a) =>
    dm.mapIoRangeToIoreqServer(
      num(a.domid),
      num(a.id),
      a.isMmio as boolean,
      big(a.start),
      big(a.end),
    ),
  xendevicemodel_unmap_io_range_from_ioreq_server: (dm, a) =>
    dm.unmapIoRangeFromIoreqServer(
      num(a.domid),
      num(a.id),
      a.isMmio as boolean,
      big(a.start),
      big(a.end),
    ),
  xendevicemodel_map_mem_type_to_ioreq_server: (dm, a) =>
    dm.mapMemTypeToIoreqServer(num(a.domid), num(a.id), num(a.type), num(a.flags)),
  xendevicemodel_map_pcidev_to_ioreq_server: (dm, a) =>
    dm.mapPcidevToIoreqServer(
      num(a.domid),
      num(a.id),
      num(a.segment),
      num(a.bus),
      num(a.device),
      num(a.function),
    ),
  xendevicemodel_unmap_pcidev_from_ioreq_server: (dm, a) =>
    dm.unmapPcidevFromIoreqServer(
      num(a.domid),
      num(a.id),
      num(a.segment),
      num(a.bus),
      num(a.device),
      num(a.function),
    ),
  xendevicemodel_set_ioreq_server_state: (dm, a) =>
    dm.setIoreqServerState(num(a.domid), num(a.id), a.enabled as boolean),
  xendevicemodel_destroy_ioreq_server: (dm, a) => dm.destroyIoreqServer(num(a.domid), num(a.id)),
  xendevicemodel_set_pci_intx_level: (dm, a) =>
    dm.setPciIntxLevel(
      num(a.domid),
      num(a.segment),
      num(a.bus),
      num(a.device),
      num(a.intx),
      num(a.level),
    ),
  xendevicemodel_set_isa_irq_level: (dm, a) =>
    dm.setIsaIrqLevel(num(a.domid), num(a.irq), num(a.level)),
  xendevicemodel_set_irq_level: (dm, a) => dm.setIrqLevel(num(a.domid), num(a.irq), num(a.level)),
  xendevicemodel_set_pci_link_route: (dm, a) =>
    dm.setPciLinkRoute(num(a.domid), num(a.link), num(a.irq)),
  xendevicemodel_inject_msi: (dm, a) => dm.injectMsi(num(a.domid), big(a.addr), num(a.data)),
  xendevicemodel_track_dirty_vram: (dm, a) => ({
    dirtyBitmap: hex(dm.trackDirtyVram(num(a.domid), big(a.firstPfn), num(a.nr))),
  }),
  xendevicemodel_modified_memory: (dm, a) =>
    dm.modifiedMemory(num(a.domid), big(a.firstPfn), num(a.nr)),
  xendevicemodel_modified_memory_bulk: (dm, a) =>
    dm.modifiedMemoryBulk(
      num(a.domid),
      (a.extents as { firstPfn: string; nr: number }[]).map((e) => ({
        firstPfn: BigInt(e.firstPfn),
        nr: e.nr,
      })),
    ),
  xendevicemodel_set_mem_type: (dm, a) =>
    dm.setMemType(num(a.domid), num(a.memType), big(a.firstPfn), num(a.nr)),
  xendevicemodel_inject_event: (dm, a) =>
    dm.injectEvent(
      num(a.domid),
      num(a.vcpu),
      num(a.vector),
      num(a.type),
      num(a.errorCode),
      num(a.insnLen),
      big(a.extra),
    ),
  xendevicemodel_shutdown: (dm, a) => dm.shutdown(num(a.domid), num(a.reason)),
  xendevicemodel_relocate_memory: (dm, a) =>
    dm.relocateMemory(num(a.domid), num(a.size), big(a.srcGfn), big(a.dstGfn)),
  xendevicemodel_pin_memory_cacheattr: (dm, a) =>
    dm.pinMemoryCacheattr(num(a.domid), big(a.start), big(a.end), num(a.type)),
  xendevicemodel_nr_vcpus: (dm, a) => ({ vcpus: dm.nrVcpus(num(a.domid)) }),
  xendevicemodel_restrict: (dm, a) => dm.restrict(num(a.domid)),
};

describe('DeviceModel mirrors libxendevicemodel on the golden vectors', () => {
  const libraryCalls = vectors.filter(
    (v) =>
      v.fn.startsWith('xendevicemodel_') &&
      v.fn !== 'xendevicemodel_open' &&
      v.fn !== 'xendevicemodel_close',
  );

  it('has one method per exported library function (the map in this test covers every captured function)', () => {
    expect(new Set(libraryCalls.map((v) => v.fn))).toEqual(new Set(Object.keys(CALLS)));
  });

  it.each(libraryCalls.map((v, i) => [`${i} ${v.fn} rc=${v.rc}`, v] as const))('%s', (_, v) => {
    const { sent, transport } = replay(v);
    const call = CALLS[v.fn] as (dm: DeviceModel, a: Record<string, unknown>) => unknown;
    const run = () => call(new DeviceModel(transport), v.args);
    if (v.rc < 0) {
      let caught: unknown;
      try {
        run();
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(XenError);
      expect((caught as XenError).errno).toBe(v.errno);
      expect((caught as XenError).syscall).toBe(v.fn);
    } else {
      const out = run();
      if (Object.keys(v.outputs).length > 0) expect(out).toEqual(v.outputs);
    }
    // The bytes DeviceModel handed the transport are what the library handed the kernel.
    expect(sent).toEqual(
      v.ioctls.map((i) => (i.name === 'IOCTL_PRIVCMD_RESTRICT' ? [i.arg] : i.bufs)),
    );
  });
});

const gcc = (() => {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const libs =
  existsSync('/usr/include/xendevicemodel.h') &&
  [
    '/usr/lib/x86_64-linux-gnu/libxendevicemodel.so',
    '/usr/lib/x86_64-linux-gnu/libxenforeignmemory.so',
  ].every(existsSync);

describe('regeneration', () => {
  it.skipIf(!gcc || !libs)(
    'rerunning tools/dmop-capture/run.sh against the installed libraries (needs gcc and libxen-dev) reproduces the committed vectors',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'dmop-capture-'));
      try {
        execFileSync('bash', [join(here, '../../../tools/dmop-capture/run.sh'), dir], {
          stdio: 'pipe',
        });
        expect(loadVectors(dir)).toEqual(loadVectors());
        expect(loadLayout(dir)).toEqual(loadLayout());
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    // Three gcc builds on a busy 2-core machine: not a performance bound, only vitest's default of 5 s is too short.
    120_000,
  );
});
