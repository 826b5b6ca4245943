// A typical HVM xl.cfg's keys: each used, libxl's, or refused by name; the devices reach the DM
// as descriptors and sockets, never as paths it opens. The real launch runs the service in a
// network namespace of its own (taps and the VNC listener never touch the host's network).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidsOfUid } from '@xen-depriv/qemu-launcher';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../src/index.js';
import { DeprivdClient } from '../src/service/client.js';
import { guestPlan } from '../src/service/guest.js';
import { parseXlCfg } from '../src/xlcfg.js';
import {
  configFromXl,
  parseXlDisk,
  parseXlVif,
  XL_KEYS,
  xlKeysHelp,
  xlKeysMarkdown,
} from '../src/xlkeys.js';
import { TYPICAL_HVM_CFG } from './fixtures.js';
import { runCli } from './helpers.js';

describe("xl.cfg keys: one table, every key used, libxl's or refused by name", () => {
  it('a typical HVM guest maps onto the launch config, key by key', () => {
    expect(configFromXl(parseXlCfg(TYPICAL_HVM_CFG))).toEqual({
      name: 'guest7',
      domid: 7,
      qemu: { args: ['-no-hpet'] },
      guest: {
        memoryMb: 512,
        vcpus: 2,
        boot: 'dc',
        videoramMb: 16,
        vga: 'stdvga',
        usb: true,
        usbDevices: ['tablet'],
        disks: [
          {
            target: '/srv/guest7/disk.img',
            vdev: 'hda',
            access: 'rw',
            format: 'raw',
            cdrom: false,
          },
          { target: '/srv/iso/install.iso', vdev: 'hdc', access: 'ro', format: 'raw', cdrom: true },
        ],
        nics: [{ mac: '00:16:3e:00:00:07', bridge: 'xenbr0' }],
        serial: 'pty',
        vnc: { listen: '127.0.0.1', display: 7 },
      },
    });
  });

  it.each([
    ['phy:/dev/vg/lv,xvda,w', { target: '/dev/vg/lv', vdev: 'xvda', access: 'rw', cdrom: false }],
    ['/x.iso,hdc:cdrom,r', { target: '/x.iso', vdev: 'hdc', access: 'ro', cdrom: true }],
    [
      'format=raw, vdev=hdb, access=ro, target=/y.img',
      { target: '/y.img', vdev: 'hdb', access: 'ro' },
    ],
    [',,hdc,ro,devtype=cdrom', { target: '', vdev: 'hdc', cdrom: true }],
  ])('disk %j', (spec, expected) => {
    expect(parseXlDisk(spec)).toMatchObject(expected);
  });

  it.each([
    ['tap:qcow2:/a.qcow2,xvda,w', 'qcow2 is refused: QEMU would open its backing chain by path'],
    ['/a.qcow2,qcow2,xvda,w', 'format qcow2 is refused'],
    ['/a.img,xvda,w,script=block-iscsi', 'script= is refused'],
  ])('disk %j is refused with the reason', (spec, message) => {
    expect(() => parseXlDisk(spec)).toThrow(message);
  });

  it('vif: mac, bridge, model; the hotplug keys are refused by name', () => {
    expect(parseXlVif('mac=00:16:3e:01:02:03,bridge=xenbr0,model=e1000,type=ioemu')).toEqual({
      mac: '00:16:3e:01:02:03',
      bridge: 'xenbr0',
      model: 'e1000',
    });
    expect(() => parseXlVif('bridge=xenbr0,script=vif-bridge')).toThrow(
      "script= is libxl's hotplug",
    );
  });

  it.each(Object.entries(XL_KEYS).filter(([, v]) => v.use === 'refused'))(
    'refused key %s says why',
    (key, v) => {
      const e = (() => {
        try {
          configFromXl(new Map([[key, 1]]));
        } catch (err) {
          return err;
        }
        return null;
      })();
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).message).toBe(`config: ${key}: refused: ${v.what}`);
    },
  );

  it('an unknown key is refused, the hint points at --help, which lists every key of the table', () => {
    expect(() => configFromXl(new Map([['memroy', 512]]))).toThrow('config: memroy: unknown key');
    const help = runCli(['launch', '--help']).stdout.replace(/\s+/g, ' ');
    for (const key of Object.keys(XL_KEYS)) expect(help).toContain(key);
    expect(help).toContain(xlKeysHelp(78).replace(/\s+/g, ' '));
  });

  it('the README lists the same keys (regenerate: node scripts/xl-keys-readme.mjs)', () => {
    const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
    const start = readme.indexOf('\n', readme.indexOf('<!-- xl-keys:start')) + 1;
    const block = readme.slice(start, readme.indexOf('<!-- xl-keys:end -->'));
    // Cells, not spacing: the formatter pads the table's columns.
    const cells = (table: string) =>
      table
        .trim()
        .split('\n')
        .map((row) => row.split(/(?<!\\)\|/).map((c) => c.trim().replace(/^-+$/, '-')));
    expect(cells(block)).toEqual(cells(xlKeysMarkdown()));
  });
});

