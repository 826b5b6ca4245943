import {
  DeviceModel,
  IOCTL_PRIVCMD_DM_OP,
  IOCTL_PRIVCMD_RESTRICT,
  XenError,
} from '@xen-depriv/dmop-abi';
import type { IoctlPointer } from '@xen-depriv/sys';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type DeniedRequest,
  type PolicyContext,
  PrivcmdDeniedError,
  PrivcmdHandle,
  type PrivcmdIo,
  qemuXenHvmProfile,
} from '../src/index.js';
import { dmOp, extents, OP } from './helpers/dmop-bytes.js';

interface Call {
  fd: number;
  request: number;
  arg: string;
  pointers: { offset: number; size: number }[];
}
function stubIo(fail?: { request: number; error: Error }) {
  const calls: Call[] = [];
  const events: string[] = [];
  const io: PrivcmdIo = {
    open(path, flags) {
      events.push(`open ${path} ${flags}`);
      return 9;
    },
    close(fd) {
      events.push(`close ${fd}`);
    },
    ioctl(fd, request, arg, pointers?: readonly IoctlPointer[]) {
      calls.push({
        fd,
        request,
        arg: Buffer.from(arg).toString('hex'),
        pointers: (pointers ?? []).map((p) => ({ offset: p.offset, size: p.buffer.byteLength })),
      });
      if (fail && fail.request === request) throw fail.error;
      return 0;
    },
  };
  return { io, calls, events };
}
const ctx: PolicyContext = {
  guestMemoryEndGfn: 0x40000n,
  ioRanges: [{ type: 'port', start: 0x1f0n, end: 0x1f7n }],
};

