import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LauncherError, PACKAGE_NAME, plan, probeQemu, xenDevices } from '../src/index.js';

const X86 = '/usr/bin/qemu-system-x86_64';
const XEN = '/usr/libexec/xen-qemu-system-i386';

describe('@xen-depriv/qemu-launcher', () => {
  it('names itself', () => {
    expect(PACKAGE_NAME).toBe('@xen-depriv/qemu-launcher');
  });
});

describe.skipIf(!existsSync(X86))('probeQemu against Debian qemu-system-x86_64', () => {
  it('reads version, machines and the confinement flags, with -sandbox confirmed by QMP', async () => {
    const caps = await probeQemu(X86);
    expect(caps.version.major).toBe(7);
    expect(caps.version.minor).toBe(2);
    expect(caps.version.package).toMatch(/^Debian /);
    expect(caps.machines).toContain('none');
    expect(caps.machines).toContain('pc');
    expect(caps.flags).toMatchObject({
      chroot: true,
      runas: true,
      runWith: false,
      sandbox: true,
      xenDomid: true,
      xenDomidRestrict: true,
      xenAttach: true,
    });
    expect(caps.flags.sandboxOptions).toEqual([
      'elevateprivileges',
      'enable',
      'obsolete',
      'resourcecontrol',
      'spawn',
    ]);
    expect(caps.commandLineOptions).toContain('chardev');
    expect(caps.probeArgs).toEqual([]);
  });

  it('caches per binary identity and probes a different file again', async () => {
    const a = await probeQemu(X86);
    expect(await probeQemu(X86)).toBe(a);
    const dir = mkdtempSync(join(tmpdir(), 'ql-probe-'));
    try {
      // A wrapper, not a copy: QEMU refuses to load its modules from a copied binary.
      const copy = join(dir, 'qemu-wrapper');
      writeFileSync(copy, `#!/bin/sh\nexec ${X86} "$@"\n`, { mode: 0o755 });
      const b = await probeQemu(copy);
      expect(b).not.toBe(a);
      expect(b.identity.ino).not.toBe(a.identity.ino);
      expect(b.flags).toEqual(a.flags);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await probeQemu(X86, { fresh: true })).not.toBe(a);
  });
});

describe.skipIf(!existsSync(XEN))("probeQemu against Debian's Xen QEMU (qemu-system-xen)", () => {
  it('finds -xen-domid-restrict, and no -sandbox although -help lists it', async () => {
    const caps = await probeQemu(XEN);
    expect(caps.version.major).toBe(7);
    expect(caps.machines).toContain('xenfv');
    expect(caps.flags.xenDomid).toBe(true);
    expect(caps.flags.xenDomidRestrict).toBe(true);
    expect(caps.flags.chroot).toBe(true);
    expect(caps.flags.runas).toBe(true);
    expect(caps.flags.sandbox).toBe(false);
    expect(caps.flags.sandboxOptions).toEqual([]);
    expect(caps.commandLineOptions).not.toContain('sandbox');
    // Xen-only builds have no default accelerator for -M none.
    expect(caps.probeArgs).toEqual(['-accel', 'qtest']);
  });
});

describe.skipIf(!existsSync(XEN))('Xen-mode plans against the real Xen QEMU', () => {
  it('every option a Xen-mode plan passes is one the real binary lists', async () => {
    const caps = await probeQemu(XEN);
    const help = execFileSync(XEN, ['-help'], { encoding: 'utf8' });
    const n = { major: 10, minor: 1 };
    for (const mode of ['jail', 'libxl-compat'] as const) {
      const p = plan(
        {
          domid: 5,
          binary: XEN,
          xen: true,
          mode,
          stateDir: '/run/xd',
          devices: xenDevices({ privcmd: n, evtchn: n, gntdev: n, xenbus: n }),
        },
        caps,
        { uid: 3_000_005, gid: 3_000_005 },
      );
      const options = p.argv.slice(1).filter((a) => /^-[a-z]/.test(a));
      expect(options).toContain('-xen-domid-restrict');
      for (const o of options) expect(help).toMatch(new RegExp(`^${o}(\\s|$)`, 'm'));
      expect(p.argv).not.toContain('-sandbox');
    }
  });
});

describe('probeQemu errors', () => {
  it('names the missing file with ENOENT', async () => {
    const e = await probeQemu('/nonexistent/qemu').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(LauncherError);
    expect(e).toMatchObject({ code: 'EPROBE', errno: 'ENOENT' });
  });

  it('refuses a binary that is not QEMU', async () => {
    const e = await probeQemu('/bin/true').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(LauncherError);
    expect((e as LauncherError).code).toBe('EPROBE');
    expect((e as LauncherError).message).toContain('expected "QEMU emulator version X.Y.Z"');
  });
});
