import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EvtchnModel, PrivcmdModel, type PrivcmdRequest } from '../src/index.js';

describe('PrivcmdModel (model of drivers/xen/privcmd.c): one example per errno', () => {
  it('RESTRICT sets the domid once; the same domid again is 0, another is EINVAL', () => {
    const m = new PrivcmdModel();
    expect(m.domid).toBeUndefined();
    expect(m.decide({ kind: 'restrict', domid: 5 })).toMatchObject({ allowed: true, errno: 0 });
    expect(m.domid).toBe(5);
    expect(m.decide({ kind: 'restrict', domid: 5 })).toMatchObject({ allowed: true, errno: 0 });
    expect(m.decide({ kind: 'restrict', domid: 6 })).toEqual({
      allowed: false,
      errno: 22,
      code: 'EINVAL',
      reason: 'IOCTL_PRIVCMD_RESTRICT: fd is already restricted to domid 5, got 6',
    });
    expect(m.domid).toBe(5);
  });
  it('HYPERCALL is allowed unrestricted and EPERM once restricted', () => {
    const m = new PrivcmdModel();
    expect(m.decide({ kind: 'hypercall', op: 38 }).allowed).toBe(true);
    m.decide({ kind: 'restrict', domid: 1 });
    expect(m.decide({ kind: 'hypercall', op: 38 })).toMatchObject({
      allowed: false,
      errno: 1,
      code: 'EPERM',
    });
  });
  it.each([
    ['mmap', { kind: 'mmap', dom: 2, num: 1 }],
    ['mmapbatch', { kind: 'mmapbatch', dom: 2, num: 1 }],
    ['mmapbatch_v2', { kind: 'mmapbatch_v2', dom: 2, num: 1 }],
    ['dm_op', { kind: 'dm_op', dom: 2, bufSizes: [16] }],
    ['mmap_resource', { kind: 'mmap_resource', dom: 2, type: 0, id: 0, idx: 0, num: 0, addr: 0n }],
  ] as const)('%s for another domid is EPERM, for the restricted one allowed', (_name, req) => {
    const m = new PrivcmdModel();
    m.decide({ kind: 'restrict', domid: 1 });
    expect(m.decide(req as PrivcmdRequest)).toMatchObject({ allowed: false, errno: 1 });
    expect(m.decide({ ...req, dom: 1 } as PrivcmdRequest)).toMatchObject({
      allowed: true,
      errno: 0,
    });
  });
  it('IRQFD/IOEVENTFD: ENOTTY on Linux 6.1, EPERM for another domid and EINVAL for unknown flags when present', () => {
    const old = new PrivcmdModel();
    expect(old.decide({ kind: 'irqfd', dom: 1, flags: 0 })).toMatchObject({
      errno: 25,
      code: 'ENOTTY',
    });
    const m = new PrivcmdModel({ irqfd: true });
    m.decide({ kind: 'restrict', domid: 1 });
    expect(m.decide({ kind: 'irqfd', dom: 2, flags: 0 })).toMatchObject({ errno: 1 });
    expect(m.decide({ kind: 'ioeventfd', dom: 2, flags: 0 })).toMatchObject({ errno: 1 });
    expect(m.decide({ kind: 'ioeventfd', dom: 1, flags: 2 })).toMatchObject({ errno: 22 });
    expect(m.decide({ kind: 'irqfd', dom: 1, flags: 1 })).toMatchObject({ allowed: true });
  });
  it('DM_OP: num == 0 returns 0; too many buffers or a too large buffer is E2BIG (module parameters configurable)', () => {
    const m = new PrivcmdModel();
    expect(m.decide({ kind: 'dm_op', dom: 3, bufSizes: [] })).toMatchObject({
      allowed: true,
      errno: 0,
    });
    expect(m.decide({ kind: 'dm_op', dom: 3, bufSizes: new Array(16).fill(8) }).allowed).toBe(true);
    expect(m.decide({ kind: 'dm_op', dom: 3, bufSizes: new Array(17).fill(8) })).toMatchObject({
      errno: 7,
      code: 'E2BIG',
    });
    expect(m.decide({ kind: 'dm_op', dom: 3, bufSizes: [4096] }).allowed).toBe(true);
    expect(m.decide({ kind: 'dm_op', dom: 3, bufSizes: [16, 4097] })).toMatchObject({
      errno: 7,
      reason: 'IOCTL_PRIVCMD_DM_OP: buffer 1 is 4097 bytes, at most dm_op_buf_max_size=4096',
    });
    const small = new PrivcmdModel({ dmOpMaxNrBufs: 2, dmOpBufMaxSize: 64 });
    expect(small.decide({ kind: 'dm_op', dom: 3, bufSizes: [8, 8, 8] }).errno).toBe(7);
    expect(small.decide({ kind: 'dm_op', dom: 3, bufSizes: [65] }).errno).toBe(7);
  });
  it('DM_OP: an empty buffer at a page-aligned address is EFAULT (lock_pages pins no page), after the size checks', () => {
    const m = new PrivcmdModel();
    expect(
      m.decide({ kind: 'dm_op', dom: 3, bufSizes: [32, 0], bufPageOffsets: [0, 0] }),
    ).toMatchObject({
      errno: 14,
      code: 'EFAULT',
      reason:
        'IOCTL_PRIVCMD_DM_OP: buffer 1 is empty at a page-aligned address: lock_pages() pins no page',
    });
    expect(
      m.decide({ kind: 'dm_op', dom: 3, bufSizes: [32, 0], bufPageOffsets: [0, 8] }).allowed,
    ).toBe(true);
    expect(m.decide({ kind: 'dm_op', dom: 3, bufSizes: [32, 0] }).allowed).toBe(true);
    expect(
      m.decide({ kind: 'dm_op', dom: 3, bufSizes: [0, 4097], bufPageOffsets: [0, 0] }).errno,
    ).toBe(7);
  });
  it('DM_OP restriction is checked before num == 0', () => {
    const m = new PrivcmdModel();
    m.decide({ kind: 'restrict', domid: 1 });
    expect(m.decide({ kind: 'dm_op', dom: 2, bufSizes: [] }).errno).toBe(1);
  });
  it('MMAPBATCH with num == 0 (as unsigned) is EINVAL; MMAP_RESOURCE with only one of addr/num is EINVAL', () => {
    const m = new PrivcmdModel();
    expect(m.decide({ kind: 'mmapbatch_v2', dom: 1, num: 0 }).errno).toBe(22);
    expect(m.decide({ kind: 'mmapbatch', dom: 1, num: 0 }).errno).toBe(22);
    // privcmd.c copies v1 into the v2 struct, whose num is unsigned: -1 is not "<= 0" there.
    expect(m.decide({ kind: 'mmapbatch', dom: 1, num: -1 }).errno).toBe(0);
    expect(
      m.decide({ kind: 'mmap_resource', dom: 1, type: 0, id: 0, idx: 0, num: 2, addr: 0n }).errno,
    ).toBe(22);
    expect(
      m.decide({ kind: 'mmap_resource', dom: 1, type: 0, id: 0, idx: 0, num: 0, addr: 0x1000n })
        .errno,
    ).toBe(22);
    expect(
      m.decide({ kind: 'mmap_resource', dom: 1, type: 0, id: 0, idx: 0, num: 2, addr: 0x1000n })
        .allowed,
    ).toBe(true);
  });
  it('MMAP is ENOSYS with auto-translated physmap, before the restriction', () => {
    const m = new PrivcmdModel({ autoTranslatedPhysmap: true });
    m.decide({ kind: 'restrict', domid: 1 });
    expect(m.decide({ kind: 'mmap', dom: 2, num: 1 }).errno).toBe(38);
  });
  it('an unknown ioctl is ENOTTY', () => {
    expect(new PrivcmdModel().decide({ kind: 'unknown', request: 0x5099 })).toMatchObject({
      errno: 25,
      reason: 'privcmd: unknown ioctl request 0x5099',
    });
  });
});

