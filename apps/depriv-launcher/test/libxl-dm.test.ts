import { IOCTL_PRIVCMD_DM_OP, IOCTL_PRIVCMD_HYPERCALL } from '@xen-depriv/dmop-abi';
import { runSeccomp, SECCOMP_RET, X86_64_SYSCALLS } from '@xen-depriv/privcmd-filter/seccomp';
import { deviceModelSeccomp, type LaunchPlan } from '@xen-depriv/qemu-launcher';
import { describe, expect, it } from 'vitest';
import { LibxlArgvError, rewriteLibxlArgv, socketLinks } from '../src/libxl-dm/argv.js';
import { libxlBridges, withFiles } from '../src/libxl-dm/devices.js';
import { dmSeccomp } from '../src/seccomp.js';

// What libxl 4.17 (libxl_dm.c) passes a dm_restrict qemu-xen HVM device model with direct
// kernel boot, stdvga and a pty serial, in its order.
const LIBXL_ARGV = [
  '-xen-domid',
  '5',
  '-no-shutdown',
  '-chardev',
  'socket,id=libxl-cmd,fd=9,server=on,wait=off',
  '-S',
  '-mon',
  'chardev=libxl-cmd,mode=control',
  '-chardev',
  'socket,id=libxenstat-cmd,path=/var/run/xen/qmp-libxenstat-5,server=on,wait=off',
  '-mon',
  'chardev=libxenstat-cmd,mode=control',
  '-nodefaults',
  '-no-user-config',
  '-name',
  'hvmxl',
  '-vnc',
  'none',
  '-display',
  'none',
  '-kernel',
  '/lab/guest/vmlinuz',
  '-initrd',
  '/lab/guest/initrd.cpio',
  '-append',
  'console=ttyS0 console=hvc0 rdinit=/init',
  '-serial',
  'pty',
  '-device',
  'VGA,vgamem_mb=16',
  '-boot',
  'order=cda',
  '-smp',
  '1,maxcpus=1',
  '-net',
  'none',
  '-machine',
  'xenfv,suppress-vmdesc=on',
  '-m',
  '120',
  '-xen-domid-restrict',
  '-chroot',
  '/var/run/xen/qemu-root-5',
  '-runas',
  '131077:131072',
];

