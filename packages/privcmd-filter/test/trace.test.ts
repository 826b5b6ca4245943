import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IOCTL_PRIVCMD_DM_OP, IOCTL_PRIVCMD_RESTRICT } from '@xen-depriv/dmop-abi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  auditTrace,
  type PolicyContext,
  PolicyError,
  parseTrace,
  qemuXenHvmProfile,
} from '../src/index.js';

const TOOL = join(__dirname, '..', '..', '..', 'tools', 'privcmd-trace');
const ctx: PolicyContext = {
  guestMemoryEndGfn: 0x40000n,
  ioRanges: [{ type: 'port', start: 0x1f0n, end: 0x1f7n }],
};

const canBuild =
  spawnSync('make', ['--version']).status === 0 &&
  spawnSync('gcc', ['--version']).status === 0 &&
  existsSync('/usr/include/xendevicemodel.h') &&
  existsSync('/usr/include/xenevtchn.h');

describe.skipIf(!canBuild)(
  'tools/privcmd-trace recording a C client of Debian libxendevicemodel (fake privcmd; needs gcc, make, libxen-dev)',
  () => {
    let dir = '';
    let text = '';
    let tracePath = '';
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'pf-trace-'));
      execFileSync('make', [
        '-s',
        '-C',
        TOOL,
        `OUT=${dir}`,
        `${dir}/libprivcmd-trace.so`,
        `${dir}/dm-client`,
      ]);
      const trace = join(dir, 'trace.jsonl');
      execFileSync(join(dir, 'dm-client'), ['7'], {
        env: {
          ...process.env,
          LD_PRELOAD: join(dir, 'libprivcmd-trace.so'),
          PRIVCMD_TRACE: trace,
          PRIVCMD_TRACE_FAKE: '1',
        },
      });
      text = readFileSync(trace, 'utf8');
      tracePath = trace;
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('records every privcmd and evtchn ioctl with its input, as the library laid it out', () => {
      const records = parseTrace(text);
      expect(records.map((r) => [r.dev, r.request])).toEqual([
        ['privcmd', IOCTL_PRIVCMD_DM_OP], // libxendevicemodel's probe: dom DOMID_INVALID, num 0
        ...new Array(6).fill(['privcmd', IOCTL_PRIVCMD_DM_OP]),
        ['privcmd', IOCTL_PRIVCMD_RESTRICT],
        ['evtchn', 0x00024506],
        ['evtchn', 0x00084501],
        ['privcmd', IOCTL_PRIVCMD_DM_OP],
        ['evtchn', 0x00084501],
      ]);
      expect(records[0]).toMatchObject({ dom: 0x7ff4, num: 0, bufs: [] });
      // inject_msi(addr 0xfee01000, data 0x4041): struct xen_dm_op of 32 bytes.
      expect(records[4]).toMatchObject({
        dom: 7,
        num: 1,
        bufs: ['0e0000000000000041400000000000000010e0fe000000000000000000000000'],
      });
      expect(records[7]).toMatchObject({ domid: 7, ret: 0, fake: true });
    });

    it('auditTrace reports what the profile and the kernel model would deny, with counts', () => {
      const report = auditTrace(text, qemuXenHvmProfile, ctx);
      expect({
        total: report.total,
        allowed: report.allowed,
        deniedByKernel: report.deniedByKernel,
        deniedByProfile: report.deniedByProfile,
      }).toEqual({ total: 12, allowed: 8, deniedByKernel: 2, deniedByProfile: 2 });
      expect(report.denials.map((d) => [d.seq, d.name, d.by, d.code])).toEqual([
        [6, 'XEN_DMOP_inject_msi', 'profile', 'EPERM'],
        [7, 'XEN_DMOP_set_mem_type', 'profile', 'EPERM'],
        [11, 'XEN_DMOP_set_isa_irq_level', 'kernel', 'EPERM'],
        [12, 'IOCTL_EVTCHN_BIND_INTERDOMAIN', 'kernel', 'EACCES'],
      ]);
      expect(report.byName.XEN_DMOP_inject_msi).toEqual({
        total: 2,
        allowed: 1,
        deniedByKernel: 0,
        deniedByProfile: 1,
      });
    });

    it.skipIf(!existsSync(join(__dirname, '..', 'dist', 'index.js')))(
      'tools/privcmd-trace/audit.mjs prints the same report and exits 1 on denials (needs the built dist)',
      () => {
        const r = spawnSync(
          process.execPath,
          [
            join(TOOL, 'audit.mjs'),
            tracePath,
            '--mem-end-gfn',
            '0x40000',
            '--io',
            'port:0x1f0-0x1f7',
          ],
          { encoding: 'utf8' },
        );
        expect(r.status).toBe(1);
        expect(r.stdout.split('\n')[0]).toBe(
          "profile qemu-xen-hvm: 12 requests, 8 allowed, 2 denied by the kernel's rules, 2 by the profile",
        );
        expect(r.stdout).toContain('by kernel: EACCES IOCTL_EVTCHN_BIND_INTERDOMAIN');
      },
    );
  },
);

describe('parseTrace / auditTrace on hand-written traces', () => {
  it('refuses malformed lines with a typed error naming the line', () => {
    expect(() => parseTrace('{"seq":1}\nnot json')).toThrow(PolicyError);
    expect(() =>
      parseTrace('\n{"seq":1,"pid":1,"fd":3,"request":1,"ret":0,"errno":0,"dev":"kvm"}'),
    ).toThrow('line 2/dev: expected privcmd, evtchn or gntdev, got "kvm"');
    expect(() =>
      parseTrace('{"seq":1.5,"pid":1,"fd":3,"request":1,"ret":0,"errno":0,"dev":"privcmd"}'),
    ).toThrow('line 1/seq: expected an integer, got 1.5');
  });
  it('a HYPERCALL after RESTRICT on the same fd is a kernel denial; on another fd it is not', () => {
    const line = (seq: number, fd: number, request: number, extra: string) =>
      `{"seq":${seq},"pid":9,"dev":"privcmd","fd":${fd},"request":${request},${extra}"ret":0,"errno":0}`;
    const trace = [
      line(1, 3, IOCTL_PRIVCMD_RESTRICT, '"domid":4,'),
      line(2, 3, 0x00305000, '"op":38,"args":[0,0,0,0,0],'),
      line(3, 5, 0x00305000, '"op":38,"args":[0,0,0,0,0],'),
    ].join('\n');
    const report = auditTrace(trace, qemuXenHvmProfile, ctx);
    expect(report.denials).toEqual([
      {
        seq: 2,
        pid: 9,
        fd: 3,
        name: 'IOCTL_PRIVCMD_HYPERCALL',
        by: 'kernel',
        errno: 1,
        code: 'EPERM',
        reason:
          'IOCTL_PRIVCMD_HYPERCALL: fd is restricted to domid 4, arbitrary hypercalls are refused',
      },
    ]);
    expect(report.allowed).toBe(2);
  });
  it('a DM_OP buffer that is not hex is a BAD_TRACE error', () => {
    const t = `{"seq":1,"pid":9,"dev":"privcmd","fd":3,"request":${IOCTL_PRIVCMD_DM_OP},"dom":1,"num":1,"bufs":["xyz"],"ret":0,"errno":0}`;
    expect(() => auditTrace(t, qemuXenHvmProfile, ctx)).toThrow(
      'seq 1/bufs/0: expected the buffer as even-length lowercase hex',
    );
  });
});