describe('PrivcmdHandle over a stub ioctl (no kernel)', () => {
  it('opens the path and restricts the fd to the domid with a 2-byte domid_t', () => {
    const { io, calls, events } = stubIo();
    const h = PrivcmdHandle.open({
      domid: 7,
      profile: qemuXenHvmProfile,
      context: ctx,
      io,
      path: '/tmp/fake-privcmd',
    });
    expect(events).toEqual(['open /tmp/fake-privcmd 2']);
    expect(calls).toEqual([{ fd: 9, request: IOCTL_PRIVCMD_RESTRICT, arg: '0700', pointers: [] }]);
    h.close();
    h.close();
    expect(events).toEqual(['open /tmp/fake-privcmd 2', 'close 9']);
  });
  it('closes the fd again when RESTRICT fails', () => {
    const { io, events } = stubIo({ request: IOCTL_PRIVCMD_RESTRICT, error: new Error('EINVAL') });
    expect(() => PrivcmdHandle.open({ domid: 7, profile: null, io })).toThrow('EINVAL');
    expect(events).toEqual(['open /dev/xen/privcmd 2', 'close 9']);
  });
  it('lays out struct privcmd_dm_op with the buffer array behind it and patches every pointer', () => {
    const { io, calls } = stubIo();
    const h = PrivcmdHandle.open({ domid: 7, profile: qemuXenHvmProfile, context: ctx, io });
    h.dmOp(7, [dmOp(OP.modified_memory, [[0, 4, 1]]), extents([[4, 0x100n]])]);
    expect(calls[1]).toEqual({
      fd: 9,
      request: IOCTL_PRIVCMD_DM_OP,
      arg: [
        '0700' + '0200' + '00000000' + '0000000000000000', // dom 7, num 2, pad, ubufs (patched)
        '0000000000000000' + '2000000000000000', // uptr (patched), size 32
        '0000000000000000' + '1000000000000000', // uptr (patched), size 16
      ].join(''),
      pointers: [
        { offset: 8, size: 32 },
        { offset: 16, size: 32 },
        { offset: 32, size: 16 },
      ],
    });
    expect(h.counts).toEqual({ allowed: 1, denied: 0 });
  });
  it('a request the profile denies never reaches ioctl: counted, reported, thrown with EPERM', () => {
    const { io, calls } = stubIo();
    const denied: DeniedRequest[] = [];
    const h = PrivcmdHandle.open({
      domid: 7,
      profile: qemuXenHvmProfile,
      context: ctx,
      io,
      onDenied: (d) => denied.push(d),
    });
    let err: unknown;
    try {
      h.dmOp(7, [dmOp(OP.inject_msi, [[8, 8, 0xfed00000n]])]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PrivcmdDeniedError);
    expect((err as PrivcmdDeniedError).errno).toBe(1);
    expect(calls.map((c) => c.request)).toEqual([IOCTL_PRIVCMD_RESTRICT]);
    expect(h.counts).toEqual({ allowed: 0, denied: 1 });
    expect(denied).toEqual([
      { domid: 7, op: OP.inject_msi, decision: expect.objectContaining({ code: 'EPERM' }) },
    ]);
  });
  it('a request for another domid is refused as the kernel would (EPERM), even with no profile', () => {
    const { io, calls } = stubIo();
    const h = PrivcmdHandle.open({ domid: 7, profile: null, io });
    expect(() => h.dmOp(8, [dmOp(OP.nr_vcpus)])).toThrow(
      'PrivcmdHandle.dmOp: EPERM (errno 1): IOCTL_PRIVCMD_DM_OP: fd is restricted to domid 7, request targets domid 8',
    );
    expect(() => h.dmOp(7, [new Uint8Array(4097)])).toThrow(PrivcmdDeniedError);
    h.dmOp(7, [dmOp(OP.nr_vcpus)]);
    expect(calls.length).toBe(2);
  });
  it('property: ioctl is reached exactly for the requests check() allows', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            domid: fc.constantFrom(7, 8),
            op: fc.integer({ min: 0, max: 22 }),
            body: fc.uint8Array({ minLength: 24, maxLength: 24 }),
            extra: fc.array(fc.integer({ min: 0, max: 5000 }), { maxLength: 3 }),
          }),
          { maxLength: 20 },
        ),
        (reqs) => {
          const { io, calls } = stubIo();
          const h = PrivcmdHandle.open({ domid: 7, profile: qemuXenHvmProfile, context: ctx, io });
          let expected = 1;
          for (const r of reqs) {
            const first = dmOp(r.op);
            first.set(r.body, 8);
            const bufs = [first, ...r.extra.map((n) => new Uint8Array(n))];
            const allowed = h.check(r.domid, bufs).allowed;
            if (allowed) expected++;
            let threw = false;
            try {
              h.dmOp(r.domid, bufs);
            } catch (e) {
              threw = e instanceof PrivcmdDeniedError;
            }
            expect(threw).toBe(!allowed);
            expect(calls.length).toBe(expected);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('PrivcmdHandle as a dmop-abi DmOpTransport (stub ioctl, no kernel)', () => {
  it('DeviceModel over the handle: an allowed op is issued, a denied one throws a XenError before ioctl, a kernel refusal is -errno', () => {
    const requests: number[] = [];
    let refuse = 0;
    const io: PrivcmdIo = {
      open: () => 5,
      close: () => {},
      ioctl: (_fd, request) => {
        requests.push(request);
        if (refuse) throw Object.assign(new Error('kernel says no'), { errno: refuse });
        return 0;
      },
    };
    const h = PrivcmdHandle.open({ domid: 7, profile: qemuXenHvmProfile, context: ctx, io });
    const dm = new DeviceModel(h);
    dm.setIsaIrqLevel(7, 4, 1);
    expect(requests).toEqual([IOCTL_PRIVCMD_RESTRICT, IOCTL_PRIVCMD_DM_OP]);
    let err: unknown;
    try {
      dm.injectMsi(7, 0xfed00000n, 0x41);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(XenError);
    expect(err).toBeInstanceOf(PrivcmdDeniedError);
    expect((err as XenError).code).toBe('EPERM');
    expect(requests).toHaveLength(2);
    refuse = 22;
    expect(() => dm.setIsaIrqLevel(7, 4, 0)).toThrowError(
      expect.objectContaining({ name: 'XenError', errno: 22 }),
    );
    expect(h.restrict(7)).toBe(-22);
    refuse = 0;
    expect(h.restrict(7)).toBe(0);
    expect(h.restrict(8)).toBe(-22);
    expect(requests).toEqual([
      IOCTL_PRIVCMD_RESTRICT,
      IOCTL_PRIVCMD_DM_OP,
      IOCTL_PRIVCMD_DM_OP,
      IOCTL_PRIVCMD_RESTRICT,
      IOCTL_PRIVCMD_RESTRICT,
    ]);
  });
});
