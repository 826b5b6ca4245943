// privcmd-filter's PrivcmdModel against the real Linux 6.1 privcmd driver of a Xen 4.17 dom0.
// Every request goes to the real kernel through @xen-depriv/sys, and the model must predict
// its answer (0 or the errno). A difference is a bug in the model, never in this test.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  IOCTL_PRIVCMD_DM_OP,
  IOCTL_PRIVCMD_HYPERCALL,
  IOCTL_PRIVCMD_IRQFD,
  IOCTL_PRIVCMD_MMAP,
  IOCTL_PRIVCMD_MMAP_RESOURCE,
  IOCTL_PRIVCMD_MMAPBATCH_V2,
  IOCTL_PRIVCMD_RESTRICT,
} from '@xen-depriv/dmop-abi';
import { SIZEOF } from '@xen-depriv/dmop-abi/layout';
import { PrivcmdModel } from '@xen-depriv/privcmd-filter';
import { close, constants, ioctl, open } from '@xen-depriv/sys';

const XEN_DMOP_nr_vcpus = 20;
const XEN_DM_OP_SIZE = SIZEOF.xen_dm_op;
const __HYPERVISOR_xen_version = 17;

export function makeHvm() {
  const out = execFileSync('dmop-test', ['mkhvm', '16', '1'], { encoding: 'utf8' });
  const m = /created HVM domid (\d+)/.exec(out);
  assert.ok(m, `dmop-test mkhvm: ${out}`);
  return Number(m[1]);
}

/** Runs one ioctl on the real driver: 0 (or the positive return) on success, -errno on failure. */
function real(fd, request, arg, pointers) {
  try {
    return ioctl(fd, request, arg, pointers);
  } catch (err) {
    if (typeof err?.errno !== 'number') throw err;
    return -err.errno;
  }
}

/** struct privcmd_dm_op followed by its privcmd_dm_op_buf array, both in one argument. */
export function dmOpArg(dom, bufs) {
  const arg = new Uint8Array(16 + 16 * bufs.length);
  const v = new DataView(arg.buffer);
  v.setUint16(0, dom, true);
  v.setUint16(2, bufs.length, true);
  const pointers = [];
  if (bufs.length) pointers.push({ offset: 8, buffer: arg.subarray(16) });
  bufs.forEach((b, i) => {
    pointers.push({ offset: 16 + 16 * i, buffer: b });
    v.setBigUint64(16 + 16 * i + 8, BigInt(b.length), true);
  });
  return { arg, pointers };
}

export function nrVcpusBuf() {
  const b = new Uint8Array(XEN_DM_OP_SIZE);
  new DataView(b.buffer).setUint32(0, XEN_DMOP_nr_vcpus, true);
  return b;
}

