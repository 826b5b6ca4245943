import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_RLIMITS,
  formatPlan,
  type LaunchConfig,
  LauncherError,
  plan,
  sysSpawnSpec,
  xenDevices,
} from '../src/index.js';
import { X86_CAPS, XEN_CAPS } from './fixtures.js';

const lease = { uid: 3000007, gid: 3000007 };
const xenNumbers = {
  privcmd: { major: 10, minor: 122 },
  evtchn: { major: 10, minor: 123 },
  gntdev: { major: 10, minor: 124 },
  xenbus: { major: 10, minor: 125 },
};
const seccomp = { profile: 'device-model', program: new Uint8Array(16).fill(7) };

const xenConfig: LaunchConfig = {
  domid: 7,
  binary: XEN_CAPS.binary,
  xen: true,
  stateDir: '/run/xen-depriv',
  devices: xenDevices(xenNumbers),
  xenstoreSocket: '/run/xen-depriv/xs-proxy/7.sock',
  args: ['-m', '1024'],
};

describe('plan: Xen mode (snapshots)', () => {
  it('jail mode with the Xen QEMU: -xen-domid, -xen-domid-restrict, no -sandbox', () => {
    const p = plan(xenConfig, XEN_CAPS, lease, { seccomp });
    expect(p.argv).toEqual([
      '/usr/libexec/xen-qemu-system-i386',
      '-xen-domid',
      '7',
      '-no-shutdown',
      '-chardev',
      'socket,id=qmp,fd=3,server=on,wait=off',
      '-mon',
      'chardev=qmp,mode=control',
      '-nodefaults',
      '-no-user-config',
      '-name',
      'dm-7',
      '-display',
      'none',
      '-machine',
      'xenfv',
      '-xen-domid-restrict',
      '-m',
      '1024',
    ]);
    expect(p.qemuSandbox).toBeNull();
    expect(p.execUid).toBe(3000007);
    expect(p.removeAfterReady).toEqual([
      '/dev/xen/privcmd',
      '/dev/xen/evtchn',
      '/dev/xen/gntdev',
      '/dev/xen/xenbus',
    ]);
    expect(p.env).toEqual({ XENSTORED_PATH: '/run/xenstored/socket' });
    expect(formatPlan(p)).toMatchSnapshot();
  });

  it('libxl-compat mode with the Xen QEMU: -runas uid:gid and -chroot, as libxl dm_restrict', () => {
    const p = plan({ ...xenConfig, mode: 'libxl-compat' }, XEN_CAPS, lease, { seccomp });
    expect(p.argv.slice(-7)).toEqual([
      '-xen-domid-restrict',
      '-runas',
      '3000007:3000007',
      '-chroot',
      '/run/xen-depriv/dm-7/root',
      '-m',
      '1024',
    ]);
    expect(p.execUid).toBe(0);
    expect(p.mounts).toEqual([]);
    expect(p.skeleton).toEqual([]);
    expect(p.root).toEqual({ path: '/run/xen-depriv/dm-7/root', how: 'qemu-chroot' });
    expect(formatPlan(p)).toMatchSnapshot();
  });
});

