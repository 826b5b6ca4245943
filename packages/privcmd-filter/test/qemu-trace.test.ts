import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  auditTrace,
  deviceModelContext,
  parseTrace,
  qemuXenHvmProfile,
  xenDeviceModelSeccomp,
} from '../src/index.js';
import {
  AUDIT_ARCH_X86_64,
  runSeccomp,
  SECCOMP_RET,
  X86_64_SYSCALLS,
} from '../src/seccomp-entry.js';

// Recorded by test/xen/privcmd-trace.xen.mjs: Debian's Xen QEMU run by the project's launcher
// (`xl create` with the xen-depriv-dm shim and xen-deprivd in dom0: jail mode, leased uid, the
// launcher's seccomp filter) for an HVM guest (memory 128, vga stdvga, videoram 16) booted to
// userspace; condensed by tools/privcmd-trace/condense.mjs (every distinct request once, with
// `repeat`).
const file = new URL('./vectors/qemu-xen-trace.jsonl', import.meta.url);
const recorded = existsSync(file);

describe.skipIf(!recorded)('a real deprivileged Xen QEMU, recorded in the lab', () => {
  const trace = recorded ? parseTrace(readFileSync(file, 'utf8')) : [];
  // Nothing declared by hand: the context follows from the guest's xl config.
  const context = deviceModelContext({ memoryMiB: 128, videoramMiB: 16 });

  it('every request the kernel admitted passes the kernel model, the qemu-xen-hvm profile and the audit', () => {
    const admitted = trace.filter((r) => r.ret >= 0);
    const report = auditTrace(admitted, qemuXenHvmProfile, context);
    const recordedTotal = trace.reduce(
      (n, r) => n + (typeof r.repeat === 'number' ? r.repeat : 1),
      0,
    );
    console.log(
      `qemu-xen trace: ${trace.length} distinct requests (${recordedTotal} recorded), ${admitted.length} admitted by the kernel; ${Object.entries(
        report.byName,
      )
        .map(([name, c]) => `${name} ${c.total}`)
        .join(', ')}`,
    );
    expect(report.denials).toEqual([]);
    expect(report.allowed).toBe(admitted.length);
  });

  it('the shipped Xen device-model seccomp program lets every ioctl the kernel admitted through', () => {
    const { program } = xenDeviceModelSeccomp();
    for (const r of trace) {
      const verdict = runSeccomp(program, {
        nr: X86_64_SYSCALLS.ioctl,
        arch: AUDIT_ARCH_X86_64,
        args: [BigInt(r.fd), BigInt(r.request)],
      });
      // What the kernel refused (libxenforeignmemory's IOCTL_PRIVCMD_UNIMPLEMENTED probe, ENOTTY)
      // may be refused by the filter too, with the kernel's own errno: the caller sees no change.
      const want = r.ret >= 0 ? SECCOMP_RET.ALLOW : SECCOMP_RET.ERRNO | r.errno;
      expect(verdict, `seq ${r.seq}: ioctl 0x${r.request.toString(16)}`).toBe(want);
    }
  });
});

describe('deviceModelContext', () => {
  it('derives memory and I/O ranges from the guest config and the PCI hole', () => {
    expect(deviceModelContext({ memoryMiB: 128 })).toEqual({
      guestMemoryEndGfn: 0x100000n,
      ioRanges: [
        { type: 'port', start: 0n, end: 0xffffn },
        { type: 'mmio', start: 0xa0000n, end: 0xbffffn },
        { type: 'mmio', start: 0x8000000n, end: 0xffffffffn },
        { type: 'pci', start: 0n, end: 0xffn },
      ],
    });
  });
  it('RAM the hole pushes above 4 GiB, and QEMU blocks after it, extend guest memory', () => {
    // 8 GiB with a 1 GiB hole: 3 GiB below, 5 GiB from 4 GiB, then 16 MiB VRAM and 8 MiB ROMs.
    const c = deviceModelContext({ memoryMiB: 8192, mmioHoleMiB: 1024 });
    expect(c.guestMemoryEndGfn).toBe(((9n << 30n) + (24n << 20n)) >> 12n);
    expect(c.ioRanges[2]).toEqual({ type: 'mmio', start: 0xc0000000n, end: 0xffffffffn });
  });
});
