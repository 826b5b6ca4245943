import { statSync } from 'node:fs';
import { posix } from 'node:path';
import { type DeviceNode, type LaunchPlan, xenDevices } from '@xen-depriv/qemu-launcher';
import type { BridgeConfig } from '../service/guest.js';
import type { LibxlDmArgv } from './argv.js';

/**
 * The `/dev/xen` nodes Xen's QEMU opens, with the dom0's dynamic misc minors. Never
 * `/dev/xen/xenbus`: requests through it travel on dom0's kernel connection to xenstored, as
 * dom0. libxenstore's xs_open tries the socket first, and the DM's `/run/xenstored/socket` is
 * its restricting proxy, so the node is never needed (docs/threat-model.md).
 */
export function dom0XenDevices(): DeviceNode[] {
  const node = (name: string) => {
    // Linux's dev_t encoding (new_encode_dev): minor low 8 bits, major 12 bits, minor high bits.
    const rdev = statSync(`/dev/xen/${name}`).rdev;
    return { major: (rdev >> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
  };
  return [
    ...xenDevices({
      privcmd: node('privcmd'),
      evtchn: node('evtchn'),
      gntdev: node('gntdev'),
      // xenDevices wants four numbers; this one is filtered out below.
      xenbus: { major: 0, minor: 0 },
    }).filter((d) => d.path !== '/dev/xen/xenbus'),
    // libxencall's hypercall buffers (libxencall: "Error on trying to open hypercall buffer
    // device" without it).
    { path: '/dev/xen/hypercall', ...node('hypercall'), mode: 0o600, removeAfterReady: true },
  ];
}

/** The plan plus the files QEMU reads (`-kernel`, `-initrd`), bound read-only into its root. */
export function withFiles(p: LaunchPlan, files: LibxlDmArgv['files']): LaunchPlan {
  if (files.length === 0) return p;
  const dirs = [...new Set(files.map((f) => posix.dirname(f.jail)))];
  const top = [...new Set(dirs.map((d) => d.split('/')[1] as string))];
  return {
    ...p,
    skeleton: [
      ...p.skeleton,
      ...dirs.map((d) => ({ kind: 'dir' as const, path: d, mode: 0o755 })),
      ...files.map((f) => ({ kind: 'file' as const, path: f.jail, mode: 0o444 })),
    ],
    mounts: [
      ...p.mounts,
      ...files.map((f) => ({
        type: 'bind' as const,
        source: f.host,
        target: posix.join(p.paths.jail, f.jail),
        readOnly: true,
      })),
    ],
    rootEntries: [...new Set([...p.rootEntries, ...top])].sort(),
  };
}

/**
 * The legacy backends Debian's QEMU 7.2 registers (hw/xen/xen-legacy-backend.c
 * xen_be_register_common: console, vkbd, 9pfs with CONFIG_VIRTFS, qusb with CONFIG_USB_LIBUSB;
 * the lab's QEMU tries all four).
 */
export const LEGACY_BACKENDS = ['console', 'vkbd', '9pfs', 'qusb'] as const;

/** Whether `path` is a block device (QEMU opens it with `host_device`); false when absent. */
export function isBlockDevice(path: string): boolean {
  try {
    return statSync(path).isBlockDevice();
  } catch {
    return false;
  }
}

/**
 * The ways in from dom0 to what a libxl guest's DM serves: VNC (dom0 listens where libxl asked;
 * QEMU listens at the same port on its own loopback, so that query-vnc gives libxl the port
 * dom0 serves) and each `-serial pty` (a pty in dom0 relayed to the DM's unix socket).
 */
export function libxlBridges(libxl: Pick<LibxlDmArgv, 'vnc' | 'serials'>): BridgeConfig[] {
  return [
    ...(libxl.vnc
      ? [
          {
            name: 'vnc',
            listen: { host: libxl.vnc.host, port: libxl.vnc.port },
            loopback: { host: '127.0.0.1', port: libxl.vnc.port },
          },
        ]
      : []),
    ...libxl.serials.map((s) => ({
      name: `serial${s.index}`,
      listen: null,
      socket: s.socket,
      console: 'pty' as const,
    })),
  ];
}