describe('plan: -M none with qemu-system-x86_64', () => {
  it('jail mode adds the full -sandbox and builds a tmpfs root with read-only /usr', () => {
    const p = plan({ domid: 1, binary: X86_CAPS.binary, stateDir: '/run/xd' }, X86_CAPS, lease);
    expect(p.argv).toContain('-sandbox');
    expect(p.qemuSandbox).toBe(
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    );
    expect(p.argv.slice(p.argv.indexOf('-machine'), p.argv.indexOf('-machine') + 2)).toEqual([
      '-machine',
      'none',
    ]);
    expect(p.mounts.slice(0, 2)).toEqual([
      { type: 'bind', source: '/run/xd/dm-1/root', target: '/run/xd/dm-1/root', readOnly: true },
      { type: 'bind', source: '/usr', target: '/run/xd/dm-1/root/usr', readOnly: true },
    ]);
    expect(p.skeleton).toContainEqual({ kind: 'symlink', path: '/lib', linkTo: 'usr/lib' });
    expect(p.mounts).toContainEqual({
      type: 'bind',
      source: '/dev/null',
      target: '/run/xd/dm-1/root/dev/null',
      readOnly: true,
    });
    expect(p.mounts.at(-1)).toEqual({
      type: 'bind',
      source: '/run/xd/dm-1/run',
      target: '/run/xd/dm-1/root/run',
      readOnly: false,
    });
    expect(p.rootEntries).toEqual(['bin', 'dev', 'lib', 'lib64', 'run', 'sbin', 'usr']);
    expect(p.rlimits).toContainEqual({ resource: 'FSIZE', soft: 262144, hard: 262144 });
    expect(p.namespaces).toEqual(['mount', 'ipc', 'net', 'uts']);
    expect(p.fds).toEqual([
      { target: 0, source: 'devnull', kind: 'file' },
      { target: 1, source: 'log', kind: 'file' },
      { target: 2, source: 'log', kind: 'file' },
      { target: 3, source: 'qmp-listener', kind: 'socket' },
    ]);
    expect(p.root).toEqual({ path: '/run/xd/dm-1/root', how: 'pivot_root' });
  });

  it('passed descriptors and the root entry are part of the plan, not decided at spawn', () => {
    const p = plan(
      {
        domid: 1,
        binary: X86_CAPS.binary,
        stateDir: '/run/xd',
        passedFds: [{ target: 4, name: 'libxl-qmp', kind: 'socket' }],
      },
      X86_CAPS,
      lease,
      { rootEntry: 'chroot' },
    );
    expect(p.fds.at(-1)).toEqual({ target: 4, source: 'passed:libxl-qmp', kind: 'socket' });
    expect(p.root).toEqual({ path: '/run/xd/dm-1/root', how: 'chroot' });
    const spec = sysSpawnSpec(p, {
      devnull: 10,
      log: 11,
      'qmp-listener': 12,
      passed: { 'libxl-qmp': 13 },
    });
    expect(spec.fds).toEqual([
      { target: 0, source: 10 },
      { target: 1, source: 11 },
      { target: 2, source: 11 },
      { target: 3, source: 12 },
      { target: 4, source: 13 },
    ]);
    expect(spec.root).toEqual({ path: '/run/xd/dm-1/root', mode: 'chroot' });
    expect(() => sysSpawnSpec(p, { devnull: 10, log: 11, 'qmp-listener': 12 })).toThrow(
      'fd passed:libxl-qmp: the plan names it, the launch passed none',
    );
  });

  it('libxl-compat leaves elevateprivileges out of -sandbox: QEMU 7.2 traps its own -runas setuid', () => {
    const p = plan(
      { domid: 1, binary: X86_CAPS.binary, stateDir: '/run/xd', mode: 'libxl-compat' },
      X86_CAPS,
      lease,
    );
    expect(p.qemuSandbox).toBe('on,obsolete=deny,spawn=deny,resourcecontrol=deny');
  });

  it('Xen mode raises RLIMIT_AS by the mapcache size Xen QEMU derives from it', () => {
    const p = plan(xenConfig, XEN_CAPS, lease);
    expect(p.rlimits.find((r) => r.resource === 'AS')?.hard).toBe(DEFAULT_RLIMITS.AS + 2 ** 36);
  });
});