describe('guestPlan: devices as descriptors and sockets', () => {
  const guest = validateConfig(configFromXl(parseXlCfg(TYPICAL_HVM_CFG))).guest;

  it("on Xen (xenfv): IDE drives from fdsets, a NIC on a passed tap, VNC on the DM's loopback, serial on a unix socket", () => {
    const g = guestPlan(guest, { domid: 7, xen: true });
    expect(g.args).toEqual([
      '-m',
      '512',
      '-smp',
      '2',
      '-boot',
      'order=dc',
      '-vga',
      'std',
      '-global',
      'VGA.vgamem_mb=16',
      '-usb',
      '-device',
      'usb-tablet',
      '-add-fd',
      'fd=5,set=1,opaque=disk-hda',
      '-add-fd',
      'fd=6,set=1,opaque=disk-hda-ro',
      '-drive',
      'file=/dev/fdset/1,if=ide,index=0,media=disk,format=raw',
      '-add-fd',
      'fd=7,set=2,opaque=disk-hdc',
      '-drive',
      'file=/dev/fdset/2,if=ide,index=2,media=cdrom,format=raw,readonly=on',
      '-netdev',
      'tap,id=net0,fd=8',
      '-device',
      'rtl8139,netdev=net0,mac=00:16:3e:00:00:07',
      '-vnc',
      '127.0.0.1:7',
      '-chardev',
      'socket,id=serial0,path=/run/serial0.sock,server=on,wait=off',
      '-serial',
      'chardev:serial0',
    ]);
    expect(g.passedFds).toEqual([
      {
        target: 5,
        name: 'disk-hda',
        kind: 'file',
        open: { path: '/srv/guest7/disk.img', readOnly: false },
      },
      {
        target: 6,
        name: 'disk-hda-ro',
        kind: 'file',
        open: { path: '/srv/guest7/disk.img', readOnly: true },
      },
      {
        target: 7,
        name: 'disk-hdc',
        kind: 'file',
        open: { path: '/srv/iso/install.iso', readOnly: true },
      },
      { target: 8, name: 'vif-0', kind: 'tap', tap: { ifname: 'vif7.0-emu', bridge: 'xenbr0' } },
    ]);
    expect(g.bridges).toEqual([
      {
        name: 'vnc',
        listen: { host: '127.0.0.1', port: 5907 },
        loopback: { host: '127.0.0.1', port: 5907 },
      },
      { name: 'serial0', listen: null, socket: 'serial0.sock' },
    ]);
    // No host path reaches QEMU's command line.
    expect(g.args.filter((a) => a.includes('/srv/'))).toEqual([]);
  });

  it('on -M none: the same backends (QEMU opens every descriptor), no frontends', () => {
    const g = guestPlan(guest, { domid: 7, xen: false });
    expect(g.args).toContain('-blockdev');
    expect(g.args).not.toContain('-drive');
    expect(g.args).not.toContain('-smp');
    expect(g.notes).toContain('vcpus: -M none has no CPUs (-smp 2 on xenfv)');
  });
});