describe('rewriteLibxlArgv', () => {
  it("maps libxl's argv onto a jail-mode launch, exactly", () => {
    expect(rewriteLibxlArgv(LIBXL_ARGV)).toEqual({
      domid: 5,
      name: 'hvmxl',
      args: [
        '-chardev',
        'socket,id=libxl-cmd,fd=4,server=on,wait=off',
        '-S',
        '-mon',
        'chardev=libxl-cmd,mode=control',
        '-chardev',
        'socket,id=libxenstat-cmd,path=/run/qmp-libxenstat-5,server=on,wait=off',
        '-mon',
        'chardev=libxenstat-cmd,mode=control',
        '-vnc',
        'none',
        '-display',
        'none',
        '-kernel',
        '/boot/kernel',
        '-initrd',
        '/boot/initrd',
        '-append',
        'console=ttyS0 console=hvc0 rdinit=/init',
        '-chardev',
        'socket,id=serial0,path=/run/serial0.sock,server=on,wait=off',
        '-serial',
        'chardev:serial0',
        '-device',
        'VGA,vgamem_mb=16',
        '-boot',
        'order=cda',
        '-smp',
        '1,maxcpus=1',
        '-net',
        'none',
        '-machine',
        'xenfv,suppress-vmdesc=on',
        '-m',
        '120',
      ],
      libxlQmpFd: 9,
      files: [
        { host: '/lab/guest/vmlinuz', jail: '/boot/kernel' },
        { host: '/lab/guest/initrd.cpio', jail: '/boot/initrd' },
      ],
      sockets: [{ host: '/var/run/xen/qmp-libxenstat-5', jail: '/run/qmp-libxenstat-5' }],
      passedFds: [],
      shimFds: [],
      images: [],
      vnc: null,
      serials: [{ index: 0, socket: 'serial0.sock' }],
      notes: [
        '-serial pty: QEMU serves /run/serial0.sock; the launcher makes the pty in dom0 and relays it',
        'dropped -chroot /var/run/xen/qemu-root-5: the launcher drops privileges before exec',
        'dropped -runas 131077:131072: the launcher drops privileges before exec',
      ],
    });
  });

  it('honours the fd target and boot directory options', () => {
    const r = rewriteLibxlArgv(
      [
        '-xen-domid',
        '7',
        '-chardev',
        'socket,id=libxl-cmd,fd=3,server=on,wait=off',
        '-kernel',
        '/k',
      ],
      { qmpFdTarget: 11, bootDir: '/guest' },
    );
    expect(r.args).toEqual([
      '-chardev',
      'socket,id=libxl-cmd,fd=11,server=on,wait=off',
      '-kernel',
      '/guest/kernel',
    ]);
    expect(r.libxlQmpFd).toBe(3);
  });

  it('a path-based libxl QMP socket (no pre-opened fd) is moved into /run too', () => {
    const r = rewriteLibxlArgv([
      '-xen-domid',
      '3',
      '-chardev',
      'socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-3,server=on,wait=off',
    ]);
    expect(r.libxlQmpFd).toBeNull();
    expect(r.args).toEqual([
      '-chardev',
      'socket,id=libxl-cmd,path=/run/qmp-libxl-3,server=on,wait=off',
    ]);
    expect(r.sockets).toEqual([{ host: '/var/run/xen/qmp-libxl-3', jail: '/run/qmp-libxl-3' }]);
  });

  it('dm_restrict = 0 (no passwd entry libxl wants): both QMP sockets by path, each linked from libxl path to the DM /run', () => {
    // libxl 4.17 without dm_restrict: no pre-opened fd, no -S, no -runas/-chroot/-xen-domid-restrict.
    const r = rewriteLibxlArgv([
      '-xen-domid',
      '2',
      '-no-shutdown',
      '-chardev',
      'socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-2,server=on,wait=off',
      '-mon',
      'chardev=libxl-cmd,mode=control',
      '-chardev',
      'socket,id=libxenstat-cmd,path=/var/run/xen/qmp-libxenstat-2,server=on,wait=off',
      '-mon',
      'chardev=libxenstat-cmd,mode=control',
      '-nodefaults',
      '-no-user-config',
      '-name',
      'hvmusers',
      '-machine',
      'xenfv,suppress-vmdesc=on',
      '-m',
      '120',
    ]);
    expect(r.libxlQmpFd).toBeNull();
    expect(r.notes).toEqual([]);
    expect(r.args).not.toContain('-S');
    // libxl connects to qmp-libxl-2 as soon as QEMU writes device-model/2/state = running, so
    // the engine makes these links before QEMU starts (QEMU makes the sockets before that write).
    expect(socketLinks(r, '/run/xen-deprivd/dm-2/run')).toEqual([
      { link: '/var/run/xen/qmp-libxl-2', target: '/run/xen-deprivd/dm-2/run/qmp-libxl-2' },
      {
        link: '/var/run/xen/qmp-libxenstat-2',
        target: '/run/xen-deprivd/dm-2/run/qmp-libxenstat-2',
      },
    ]);
  });

  it("a guest's devices become descriptors and bridges: disk, CD-ROM, tap, VNC, serial pty, restore", () => {
    // libxl 4.17 (libxl_dm.c libxl__build_device_model_args_new) for hvm-devices.cfg, restoring.
    const r = rewriteLibxlArgv(
      [
        '-xen-domid',
        '3',
        '-chardev',
        'socket,id=libxl-cmd,fd=9,server=on,wait=off',
        '-vnc',
        '127.0.0.1:0,to=99',
        '-serial',
        'pty',
        '-device',
        'rtl8139,id=nic0,netdev=net0,mac=00:16:3e:99:00:02',
        '-netdev',
        'type=tap,id=net0,ifname=vif3.0-emu,br=xenbr0,script=no,downscript=no',
        '-drive',
        'file=/tmp/xd-disk.img,if=ide,index=0,media=disk,format=raw,cache=writeback',
        '-drive',
        'if=none,readonly=on,id=ide-5632,file=/srv/iso/a,,b.iso,format=raw',
        '-device',
        'ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0',
        '-incoming',
        'fd:12',
      ],
      { isBlockDevice: (p) => p === '/tmp/xd-disk.img' },
    );
    expect(r.args).toEqual([
      '-chardev',
      'socket,id=libxl-cmd,fd=4,server=on,wait=off',
      '-vnc',
      '127.0.0.1:0',
      '-chardev',
      'socket,id=serial0,path=/run/serial0.sock,server=on,wait=off',
      '-serial',
      'chardev:serial0',
      '-device',
      'rtl8139,id=nic0,netdev=net0,mac=00:16:3e:99:00:02',
      '-netdev',
      'tap,id=net0,fd=5',
      '-add-fd',
      'fd=6,set=1,opaque=disk-ide0',
      '-add-fd',
      'fd=7,set=1,opaque=disk-ide0-ro',
      '-drive',
      'file=/dev/fdset/1,if=ide,index=0,media=disk,format=raw,cache=writeback,file.driver=host_device',
      '-add-fd',
      'fd=8,set=2,opaque=disk-ide-5632',
      '-drive',
      'if=none,readonly=on,id=ide-5632,file=/dev/fdset/2,format=raw',
      '-device',
      'ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0',
      '-incoming',
      'fd:9',
    ]);
    expect(r.passedFds).toEqual([
      { target: 5, name: 'tap-net0', kind: 'tap', tap: { ifname: 'vif3.0-emu', bridge: null } },
      {
        target: 6,
        name: 'disk-ide0',
        kind: 'file',
        open: { path: '/tmp/xd-disk.img', readOnly: false },
      },
      {
        target: 7,
        name: 'disk-ide0-ro',
        kind: 'file',
        open: { path: '/tmp/xd-disk.img', readOnly: true },
      },
      {
        target: 8,
        name: 'disk-ide-5632',
        kind: 'file',
        open: { path: '/srv/iso/a,b.iso', readOnly: true },
      },
      { target: 9, name: 'incoming', kind: 'file' },
    ]);
    expect(r.shimFds).toEqual([{ name: 'incoming', fd: 12 }]);
    expect(r.images).toEqual([
      { name: 'disk-ide0', path: '/tmp/xd-disk.img', format: 'raw' },
      { name: 'disk-ide-5632', path: '/srv/iso/a,b.iso', format: 'raw' },
    ]);
    expect(r.vnc).toEqual({ host: '127.0.0.1', port: 5900, findUnused: true, dmHost: '127.0.0.1' });
    expect(r.serials).toEqual([{ index: 0, socket: 'serial0.sock' }]);
    expect(r.args.join(' ')).not.toMatch(/xd-disk|a,,b|vif3|ifname|to=99/);
    // The port dom0 got (the launcher binds it first) is the port QEMU is told.
    expect(
      rewriteLibxlArgv(['-xen-domid', '3', '-vnc', '0.0.0.0:2,password=on,to=99'], {
        vncPort: 5931,
      }),
    ).toMatchObject({
      args: ['-vnc', '0.0.0.0:31,password=on'],
      vnc: { host: '0.0.0.0', port: 5931, findUnused: true, dmHost: '0.0.0.0' },
    });
    expect(libxlBridges(r)).toEqual([
      {
        name: 'vnc',
        listen: { host: '127.0.0.1', port: 5900 },
        loopback: { host: '127.0.0.1', port: 5900 },
      },
      { name: 'serial0', listen: null, socket: 'serial0.sock', console: 'pty' },
    ]);
  });

  it('a pty chardev backend becomes null', () => {
    expect(rewriteLibxlArgv(['-xen-domid', '2', '-chardev', 'pty,id=libxl-channel0']).args).toEqual(
      ['-chardev', 'null,id=libxl-channel0'],
    );
  });

  it.each([
    [[], '-xen-domid: missing'],
    [['-xen-domid'], '-xen-domid: expected a value'],
    [['-xen-domid', 'x'], 'expected a number'],
    [['-xen-domid', '1', '-kernel', 'vmlinuz'], 'expected an absolute path'],
    [['-xen-domid', '1', '-chardev', 'socket,id=libxl-cmd,fd=x'], 'fd is not a number'],
    [['-xen-domid', '1', '-drive', 'file=disk.img,if=ide'], 'expected an absolute image path'],
    [['-xen-domid', '1', '-netdev', 'type=tap,id=net0'], 'a tap needs id= and ifname='],
    [['-xen-domid', '1', '-netdev', 'type=tap,id=n,ifname=a-very-long-ifname0'], 'at most 15'],
    [['-xen-domid', '1', '-vnc', 'localhost'], 'expected HOST:DISPLAY'],
    [['-xen-domid', '1', '-vnc', '[::1]:0'], 'expected an IPv4 listen address'],
  ])('refuses %j', (argv, message) => {
    expect(() => rewriteLibxlArgv(argv)).toThrow(LibxlArgvError);
    expect(() => rewriteLibxlArgv(argv)).toThrow(message);
  });
});