export default function (test) {
  test('PrivcmdModel predicts the real driver for the restriction matrix', () => {
    const a = makeHvm();
    const b = makeHvm();
    const fd = open('/dev/xen/privcmd', constants.O_RDWR);
    const model = new PrivcmdModel();
    const rows = [];
    const check = (what, request, number, arg, pointers, after) => {
      const got = real(fd, number, arg, pointers);
      const want = model.decide(request);
      const gotErrno = got < 0 ? -got : 0;
      rows.push({ what, real: gotErrno, model: want.errno });
      assert.equal(
        gotErrno,
        want.errno,
        `${what}: kernel errno ${gotErrno}, model ${want.errno} (${want.reason})`,
      );
      after?.();
    };
    try {
      const hypercall = () => {
        const arg = new Uint8Array(48);
        new DataView(arg.buffer).setBigUint64(0, BigInt(__HYPERVISOR_xen_version), true);
        return arg; // XENVER_version (cmd 0), no pointer
      };
      const restrict = (d) => {
        const arg = new Uint8Array(2);
        new DataView(arg.buffer).setUint16(0, d, true);
        return arg;
      };
      const dmop = (dom, bufs) => dmOpArg(dom, bufs);
      const v2 = (dom) => {
        const arg = new Uint8Array(32);
        const dv = new DataView(arg.buffer);
        dv.setUint32(0, 1, true);
        dv.setUint16(4, dom, true);
        return arg;
      };
      const v1 = (dom) => {
        const arg = new Uint8Array(16);
        const dv = new DataView(arg.buffer);
        dv.setInt32(0, 1, true);
        dv.setUint16(4, dom, true);
        return arg;
      };
      const resource = (dom) => {
        const arg = new Uint8Array(32);
        const dv = new DataView(arg.buffer);
        dv.setUint16(0, dom, true);
        dv.setUint32(4, 1, true); // XENMEM_resource_ioreq_server
        dv.setBigUint64(16, 1n, true);
        return arg;
      };

      check(
        'hypercall xen_version, unrestricted',
        { kind: 'hypercall', op: __HYPERVISOR_xen_version },
        IOCTL_PRIVCMD_HYPERCALL,
        hypercall(),
      );
      let p = dmop(b, []);
      check(
        'dm_op num=0, unrestricted',
        { kind: 'dm_op', dom: b, bufSizes: [] },
        IOCTL_PRIVCMD_DM_OP,
        p.arg,
        p.pointers,
      );
      p = dmop(b, [nrVcpusBuf()]);
      check(
        'dm_op nr_vcpus on B, unrestricted',
        { kind: 'dm_op', dom: b, bufSizes: [XEN_DM_OP_SIZE] },
        IOCTL_PRIVCMD_DM_OP,
        p.arg,
        p.pointers,
      );
      check('restrict A', { kind: 'restrict', domid: a }, IOCTL_PRIVCMD_RESTRICT, restrict(a));
      check(
        'restrict A again',
        { kind: 'restrict', domid: a },
        IOCTL_PRIVCMD_RESTRICT,
        restrict(a),
      );
      check(
        'restrict B after A',
        { kind: 'restrict', domid: b },
        IOCTL_PRIVCMD_RESTRICT,
        restrict(b),
      );
      check(
        'hypercall after restrict',
        { kind: 'hypercall', op: __HYPERVISOR_xen_version },
        IOCTL_PRIVCMD_HYPERCALL,
        hypercall(),
      );
      p = dmop(b, [nrVcpusBuf()]);
      check(
        'dm_op for another domid',
        { kind: 'dm_op', dom: b, bufSizes: [XEN_DM_OP_SIZE] },
        IOCTL_PRIVCMD_DM_OP,
        p.arg,
        p.pointers,
      );
      p = dmop(a, []);
      check(
        'dm_op num=0 for own domid',
        { kind: 'dm_op', dom: a, bufSizes: [] },
        IOCTL_PRIVCMD_DM_OP,
        p.arg,
        p.pointers,
      );
      const out = nrVcpusBuf();
      p = dmop(a, [out]);
      check(
        'dm_op nr_vcpus for own domid',
        { kind: 'dm_op', dom: a, bufSizes: [XEN_DM_OP_SIZE] },
        IOCTL_PRIVCMD_DM_OP,
        p.arg,
        p.pointers,
        () =>
          assert.equal(
            new DataView(out.buffer).getUint32(8, true),
            1,
            'nr_vcpus of a 1-vCPU domain',
          ),
      );
      const seventeen = Array.from({ length: 17 }, () => nrVcpusBuf());
      p = dmop(a, seventeen);
      check(
        'dm_op with 17 buffers',
        { kind: 'dm_op', dom: a, bufSizes: seventeen.map((x) => x.length) },
        IOCTL_PRIVCMD_DM_OP,
        p.arg,
        p.pointers,
      );
      const big = new Uint8Array(4097);
      new DataView(big.buffer).setUint32(0, XEN_DMOP_nr_vcpus, true);
      p = dmop(a, [big]);
      check(
        'dm_op with a 4097-byte buffer',
        { kind: 'dm_op', dom: a, bufSizes: [4097] },
        IOCTL_PRIVCMD_DM_OP,
        p.arg,
        p.pointers,
      );
      check(
        'mmapbatch_v2 for another domid',
        { kind: 'mmapbatch_v2', dom: b, num: 1 },
        IOCTL_PRIVCMD_MMAPBATCH_V2,
        v2(b),
      );
      check(
        'mmap (v1) for another domid',
        { kind: 'mmap', dom: b, num: 1 },
        IOCTL_PRIVCMD_MMAP,
        v1(b),
      );
      check(
        'mmap_resource for another domid',
        { kind: 'mmap_resource', dom: b, type: 1, id: 0, idx: 0, num: 1, addr: 0n },
        IOCTL_PRIVCMD_MMAP_RESOURCE,
        resource(b),
      );
      check(
        'irqfd (absent before Linux 6.7)',
        { kind: 'irqfd', dom: a, flags: 0 },
        IOCTL_PRIVCMD_IRQFD,
        new Uint8Array(24),
      );
      check(
        'an unknown privcmd ioctl',
        { kind: 'unknown', request: 0x0000503f },
        0x0000503f,
        new Uint8Array(8),
      );
    } finally {
      close(fd);
      execFileSync('dmop-test', ['destroy', String(a)]);
      execFileSync('dmop-test', ['destroy', String(b)]);
    }
    return { checks: rows.length, errnos: rows.map((r) => `${r.what}=${r.real}`).join('; ') };
  });

  test('a DM_OP round trip through sys.ioctl on real Xen (figure)', () => {
    const a = makeHvm();
    const fd = open('/dev/xen/privcmd', constants.O_RDWR);
    try {
      const out = nrVcpusBuf();
      const { arg, pointers } = dmOpArg(a, [out]);
      const n = 500;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) ioctl(fd, IOCTL_PRIVCMD_DM_OP, arg, pointers);
      const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
      assert.equal(new DataView(out.buffer).getUint32(8, true), 1);
      return {
        dmOpRoundTripMicroseconds: Number(us.toFixed(1)),
        iterations: n,
        note: 'TCG-emulated host',
      };
    } finally {
      close(fd);
      execFileSync('dmop-test', ['destroy', String(a)]);
    }
  });
}