// A real launch through the service, in a network namespace of its own.
const QEMU = '/usr/bin/qemu-system-x86_64';
const root = process.geteuid?.() === 0;
const canRun = root && existsSync(QEMU);
const POOL = 3_660_000; // this file's private uid range: 3,660,000..3,660,016
const dir = mkdtempSync(join(tmpdir(), 'xd-guest-'));
let service: ChildProcess | null = null;
afterAll(() => {
  if (service?.pid && service.exitCode === null) service.kill('SIGKILL');
  for (let uid = POOL; uid <= POOL + 16; uid++) {
    for (const pid of pidsOfUid(uid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('a guest with disks, CD-ROM, NIC, VNC and serial through xen-deprivd (real QEMU, -M none)', () => {
  it.skipIf(!canRun)(
    'QEMU gets descriptors and sockets, the check passes, destroy removes the tap',
    async () => {
      const sock = join(dir, 's.sock');
      const state = join(dir, 'state');
      const disk = join(dir, 'disk.img');
      const cd = join(dir, 'cd.iso');
      writeFileSync(disk, '');
      truncateSync(disk, 4 << 20);
      writeFileSync(cd, '');
      truncateSync(cd, 1 << 20);
      const deprivd = join(import.meta.dirname, '..', 'dist', 'deprivd.js');
      service = spawn(
        'unshare',
        [
          '--net',
          'sh',
          '-c',
          'ip link set lo up && exec "$@"',
          'sh',
          process.execPath,
          deprivd,
          '--socket',
          sock,
          '--state-dir',
          state,
          '--pool',
          `${POOL}:16`,
          '--target',
          'embedded',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let log = '';
      await new Promise<void>((resolve, reject) => {
        service?.stderr?.on('data', (d: Buffer) => {
          log += d.toString();
          if (log.includes('"event":"listening"')) resolve();
        });
        service?.once('exit', (c) => reject(new Error(`xen-deprivd exited ${c}: ${log}`)));
      });
      const svcPid = JSON.parse(/\{[^\n]*"event":"listening"[^\n]*\}/.exec(log)?.[0] ?? '{}')
        .pid as number;
      const c = (await DeprivdClient.connect(sock)) as DeprivdClient;
      try {
        const r = await c.call<{ pid: number; uid: number; status: string }>('launch', {
          domid: 62,
          // A socket the DM's own argv has it create in its /run: planned, so the check allows it.
          qemu: {
            binary: QEMU,
            machine: 'none',
            args: ['-chardev', 'socket,id=extra,path=/run/extra.sock,server=on,wait=off'],
          },
          guest: {
            memoryMb: 64,
            disks: [
              { target: disk, vdev: 'hda' },
              { target: cd, vdev: 'hdc', cdrom: true },
            ],
            nics: [{}],
            vnc: { listen: '127.0.0.1', display: 0 },
            serial: 'pty',
          },
        });
        expect(r.status).toBe('running');
        const check = await c.call<{
          ok: boolean;
          checks: { name: string; ok: boolean; actual: string }[];
        }>('check', { domid: 62 });
        expect(check.checks.filter((x) => !x.ok)).toEqual([]);
        // The images are open in QEMU with the access libxl would give: rw disk, ro CD.
        const open = readdirSync(`/proc/${r.pid}/fd`).map((fd) => {
          const link = readlinkSync(`/proc/${r.pid}/fd/${fd}`);
          const flags = Number.parseInt(
            /^flags:\s+(\d+)/m.exec(readFileSync(`/proc/${r.pid}/fdinfo/${fd}`, 'utf8'))?.[1] ??
              '0',
            8,
          );
          return { link, acc: flags & 3 };
        });
        expect(open.filter((o) => o.link === disk).every((o) => o.acc === 2)).toBe(true);
        expect(open.filter((o) => o.link === cd).every((o) => o.acc === 0)).toBe(true);
        expect(open.some((o) => o.link === '/dev/net/tun')).toBe(true);
        // QEMU itself never saw a path: its command line names /dev/fdset/N and fd=N only.
        const cmdline = readFileSync(`/proc/${r.pid}/cmdline`, 'utf8');
        expect(cmdline).not.toContain(dir);
        const ns = (cmd: string[]) =>
          execFileSync('nsenter', ['-t', String(svcPid), '-n', ...cmd], { encoding: 'utf8' });
        expect(ns(['ip', '-br', 'link', 'show', 'vif62.0-emu'])).toMatch(
          /^vif62\.0-emu\s+UNKNOWN|^vif62\.0-emu\s+UP/,
        );
        // VNC through the service's bridge on the namespace's loopback; the serial socket from dom0.
        expect(
          ns([
            'python3',
            '-c',
            "import socket; s=socket.create_connection(('127.0.0.1',5900)); print(s.recv(12).decode().strip())",
          ]),
        ).toBe('RFB 003.008\n');
        expect(existsSync(join(state, 'dm-62', 'run', 'serial0.sock'))).toBe(true);
        await c.call('destroy', { domid: 62 });
        expect(() => ns(['ip', 'link', 'show', 'vif62.0-emu'])).toThrow();
        expect(pidsOfUid(r.uid)).toEqual([]);
      } finally {
        c.close();
      }
    },
    120_000,
  );
});