describe('withFiles', () => {
  const p = {
    paths: { jail: '/s/dm-5/root' },
    skeleton: [{ kind: 'dir', path: '/dev', mode: 0o755 }],
    mounts: [{ type: 'bind', source: '/s/dm-5/root', target: '/s/dm-5/root', readOnly: true }],
    rootEntries: ['dev', 'run', 'usr'],
  } as unknown as LaunchPlan;

  it('binds each file read-only onto a placeholder in its own top-level directory', () => {
    const q = withFiles(p, [
      { host: '/lab/guest/vmlinuz', jail: '/boot/kernel' },
      { host: '/lab/guest/initrd.cpio', jail: '/boot/initrd' },
    ]);
    expect(q.skeleton).toEqual([
      { kind: 'dir', path: '/dev', mode: 0o755 },
      { kind: 'dir', path: '/boot', mode: 0o755 },
      { kind: 'file', path: '/boot/kernel', mode: 0o444 },
      { kind: 'file', path: '/boot/initrd', mode: 0o444 },
    ]);
    expect(q.mounts.slice(1)).toEqual([
      {
        type: 'bind',
        source: '/lab/guest/vmlinuz',
        target: '/s/dm-5/root/boot/kernel',
        readOnly: true,
      },
      {
        type: 'bind',
        source: '/lab/guest/initrd.cpio',
        target: '/s/dm-5/root/boot/initrd',
        readOnly: true,
      },
    ]);
    expect(q.rootEntries).toEqual(['boot', 'dev', 'run', 'usr']);
  });

  it('leaves a plan without files as it is', () => {
    expect(withFiles(p, [])).toBe(p);
  });
});