describe('EvtchnModel (model of drivers/xen/evtchn.c): its own rules', () => {
  it('RESTRICT_DOMID is once only, even with the same domid (EACCES), and rejects 0 and reserved domids (EINVAL)', () => {
    const m = new EvtchnModel();
    expect(m.decide({ kind: 'restrict_domid', domid: 0 })).toMatchObject({ errno: 22 });
    expect(m.decide({ kind: 'restrict_domid', domid: 0x7ff0 })).toMatchObject({ errno: 22 });
    expect(m.decide({ kind: 'restrict_domid', domid: 4 }).allowed).toBe(true);
    expect(m.domid).toBe(4);
    expect(m.decide({ kind: 'restrict_domid', domid: 4 })).toMatchObject({
      errno: 13,
      code: 'EACCES',
    });
  });
  it('a restricted fd cannot bind VIRQs or unbound ports and binds interdomain only to its domid', () => {
    const m = new EvtchnModel();
    m.decide({ kind: 'restrict_domid', domid: 4 });
    expect(m.decide({ kind: 'bind_virq', virq: 0 }).errno).toBe(13);
    expect(m.decide({ kind: 'bind_unbound_port', remoteDomain: 4 }).errno).toBe(13);
    expect(m.decide({ kind: 'bind_interdomain', remoteDomain: 5, remotePort: 1 }).errno).toBe(13);
    expect(m.decide({ kind: 'bind_interdomain', remoteDomain: 4, remotePort: 1 }).allowed).toBe(
      true,
    );
  });
  it('UNBIND past nr_channels is EINVAL, of a port not bound ENOTCONN; NOTIFY likewise ENOTCONN; unknown is ENOSYS', () => {
    const m = new EvtchnModel();
    expect(m.decide({ kind: 'unbind', port: 4096 }).errno).toBe(22);
    expect(m.decide({ kind: 'unbind', port: 7 }).errno).toBe(107);
    expect(m.decide({ kind: 'notify', port: 7 }).errno).toBe(107);
    m.bound(7);
    expect(m.decide({ kind: 'notify', port: 7 }).allowed).toBe(true);
    expect(m.decide({ kind: 'unbind', port: 7 }).allowed).toBe(true);
    expect(m.decide({ kind: 'reset' }).allowed).toBe(true);
    expect(m.decide({ kind: 'unknown', request: 0x4599 })).toMatchObject({
      errno: 38,
      code: 'ENOSYS',
    });
  });
});

