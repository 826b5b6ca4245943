import type { QemuCaps } from '../src/index.js';

const identity = { dev: 2049, ino: 1234, mtimeMs: 1700000000000, size: 20000000 };
const hostRoot = [
  { path: '/usr', kind: 'dir' },
  { path: '/lib', kind: 'symlink', target: 'usr/lib' },
  { path: '/lib64', kind: 'symlink', target: 'usr/lib64' },
  { path: '/bin', kind: 'symlink', target: 'usr/bin' },
  { path: '/sbin', kind: 'symlink', target: 'usr/sbin' },
] as const;

/** What probeQemu reports for Debian bookworm's qemu-system-x86_64 (checked in probe.test.ts). */
export const X86_CAPS: QemuCaps = {
  binary: '/usr/bin/qemu-system-x86_64',
  identity: { path: '/usr/bin/qemu-system-x86_64', ...identity },
  version: { major: 7, minor: 2, micro: 22, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
  machines: ['none', 'pc', 'q35', 'xenfv', 'xenpv'],
  commandLineOptions: ['accel', 'chardev', 'machine', 'mon', 'sandbox'],
  flags: {
    chroot: true,
    runas: true,
    runWith: false,
    sandbox: true,
    sandboxOptions: ['elevateprivileges', 'enable', 'obsolete', 'resourcecontrol', 'spawn'],
    xenDomid: true,
    xenDomidRestrict: true,
    xenAttach: true,
  },
  probeArgs: [],
  hostRoot,
};

/** What probeQemu reports for Debian bookworm's /usr/libexec/xen-qemu-system-i386. */
export const XEN_CAPS: QemuCaps = {
  ...X86_CAPS,
  binary: '/usr/libexec/xen-qemu-system-i386',
  identity: { path: '/usr/libexec/xen-qemu-system-i386', ...identity },
  machines: ['none', 'xenfv', 'xenfv-3.1', 'xenfv-4.2', 'xenpv'],
  commandLineOptions: ['accel', 'chardev', 'machine', 'mon'],
  flags: { ...X86_CAPS.flags, sandbox: false, sandboxOptions: [] },
  probeArgs: ['-accel', 'qtest'],
};