describe('dmSeccomp (every launch path)', () => {
  const ioctl = (program: Uint8Array, request: number) =>
    runSeccomp(program, {
      nr: X86_64_SYSCALLS.ioctl,
      arch: 0xc000003e,
      args: [3n, BigInt(request), 0n, 0n, 0n, 0n],
    });

  it('allows IOCTL_PRIVCMD_HYPERCALL (QEMU init before -xen-domid-restrict); strict refuses it', () => {
    expect(ioctl(dmSeccomp().program, IOCTL_PRIVCMD_HYPERCALL)).toBe(SECCOMP_RET.ALLOW);
    expect(ioctl(deviceModelSeccomp().program, IOCTL_PRIVCMD_HYPERCALL)).not.toBe(
      SECCOMP_RET.ALLOW,
    );
    expect(ioctl(dmSeccomp().program, IOCTL_PRIVCMD_DM_OP)).toBe(SECCOMP_RET.ALLOW);
    expect(ioctl(dmSeccomp().program, 0x5413 /* TIOCGWINSZ */)).not.toBe(SECCOMP_RET.ALLOW);
  });

  it('still kills a syscall outside the allow-list (mount)', () => {
    expect(
      runSeccomp(dmSeccomp().program, { nr: X86_64_SYSCALLS.mount, arch: 0xc000003e }),
    ).not.toBe(SECCOMP_RET.ALLOW);
  });

  it("is privcmd-filter's xenDeviceModelSeccomp(), profile and program, compiled once", async () => {
    const { xenDeviceModelSeccomp } = await import('@xen-depriv/privcmd-filter');
    const s = xenDeviceModelSeccomp();
    expect(dmSeccomp()).toEqual({ profile: s.profile, program: s.program });
    expect(dmSeccomp().profile).toBe('privcmd-filter/deviceModelAllowlist+IOCTL_PRIVCMD_HYPERCALL');
    expect(dmSeccomp()).toBe(dmSeccomp());
  });

  it('allows the tap ioctls of a -netdev tap,fd=N (TUNSETOFFLOAD, TUNGETIFF), not TUNSETIFF', () => {
    expect(ioctl(dmSeccomp().program, 0x400454d0 /* TUNSETOFFLOAD */)).toBe(SECCOMP_RET.ALLOW);
    expect(ioctl(dmSeccomp().program, 0x800454d2 /* TUNGETIFF */)).toBe(SECCOMP_RET.ALLOW);
    expect(ioctl(dmSeccomp().program, 0x400454ca /* TUNSETIFF */)).not.toBe(SECCOMP_RET.ALLOW);
  });
});