// A second, independent statement of privcmd's rules: a first-match table of
// (applies, errno) rows over a plain state record, written from privcmd.c without the model.
interface TableState {
  restrictedTo: number | null;
}
type Row = readonly [(r: PrivcmdRequest, s: TableState, p: Params) => boolean, number];
interface Params {
  maxBufs: number;
  maxSize: number;
  irqfd: boolean;
}
const domOf = (r: PrivcmdRequest): number | null => ('dom' in r ? r.dom : null);
const TABLE: readonly Row[] = [
  [(r, _s, p) => (r.kind === 'irqfd' || r.kind === 'ioeventfd') && !p.irqfd, 25],
  [(r) => r.kind === 'unknown', 25],
  [(r) => (r.kind === 'irqfd' || r.kind === 'ioeventfd') && (r.flags & ~1) !== 0, 22],
  [(r, s) => r.kind === 'hypercall' && s.restrictedTo !== null, 1],
  [(r, s) => r.kind === 'restrict' && s.restrictedTo !== null && s.restrictedTo !== r.domid, 22],
  [(r, s) => domOf(r) !== null && s.restrictedTo !== null && domOf(r) !== s.restrictedTo, 1],
  [(r) => r.kind === 'dm_op' && r.bufSizes.length === 0, 0],
  [(r, _s, p) => r.kind === 'dm_op' && r.bufSizes.length > p.maxBufs, 7],
  [(r, _s, p) => r.kind === 'dm_op' && r.bufSizes.some((b) => b > p.maxSize), 7],
  [(r) => (r.kind === 'mmapbatch' || r.kind === 'mmapbatch_v2') && r.num % 2 ** 32 === 0, 22],
  [(r) => r.kind === 'mmap_resource' && (r.addr === 0n) !== (r.num === 0), 22],
];
function tableErrno(r: PrivcmdRequest, s: TableState, p: Params): number {
  for (const [applies, errno] of TABLE) if (applies(r, s, p)) return errno;
  if (r.kind === 'restrict' && s.restrictedTo === null) s.restrictedTo = r.domid;
  return 0;
}

const dom = fc.integer({ min: 0, max: 4 });
const request: fc.Arbitrary<PrivcmdRequest> = fc.oneof(
  fc.record({ kind: fc.constant('hypercall' as const), op: fc.nat(64) }),
  fc.record({ kind: fc.constant('mmap' as const), dom, num: fc.integer({ min: -2, max: 4 }) }),
  fc.record({ kind: fc.constant('mmapbatch' as const), dom, num: fc.integer({ min: -2, max: 4 }) }),
  fc.record({
    kind: fc.constant('mmapbatch_v2' as const),
    dom,
    num: fc.integer({ min: -2, max: 4 }),
  }),
  fc.record({
    kind: fc.constant('dm_op' as const),
    dom,
    bufSizes: fc.array(fc.integer({ min: 0, max: 5000 }), { maxLength: 20 }),
  }),
  fc.record({ kind: fc.constant('restrict' as const), domid: dom }),
  fc.record({
    kind: fc.constant('mmap_resource' as const),
    dom,
    type: fc.nat(2),
    id: fc.nat(3),
    idx: fc.nat(3),
    num: fc.nat(3),
    addr: fc.constantFrom(0n, 0x7f0000000000n),
  }),
  fc.record({ kind: fc.constant('irqfd' as const), dom, flags: fc.nat(3) }),
  fc.record({ kind: fc.constant('ioeventfd' as const), dom, flags: fc.nat(3) }),
  fc.record({ kind: fc.constant('unknown' as const), request: fc.nat() }),
);

describe('PrivcmdModel (model) against an independent rule table', () => {
  it('decides every random request sequence exactly as the table does', () => {
    fc.assert(
      fc.property(
        fc.array(request, { maxLength: 30 }),
        fc.integer({ min: 1, max: 18 }),
        fc.integer({ min: 0, max: 5000 }),
        fc.boolean(),
        (reqs, maxBufs, maxSize, irqfd) => {
          const model = new PrivcmdModel({
            dmOpMaxNrBufs: maxBufs,
            dmOpBufMaxSize: maxSize,
            irqfd,
          });
          const state: TableState = { restrictedTo: null };
          for (const r of reqs) {
            const d = model.decide(r);
            const expected = tableErrno(r, state, { maxBufs, maxSize, irqfd });
            expect(d.errno).toBe(expected);
            expect(d.allowed).toBe(expected === 0);
            expect(model.domid ?? null).toBe(state.restrictedTo);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
