// A guest's devices as the DM gets them, never by path: each disk image is opened by the
// launcher and passed as a descriptor (`-add-fd` + `/dev/fdset/N`), each NIC is a tap the
// launcher creates in dom0's network namespace and passes (`-netdev tap,fd=N`), VNC listens on
// the DM's own loopback and the serial line on a unix socket in its own /run; dom0 reaches both
// through the service.
// Pure: the result is part of the printed plan.
import type { LaunchConfig, PassedFd } from '@xen-depriv/qemu-launcher';

/** A bridge as the plan takes it (LaunchConfig.bridges). */
export type BridgeConfig = NonNullable<LaunchConfig['bridges']>[number];

import { z } from 'zod';

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const VDEV = /^(hd|sd|xvd)[a-z]{1,2}$/;

export const diskSchema = z.strictObject({
  target: z.string().describe('host path of the image or block device; empty: an empty CD drive'),
  vdev: z.string().regex(VDEV, { message: 'expected hdX, sdX or xvdX' }),
  access: z.enum(['ro', 'rw']).default('rw'),
  format: z.enum(['raw']).default('raw'),
  cdrom: z.boolean().default(false),
});

export const nicSchema = z.strictObject({
  mac: z
    .string()
    .regex(MAC, { message: 'expected a MAC address like 00:16:3e:00:00:01' })
    .optional(),
  bridge: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,15}$/)
    .optional(),
  model: z.enum(['rtl8139', 'e1000']).default('rtl8139'),
});

export const guestSchema = z
  .strictObject({
    memoryMb: z.number().int().min(1).optional(),
    vcpus: z.number().int().min(1).max(128).optional(),
    maxVcpus: z.number().int().min(1).max(128).optional(),
    boot: z
      .string()
      .regex(/^[acdn]{1,4}$/, { message: 'expected boot order letters a, c, d, n' })
      .optional(),
    vga: z.enum(['stdvga', 'cirrus', 'none']).optional(),
    videoramMb: z.number().int().min(1).max(256).optional(),
    usb: z.boolean().default(false),
    usbDevices: z.array(z.enum(['tablet', 'mouse', 'keyboard'])).default([]),
    localtime: z.boolean().default(false),
    disks: z.array(diskSchema).max(16).default([]),
    nics: z.array(nicSchema).max(8).default([]),
    vnc: z
      .strictObject({
        listen: z.string().default('127.0.0.1'),
        display: z.number().int().min(0).max(99).default(0),
      })
      .nullable()
      .default(null),
    serial: z.enum(['pty', 'none']).default('none'),
  })
  .default({
    usb: false,
    usbDevices: [],
    localtime: false,
    disks: [],
    nics: [],
    vnc: null,
    serial: 'none',
  });

export type Guest = z.infer<typeof guestSchema>;

export interface GuestPlan {
  readonly args: readonly string[];
  readonly passedFds: readonly PassedFd[];
  readonly bridges: readonly BridgeConfig[];
  /** What each guest setting became, one line each (printed with the plan). */
  readonly notes: readonly string[];
}

/** The first descriptor a guest device gets: 3 is the launcher's QMP, 4 libxl's. */
export const FIRST_GUEST_FD = 5;

function ideIndex(vdev: string): number {
  const c = vdev.charCodeAt(vdev.length - 1) - 97;
  return Number.isInteger(c) && c >= 0 ? c : 0;
}

/**
 * The DM arguments, descriptors and bridges of a guest. `machine` none (the embedded target)
 * has no buses: backends are created (QEMU still opens every descriptor), frontends are not.
 */