describe('plan: refusals are typed and say what was seen', () => {
  const base = { domid: 1, binary: X86_CAPS.binary, stateDir: '/run/xd' };
  const cases: [string, () => unknown, string][] = [
    ['root uid', () => plan(base, X86_CAPS, { uid: 0, gid: 5 }), 'lease.uid'],
    ['group 0', () => plan(base, X86_CAPS, { uid: 5, gid: 5, groups: [0] }), 'lease.groups'],
    ['domid', () => plan({ ...base, domid: 0x7ff0 }, X86_CAPS, lease), 'domid'],
    ['relative binary', () => plan({ ...base, binary: 'qemu' }, X86_CAPS, lease), 'binary'],
    ['other binary', () => plan({ ...base, binary: '/usr/bin/qemu' }, X86_CAPS, lease), 'caps'],
    ['machine', () => plan({ ...base, machine: 'xenfv' }, XEN_CAPS, lease), 'binary'],
    ['unknown machine', () => plan({ ...base, machine: 'nope' }, X86_CAPS, lease), 'machine'],
    [
      'passed fd over the launcher own',
      () => plan({ ...base, passedFds: [{ target: 3, name: 'x', kind: 'file' }] }, X86_CAPS, lease),
      'passedFds',
    ],
    [
      'device outside /dev',
      () =>
        plan(
          {
            ...base,
            devices: [{ path: '/etc/x', major: 1, minor: 3, mode: 0o600, removeAfterReady: false }],
          },
          X86_CAPS,
          lease,
        ),
      'device',
    ],
    [
      'xen without -xen-domid-restrict',
      () =>
        plan(
          { ...base, xen: true },
          { ...X86_CAPS, flags: { ...X86_CAPS.flags, xenDomidRestrict: false } },
          lease,
        ),
      '-xen-domid-restrict',
    ],
    ['negative rlimit', () => plan(base, X86_CAPS, lease, { rlimits: { NOFILE: -1 } }), 'NOFILE'],
  ];
  it.each(cases)('%s', (_name, f, word) => {
    let err: unknown;
    try {
      f();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LauncherError);
    expect((err as LauncherError).code).toBe('EPLAN');
    expect((err as LauncherError).message).toContain(word);
  });
});

describe('plan: properties', () => {
  const arbConfig = fc.record({
    domid: fc.integer({ min: 0, max: 0x7fef }),
    mode: fc.constantFrom('jail' as const, 'libxl-compat' as const),
    xen: fc.boolean(),
    uid: fc.integer({ min: 3_000_000, max: 0x7fffffff }),
    sandbox: fc.constantFrom('auto' as const, 'off' as const),
  });

  it('is deterministic, never runs QEMU as root in jail mode, and drops to the lease in compat', () => {
    fc.assert(
      fc.property(arbConfig, (c) => {
        const caps = c.xen ? XEN_CAPS : X86_CAPS;
        const config: LaunchConfig = {
          domid: c.domid,
          binary: caps.binary,
          mode: c.mode,
          xen: c.xen,
          stateDir: '/run/xd',
          ...(c.xen ? { devices: xenDevices(xenNumbers) } : {}),
        };
        const l = { uid: c.uid, gid: c.uid };
        const p = plan(config, caps, l, { sandbox: c.sandbox });
        expect(formatPlan(plan(config, caps, l, { sandbox: c.sandbox }))).toBe(formatPlan(p));
        expect(p.rlimits.map((r) => r.resource)).toEqual(Object.keys(DEFAULT_RLIMITS));
        expect(p.noNewPrivs).toBe(true);
        if (c.mode === 'jail') {
          expect(p.execUid).toBe(c.uid);
          expect(p.argv).not.toContain('-runas');
          for (const path of p.removeAfterReady) {
            expect(p.mounts).toContainEqual(
              expect.objectContaining({ type: 'mknod', path: p.paths.jail + path, uid: c.uid }),
            );
          }
        } else {
          expect(p.execUid).toBe(0);
          expect(p.argv[p.argv.indexOf('-runas') + 1]).toBe(`${c.uid}:${c.uid}`);
        }
        expect(p.argv.includes('-xen-domid-restrict')).toBe(c.xen);
        expect(p.argv.includes('-sandbox')).toBe(!c.xen && c.sandbox === 'auto');
        if (p.qemuSandbox !== null && c.mode === 'libxl-compat') {
          expect(p.qemuSandbox).not.toContain('elevateprivileges=deny');
        }
      }),
    );
  });
});
