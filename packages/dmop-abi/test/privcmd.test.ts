import { constants } from 'node:os';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeEvtchnBindInterdomain,
  decodeMmapbatchErrors,
  decodePrivcmdDmOp,
  decodePrivcmdDmOpBufs,
  decodePrivcmdHypercall,
  decodePrivcmdMmap,
  decodePrivcmdMmapbatch,
  decodePrivcmdMmapbatchV2,
  decodePrivcmdMmapEntry,
  decodePrivcmdMmapResource,
  Errno,
  encodeDomid,
  encodeEvtchnBindInterdomain,
  encodeEvtchnU32,
  encodePrivcmdDmOp,
  encodePrivcmdDmOpBufs,
  encodePrivcmdHypercall,
  encodePrivcmdMmap,
  encodePrivcmdMmapbatch,
  encodePrivcmdMmapbatchV2,
  encodePrivcmdMmapEntry,
  encodePrivcmdMmapResource,
  errnoName,
  XenError,
} from '../src/index.js';

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

describe('privcmd struct codecs (fast-check)', () => {
  it('privcmd_dm_op and its ubufs round-trip', () => {
    fc.assert(
      fc.property(
        fc.record({ dom: u16, num: u16, ubufs: u64 }),
        fc.array(fc.record({ uptr: u64, size: u64 }), { maxLength: 4 }),
        (op, bufs) => {
          expect(decodePrivcmdDmOp(encodePrivcmdDmOp(op))).toEqual(op);
          expect(decodePrivcmdDmOpBufs(encodePrivcmdDmOpBufs(bufs), bufs.length)).toEqual(bufs);
        },
      ),
    );
  });
  it('privcmd_mmapbatch_v2, privcmd_mmap_resource and privcmd_hypercall round-trip', () => {
    fc.assert(
      fc.property(
        fc.record({ num: u32, dom: u16, addr: u64, arr: u64, err: u64 }),
        fc.record({ dom: u16, type: u32, id: u32, idx: u32, num: u64, addr: u64 }),
        fc.record({ op: u64, args: fc.tuple(u64, u64, u64, u64, u64) }),
        (batch, res, call) => {
          expect(decodePrivcmdMmapbatchV2(encodePrivcmdMmapbatchV2(batch))).toEqual(batch);
          expect(decodePrivcmdMmapResource(encodePrivcmdMmapResource(res))).toEqual(res);
          expect(decodePrivcmdHypercall(encodePrivcmdHypercall(call))).toEqual(call);
        },
      ),
    );
  });
  it('privcmd_mmap, privcmd_mmap_entry, privcmd_mmapbatch and evtchn bind_interdomain round-trip', () => {
    const i32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
    fc.assert(
      fc.property(
        fc.record({ num: i32, dom: u16, entry: u64 }),
        fc.record({ va: u64, mfn: u64, npages: u64 }),
        fc.record({ num: i32, dom: u16, addr: u64, arr: u64 }),
        fc.record({ remote_domain: u32, remote_port: u32 }),
        (mmap, entry, batch, bind) => {
          expect(decodePrivcmdMmap(encodePrivcmdMmap(mmap))).toEqual(mmap);
          expect(decodePrivcmdMmapEntry(encodePrivcmdMmapEntry(entry))).toEqual(entry);
          expect(decodePrivcmdMmapbatch(encodePrivcmdMmapbatch(batch))).toEqual(batch);
          expect(decodeEvtchnBindInterdomain(encodeEvtchnBindInterdomain(bind))).toEqual(bind);
        },
      ),
    );
    expect([...encodeEvtchnU32(0x01020304)]).toEqual([4, 3, 2, 1]);
  });
  it('out-of-range fields are RangeErrors naming struct and field', () => {
    expect(() => encodePrivcmdDmOp({ dom: 0x10000, num: 1, ubufs: 0n })).toThrow(
      'privcmd_dm_op.dom: expected an integer in [0, 65535], saw 65536',
    );
    expect(() =>
      encodePrivcmdMmapResource({ dom: 1, type: 0, id: 0, idx: 0, num: -1n, addr: 0n }),
    ).toThrow('privcmd_mmap_resource.num: expected a bigint in [0, 2^64-1], saw -1');
    expect(() => encodeDomid(-1)).toThrow(RangeError);
    expect(() => decodePrivcmdDmOp(new Uint8Array(15))).toThrow(
      'privcmd_dm_op: expected at least 16 bytes, saw 15',
    );
  });
  it('the MMAPBATCH_V2 err array is signed', () => {
    expect(decodeMmapbatchErrors(new Uint8Array([0, 0, 0, 0, 0xf2, 0xff, 0xff, 0xff]), 2)).toEqual([
      0, -14,
    ]);
  });
});

describe('errno', () => {
  it('every Errno number is the Linux one node reports', () => {
    for (const [name, value] of Object.entries(Errno)) {
      expect(value, name).toBe((constants.errno as Record<string, number>)[name]);
      expect(errnoName(value)).toBe(name);
    }
  });
  it('XenError carries errno, code and the failing call in its message', () => {
    const e = new XenError('xendevicemodel_nr_vcpus', 3);
    expect(e).toMatchObject({ errno: 3, code: 'ESRCH', syscall: 'xendevicemodel_nr_vcpus' });
    expect(e.message).toBe('xendevicemodel_nr_vcpus: ESRCH (errno 3)');
    expect(new XenError('x', 200).code).toBe('E200');
  });
});