export function guestPlan(g: Guest, ctx: { domid: number; xen: boolean }): GuestPlan {
  const args: string[] = [];
  const passedFds: PassedFd[] = [];
  const bridges: BridgeConfig[] = [];
  const notes: string[] = [];
  const frontends = ctx.xen;
  let fd = FIRST_GUEST_FD;
  if (g.memoryMb !== undefined) {
    args.push('-m', String(g.memoryMb));
    notes.push(`memory ${g.memoryMb} MiB: -m ${g.memoryMb}`);
  }
  if (g.vcpus !== undefined || g.maxVcpus !== undefined) {
    const smp = `${g.vcpus ?? 1}${g.maxVcpus !== undefined ? `,maxcpus=${g.maxVcpus}` : ''}`;
    if (frontends) args.push('-smp', smp);
    notes.push(
      frontends ? `vcpus: -smp ${smp}` : `vcpus: -M none has no CPUs (-smp ${smp} on xenfv)`,
    );
  }
  if (g.boot !== undefined) {
    args.push('-boot', `order=${g.boot}`);
    notes.push(`boot: -boot order=${g.boot}`);
  }
  if (g.vga !== undefined) {
    const vga = g.vga === 'stdvga' ? 'std' : g.vga;
    if (frontends) args.push('-vga', vga);
    if (frontends && g.videoramMb !== undefined && g.vga === 'stdvga') {
      args.push('-global', `VGA.vgamem_mb=${g.videoramMb}`);
    }
    notes.push(frontends ? `vga: -vga ${vga}` : 'vga: -M none has no display adapter');
  }
  if (g.usb || g.usbDevices.length > 0) {
    if (frontends) {
      args.push('-usb');
      for (const d of g.usbDevices) args.push('-device', `usb-${d}`);
    }
    notes.push(
      frontends
        ? `usb: -usb${g.usbDevices.map((d) => ` -device usb-${d}`).join('')}`
        : 'usb: -M none has no USB bus',
    );
  }
  if (g.localtime) {
    args.push('-rtc', 'base=localtime');
    notes.push('localtime: -rtc base=localtime');
  }
  for (const [i, d] of g.disks.entries()) {
    const media = d.cdrom ? 'cdrom' : 'disk';
    const readOnly = d.cdrom || d.access === 'ro';
    if (d.target === '') {
      if (frontends) args.push('-drive', `if=ide,index=${ideIndex(d.vdev)},media=cdrom`);
      notes.push(`disk ${d.vdev}: an empty ${media} drive`);
      continue;
    }
    const name = `disk-${d.vdev}`;
    const set = i + 1;
    passedFds.push({ target: fd, name, kind: 'file', open: { path: d.target, readOnly } });
    // QEMU opens /dev/fdset/N: a dup of the descriptor the launcher opened as root.
    args.push('-add-fd', `fd=${fd},set=${set},opaque=${name}`);
    const first = fd;
    if (!readOnly && frontends) {
      // `-drive` opens read-only first (auto-read-only), then read-write: one of each.
      fd++;
      passedFds.push({
        target: fd,
        name: `${name}-ro`,
        kind: 'file',
        open: { path: d.target, readOnly: true },
      });
      args.push('-add-fd', `fd=${fd},set=${set},opaque=${name}-ro`);
    }
    const file = `/dev/fdset/${set}`;
    args.push(
      ...(frontends
        ? [
            '-drive',
            `file=${file},if=ide,index=${ideIndex(d.vdev)},media=${media},format=${d.format}${readOnly ? ',readonly=on' : ''}`,
          ]
        : [
            '-blockdev',
            `driver=${d.format},node-name=${name},file.driver=file,file.filename=${file}${readOnly ? ',read-only=on' : ''}`,
          ]),
    );
    notes.push(
      `disk ${d.vdev}: ${d.target} opened ${readOnly ? 'read-only' : 'read-write'} by the launcher, fd ${first}${fd === first ? '' : ` (read-only too, fd ${fd})`}`,
    );
    fd++;
  }
  for (const [i, n] of g.nics.entries()) {
    const name = `vif-${i}`;
    const ifname = `vif${ctx.domid}.${i}-emu`;
    passedFds.push({ target: fd, name, kind: 'tap', tap: { ifname, bridge: n.bridge ?? null } });
    args.push('-netdev', `tap,id=net${i},fd=${fd}`);
    if (frontends) {
      args.push('-device', `${n.model},netdev=net${i}${n.mac ? `,mac=${n.mac}` : ''}`);
    }
    notes.push(
      `vif ${i}: tap ${ifname}${n.bridge ? ` on ${n.bridge}` : ''} created by the launcher, fd ${fd}`,
    );
    fd++;
  }
  if (g.vnc !== null) {
    const port = 5900 + g.vnc.display;
    // QEMU listens on its own loopback (lo is up in its network namespace only); the service
    // listens in dom0 and joins each client to it through a socket made in that namespace.
    args.push('-vnc', `127.0.0.1:${g.vnc.display}`);
    bridges.push({
      name: 'vnc',
      listen: { host: g.vnc.listen, port },
      loopback: { host: '127.0.0.1', port },
    });
    notes.push(
      `vnc: QEMU listens on 127.0.0.1:${port} in its own network namespace; the service listens on ${g.vnc.listen}:${port}`,
    );
  }
  if (g.serial === 'pty') {
    args.push('-chardev', 'socket,id=serial0,path=/run/serial0.sock,server=on,wait=off');
    if (frontends) args.push('-serial', 'chardev:serial0');
    bridges.push({ name: 'serial0', listen: null, socket: 'serial0.sock' });
    notes.push(
      "serial: a unix socket in the DM's /run (no /dev/ptmx in its root); dom0 reaches it at the bridge path",
    );
  }
  return { args, passedFds, bridges, notes };
}
