// A real HVM guest with every device of a typical xl.cfg (a raw disk, a CD-ROM, a vif on dom0's
// bridge xenbr0, VNC, a pty serial), `device_model_override` = the project's shim and the service
// xen-deprivd in dom0: QEMU never root, in its own root and network namespace, given descriptors
// and never a host path. Each device is its own test; then save/restore, then the same guest
// with `xen_emul_unplug=never` (all disk and network I/O through QEMU's emulated IDE and
// rtl8139 rather than dom0's blkback/netback). The guest's /init is test/xen/guest/devices-init.sh,
// appended over the lab's initrd-dev.cpio; its CD images (reports/xen-guest/cd-{a,b}.iso, each with
// a marker.txt) are made on the host by scripts/test-xen.sh with genisoimage.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import tty from 'node:tty';
import { openPty } from '@xen-depriv/sys';
import {
  cleanup,
  connectDeprivd,
  leftovers,
  readJson,
  running,
  SHIM,
  startDeprivd,
} from './deprivd.mjs';
import { readOr, sleep, until as untilEvery } from './helpers.mjs';

const repo = join(import.meta.dirname, '..', '..');
const NAME = 'xddev';
const DIR = '/run/xen-deprivd-devices-test';
const STATE = `${DIR}/state`;
const SOCKET = `${DIR}/deprivd.sock`;
const POOL_FIRST = 3_230_000;
const POOL_COUNT = 1000;
const DISK = '/tmp/xd-dev-disk.img';
const INITRD = '/tmp/xd-dev-initrd.cpio';
const ISO = (x) => join(repo, 'reports', 'xen-guest', `cd-${x}.iso`);
const CONSOLE = `/var/log/xen/console/guest-${NAME}.log`;
const until = (what, ms, fn) => untilEvery(what, ms, fn, 500);
const sh = (cmd, args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: 'pipe' });
const trySh = (cmd, args) => {
  try {
    return sh(cmd, args);
  } catch (e) {
    return e.stderr ? null : null;
  }
};
const isoMarker = (x) => {
  // marker.txt's contents: the ISO's only file, found by its text (genisoimage stores it plainly).
  const m = /XD-CD-[ab] \d+/.exec(readFileSync(ISO(x), 'latin1'));
  assert.ok(m, `no marker in ${ISO(x)}`);
  return m[0];
};

// Run as the DM's uid (in dom0's own root, a weaker place than its jail): every way to xenstore
// but the proxy must fail. Prints one JSON object: errno code per path, and the proxy's answer to
// a read of a dom0 key and of the guest's own name.
const REACH_PROBE = `
const fs = require('node:fs'), net = require('node:net');
const out = {};
for (const p of ['/dev/xen/xenbus', '/dev/xen/xenbus_backend', '/proc/xen/xenbus']) {
  try { fs.closeSync(fs.openSync(p, 'r+')); out[p] = 'opened'; } catch (e) { out[p] = e.code; }
}
const xsRead = (sock, path) => new Promise((resolve) => {
  const c = net.connect(sock);
  const body = Buffer.from(path + '\\0');
  const h = Buffer.alloc(16);
  h.writeUInt32LE(2, 0); h.writeUInt32LE(7, 4); h.writeUInt32LE(0, 8); h.writeUInt32LE(body.length, 12);
  let got = Buffer.alloc(0);
  c.on('connect', () => c.write(Buffer.concat([h, body])));
  c.on('data', (d) => {
    got = Buffer.concat([got, d]);
    if (got.length >= 16 && got.length >= 16 + got.readUInt32LE(12)) {
      const type = got.readUInt32LE(0);
      const payload = got.subarray(16, 16 + got.readUInt32LE(12)).toString().replace(/\\0$/, '');
      resolve(type === 16 ? 'error ' + payload : 'read ' + payload); c.destroy();
    }
  });
  c.on('error', (e) => resolve(e.code));
});
(async () => {
  for (const p of ['/run/xenstored/socket', '/var/run/xenstored/socket', '/run/xenstored/socket_ro']) {
    out[p] = await xsRead(p, '/local/domain/0/name');
  }
  const proxy = process.argv[1];
  out.proxyDom0 = await xsRead(proxy, '/local/domain/0/name');
  out.proxyOwn = await xsRead(proxy, process.argv[2]);
  console.log(JSON.stringify(out));
})();
`;

/** Everything the tests share: one guest at a time. */
const s = {
  service: null,
  client: null,
  domid: null,
  shimPid: null,
  qemuPid: null,
  uid: null,
  diskMarker: null,
  consoleFrom: 0,
};

const readdirOr = (dir) => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};
const consoleText = () => readOr(CONSOLE).slice(s.consoleFrom).replaceAll('\r', '');
const consoleLine = (prefix) =>
  consoleText()
    .split('\n')
    .find((l) => l.startsWith(prefix)) ?? null;

const diag = () =>
  [
    `qemu-dm log: ${readOr(`/var/log/xen/qemu-dm-${NAME}.log`).slice(-1500)}`,
    `xen-deprivd: ${s.service?.stderr().slice(-4000) ?? '(not started)'}`,
    s.domid !== null ? `QEMU log: ${readOr(`${STATE}/dm-${s.domid}/qemu.log`).slice(-1500)}` : '',
    `guest console: ${consoleText().slice(-1200)}`,
    `xl list: ${trySh('xl', ['list']) ?? '-'}`,
  ].join('\n');

/** The initrd: the lab's device initrd, then a cpio of our /init (a later entry wins). */
function buildInitrd() {
  const dir = '/tmp/xd-dev-init';
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  copyFileSync(join(import.meta.dirname, 'guest', 'devices-init.sh'), `${dir}/init`);
  execFileSync('chmod', ['0755', `${dir}/init`]);
  const extra = execFileSync('sh', ['-c', `cd ${dir} && echo init | cpio -o -H newc 2>/dev/null`]);
  writeFileSync(INITRD, Buffer.concat([readFileSync('/lab/guest/initrd-dev.cpio'), extra]));
}

function config({ emulated }) {
  return [
    `name = "${NAME}"`,
    'type = "hvm"',
    'kernel = "/lab/guest/vmlinuz"',
    `ramdisk = "${INITRD}"`,
    `cmdline = "console=hvc0 rdinit=/init quiet${emulated ? ' xen_emul_unplug=never' : ''}"`,
    'memory = 128',
    'vcpus = 1',
    'vga = "none"',
    'vnc = 1',
    'vnclisten = "127.0.0.1"',
    'serial = "pty"',
    `disk = [ '${DISK},raw,hda,rw', '${ISO('a')},raw,hdc,cdrom' ]`,
    "vif = [ 'bridge=xenbr0,mac=00:16:3e:99:00:02' ]",
    'device_model_version = "qemu-xen"',
    `device_model_override = "${SHIM}"`,
    // libxl then pre-opens its QMP listener and passes it (fd), and kills the DM by its uid.
    'dm_restrict = 1',
    'on_poweroff = "preserve"',
    'on_reboot = "destroy"',
    'on_crash = "preserve"',
    '',
  ].join('\n');
}

/** The service's DM of the guest: pid, uid; QEMU never root and holding no host path by name. */
async function dmOfGuest() {
  s.domid = Number(sh('xl', ['domid', NAME]).trim());
  s.shimPid = Number(sh('xenstore-read', [`/local/domain/${s.domid}/image/device-model-pid`]));
  const { dms } = await s.client.call('list');
  const dm = dms.find((d) => d.domid === s.domid);
  assert.ok(dm, `the service holds domain ${s.domid}'s DM: ${JSON.stringify(dms)}`);
  s.qemuPid = dm.pid;
  s.uid = dm.uid;
  assert.ok(s.uid >= POOL_FIRST && s.uid < POOL_FIRST + POOL_COUNT, `uid ${s.uid}`);
  const status = readFileSync(`/proc/${s.qemuPid}/status`, 'utf8');
  const u = s.uid;
  assert.match(status, new RegExp(`^Uid:\\t${u}\\t${u}\\t${u}\\t${u}$`, 'm'), 'never root');
  assert.match(status, /^CapEff:\t0000000000000000$/m);
  const cmdline = readFileSync(`/proc/${s.qemuPid}/cmdline`, 'utf8').split('\0');
  for (const hostPath of [DISK, ISO('a'), ISO('b'), 'vif', 'ifname=', 'pty']) {
    assert.ok(
      !cmdline.some((a) => a.includes(hostPath)),
      `QEMU's argv names ${hostPath}: ${cmdline.join(' ')}`,
    );
  }
  const check = await s.client.call('check', { domid: s.domid });
  const failed = check.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.actual}`);
  if (failed.length > 0) {
    const record = readJson(`${STATE}/state/dm-${s.domid}.json`);
    const fds = readdirOr(`/proc/${s.qemuPid}/fd`).map((n) => {
      try {
        return `${n}=${readlinkSync(`/proc/${s.qemuPid}/fd/${n}`)}`;
      } catch {
        return `${n}=?`;
      }
    });
    assert.deepEqual(
      failed,
      [],
      `check failed:\n${failed.join('\n')}\nplanned: ${JSON.stringify(record?.plan?.fds)}\nopen: ${fds.join(' ')}\nargv: ${readOr(`/proc/${s.qemuPid}/cmdline`).replaceAll('\0', ' ')}`,
    );
  }
  return { checks: `${check.passed}/${check.checks.length}` };
}

async function create({ emulated }) {
  const cfg = `/tmp/${NAME}.cfg`;
  writeFileSync(cfg, config({ emulated }));
  s.consoleFrom = readOr(CONSOLE).length;
  try {
    sh('xl', ['create', cfg]);
  } catch (e) {
    throw new Error(`xl create failed: ${e.stderr ?? e.message}\n${diag()}`);
  }
  const dm = await dmOfGuest();
  try {
    await until('XD-READY on the guest console', 420_000, () => {
      if (!running(s.qemuPid)) throw new Error('QEMU died');
      return consoleText().includes('XD-READY');
    });
  } catch (e) {
    throw new Error(`${e.message}\n${diag()}`);
  }
  return dm;
}

async function destroy() {
  const domid = s.domid;
  await s.client.call('watch', { domid });
  sh('xl', ['destroy', NAME]);
  const exited = await until('the service to tell the end of the DM', 30_000, () =>
    s.client.notifications.find((n) => n.method === 'exited' && n.params.domid === domid),
  );
  await until('the shim to exit', 15_000, () => !running(s.shimPid));
  assert.deepEqual(exited.params.errors, [], 'teardown errors');
  assert.deepEqual((await s.client.call('list')).dms, [], 'the service holds no DM');
  const left = leftovers({ stateDir: STATE, domid, uid: s.uid, xenstore: true });
  assert.deepEqual(left, [], 'nothing left after xl destroy');
  assert.equal(trySh('ip', ['link', 'show', `vif${domid}.0-emu`]), null, 'the tap is gone');
  s.domid = null;
}

async function finish() {
  delete process.env.XEN_DEPRIVD_SOCKET;
  s.client?.close();
  if (trySh('xl', ['domid', NAME]) !== null) trySh('xl', ['destroy', NAME]);
  if (s.shimPid && running(s.shimPid)) await sleep(3000);
  await s.service?.stop();
  await cleanup({ qemuPid: s.qemuPid, uid: s.uid, dirs: [DIR] });
  rmSync(DISK, { force: true });
  rmSync(INITRD, { force: true });
  rmSync('/tmp/xd-dev.save', { force: true });
}

export default function (test) {
  test('guest devices: xl create with the shim, disk + CD-ROM + vif + VNC + serial pty, QEMU never root', async () => {
    for (const x of ['a', 'b']) {
      assert.ok(existsSync(ISO(x)), `${ISO(x)}: made by scripts/test-xen.sh (needs genisoimage)`);
    }
    buildInitrd();
    s.diskMarker = `XD-DISK-MARKER ${process.pid}-${Date.now()}`;
    writeFileSync(DISK, Buffer.concat([Buffer.from(`${s.diskMarker}\n`), Buffer.alloc(8 << 20)]));
    rmSync(DIR, { recursive: true, force: true });
    s.service = await startDeprivd({
      socket: SOCKET,
      stateDir: STATE,
      pool: `${POOL_FIRST}:${POOL_COUNT}`,
    });
    s.client = await connectDeprivd(SOCKET);
    // The shim, spawned by libxl for xl create and xl restore, finds the service here.
    process.env.XEN_DEPRIVD_SOCKET = SOCKET;
    const dm = await create({ emulated: false });
    // The plan declared every descriptor: two images opened by the launcher, the tap.
    const record = readJson(`${STATE}/state/dm-${s.domid}.json`);
    const passed = record.plan.fds.map((f) => f.source).filter((x) => x.startsWith('passed:'));
    assert.deepEqual(
      passed.sort(),
      [
        'passed:disk-ide-5632',
        'passed:disk-ide0',
        'passed:disk-ide0-ro',
        'passed:libxl-qmp',
        'passed:tap-net0',
      ].sort(),
    );
    return { domid: s.domid, uid: s.uid, ...dm };
  });

  test("guest devices: the DM's uid reaches xenstore only through the proxy (no xenbus node)", async () => {
    // The plan never gave the DM /dev/xen/xenbus, and the guest above runs without it.
    const record = readJson(`${STATE}/state/dm-${s.domid}.json`);
    const devices = record.plan.devices.map((d) => d.path);
    assert.ok(!devices.includes('/dev/xen/xenbus'), devices.join(' '));
    assert.ok(devices.includes('/dev/xen/privcmd'), devices.join(' '));
    const proxy = `${STATE}/xs-proxy/dm-${s.domid}.sock`;
    // A key of its guest's that the catalogue lets the DM read (libxl wrote it).
    const own = `/local/domain/${s.domid}/console/type`;
    const probe = (ids) =>
      JSON.parse(
        execFileSync(process.execPath, ['-e', REACH_PROBE, proxy, own], {
          encoding: 'utf8',
          cwd: '/',
          ...ids,
        }),
      );
    const out = probe({ uid: s.uid, gid: s.uid });
    assert.deepEqual(
      {
        xenbus: out['/dev/xen/xenbus'],
        xenbusBackend: out['/dev/xen/xenbus_backend'],
        procXenbus: out['/proc/xen/xenbus'],
      },
      // (/proc/xen/xenbus: xenfs's, root's; absent where xenfs is not mounted.)
      {
        xenbus: 'EACCES',
        xenbusBackend: 'EACCES',
        procXenbus: out['/proc/xen/xenbus'] === 'ENOENT' ? 'ENOENT' : 'EACCES',
      },
    );
    // xenstored's own sockets (root's, or absent).
    for (const p of [
      '/run/xenstored/socket',
      '/var/run/xenstored/socket',
      '/run/xenstored/socket_ro',
    ]) {
      assert.ok(['EACCES', 'ENOENT'].includes(out[p]), `${p}: ${out[p]}`);
    }
    // The proxy itself, from here too: refused (its socket's directory, or the proxy's rule).
    assert.ok(['EACCES', 'error EACCES'].includes(out.proxyDom0), out.proxyDom0);
    // What that way in gives (the restriction is the connection's, whoever connects): its own
    // guest's keys as that guest, nothing of dom0's.
    const asRoot = probe({});
    assert.equal(asRoot.proxyDom0, 'error EACCES');
    assert.match(asRoot.proxyOwn, /^read \S+/);
    assert.equal(
      asRoot['/run/xenstored/socket'],
      `read Domain-0`,
      'the probe reaches xenstored as root',
    );
    return { asDmUid: out, proxyAsRoot: { dom0: asRoot.proxyDom0, own: asRoot.proxyOwn } };
  });

  test('guest device: disk', async () => {
    const line = consoleLine('XD-DISK:');
    assert.ok(line?.endsWith(`first-line=${s.diskMarker}`), `${line}\n${diag()}`);
    const wrote = consoleLine('XD-DISK-WRITE:');
    assert.match(wrote ?? '', /^XD-DISK-WRITE: ok XD-WROTE /);
    // The guest's write landed in the image file (byte 4096).
    const fd = openSync(DISK, 'r');
    const b = Buffer.alloc(64);
    readSync(fd, b, 0, 64, 4096);
    closeSync(fd);
    assert.ok(b.toString('latin1').startsWith(wrote.slice('XD-DISK-WRITE: ok '.length)));
    return { line };
  });

  test('guest device: cdrom', async () => {
    const a = isoMarker('a');
    const b = isoMarker('b');
    assert.equal(consoleLine('XD-CDROM:'), `XD-CDROM: first-line=${a}`, diag());
    // libxl sends add-fd (the ISO's descriptor) and blockdev-change-medium /dev/fdset/N on its
    // own QMP socket: no host path reaches QEMU.
    // The guest mounts sr0 every 2 s to look for a new disc, and Linux locks the tray while a
    // disc is mounted: QEMU then refuses the change ("is locked ... wait for tray to open"),
    // as it would for any guest using its drive. Try again, as an operator would.
    let tries = 0;
    await until('xl cd-insert to be accepted', 60_000, () => {
      tries++;
      try {
        sh('xl', ['cd-insert', NAME, 'hdc', ISO('b')]);
        return true;
      } catch (e) {
        if (!/is locked/.test(String(e.stderr))) throw e;
        return false;
      }
    });
    await until('the guest to read the second CD', 90_000, () =>
      consoleText().includes(`XD-CDROM-NOW: first-line=${b}`),
    );
    const cmdline = readFileSync(`/proc/${s.qemuPid}/cmdline`, 'utf8');
    assert.ok(!cmdline.includes('cd-b'), 'no ISO path in QEMU argv');
    return { first: a, inserted: b, tries };
  });

  test('guest device: nic', async () => {
    const up = consoleLine('XD-NET-UP:');
    assert.match(up ?? '', /addr=10\.99\.0\.2\/24/, diag());
    const out = sh('ping', ['-c', '3', '-W', '5', '10.99.0.2']);
    assert.match(out, /3 packets transmitted, 3 (packets )?received/);
    return { up, ping: /min\/avg\/max = (\S+)/.exec(out)?.[1] ?? null };
  });

  test('guest device: vnc', async () => {
    const host = sh('xenstore-read', [`/local/domain/${s.domid}/console/vnc-listen`]).trim();
    const port = Number(sh('xenstore-read', [`/local/domain/${s.domid}/console/vnc-port`]).trim());
    assert.equal(host, '127.0.0.1');
    assert.ok(port >= 5900 && port < 6000, `vnc-port ${port}`);
    const banner = await new Promise((resolve, reject) => {
      const c = connect(port, host);
      c.setTimeout(20_000, () => reject(new Error('no RFB banner in 20 s')));
      c.once('data', (d) => {
        resolve(d.toString('latin1'));
        c.destroy();
      });
      c.on('error', reject);
    });
    assert.equal(banner, 'RFB 003.008\n');
    return { host, port, banner: banner.trim() };
  });

  test('guest device: serial console', async () => {
    const ttyPath = sh('xenstore-read', [`/local/domain/${s.domid}/serial/0/tty`]).trim();
    assert.match(ttyPath, /^\/dev\/pts\/\d+$/);
    // `xl console` on a terminal of our own (it puts its stdin into raw mode).
    const pty = openPty();
    const xl = spawn('xl', ['console', '-t', 'serial', NAME], {
      stdio: [pty.slave, pty.slave, 'pipe'],
    });
    let seen = '';
    const master = new tty.ReadStream(pty.master);
    master.on('data', (b) => {
      seen += b.toString('latin1');
    });
    master.on('error', () => {});
    try {
      await until('XD-SERIAL through xl console', 30_000, () => /XD-SERIAL \d+/.test(seen));
    } finally {
      xl.kill('SIGKILL');
      closeSync(pty.slave);
      master.destroy();
    }
    return { tty: ttyPath, seen: /XD-SERIAL \d+/.exec(seen)[0] };
  });

  test('guest save/restore', async () => {
    // The lab's dom0 lacks libxl's save helper: the host's (same Debian package) on the share.
    const helper = '/usr/lib/xen-4.17/bin/libxl-save-helper';
    if (!existsSync(helper)) {
      copyFileSync(join(repo, 'reports', 'xen-guest', 'libxl-save-helper'), helper);
      execFileSync('chmod', ['0755', helper]);
    }
    const ticks = () => [...consoleText().matchAll(/XD-TICK (\d+)/g)].map((m) => Number(m[1]));
    const before = Math.max(...ticks());
    const oldDomid = s.domid;
    const oldUid = s.uid;
    sh('xl', ['save', NAME, '/tmp/xd-dev.save']);
    await until(
      'the saved DM gone',
      30_000,
      async () => (await s.client.call('list')).dms.length === 0,
    );
    assert.deepEqual(
      leftovers({ stateDir: STATE, domid: oldDomid, uid: oldUid, xenstore: true }),
      [],
      'nothing of the saved domain left',
    );
    const from = readOr(CONSOLE).length;
    // The DM's log and proxy refusals go with a failed launch: kept here while xl runs.
    const kept = new Map();
    const keep = setInterval(() => {
      for (const dir of [`${STATE}`, `${STATE}/xs-proxy`]) {
        for (const f of readdirOr(dir)) {
          const p = `${dir}/${f}`;
          const text = readOr(/^dm-\d+$/.test(f) ? `${p}/qemu.log` : p);
          if (text) kept.set(p, text);
        }
      }
    }, 50);
    const restored = await new Promise((resolve) => {
      const xl = spawn('xl', ['restore', '/tmp/xd-dev.save'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      xl.stderr.on('data', (b) => {
        err += b;
      });
      xl.on('exit', (code) => resolve({ code, err }));
    });
    clearInterval(keep);
    if (restored.code !== 0) {
      const logs = [...kept].map(([p, t]) => `--- ${p}\n${t.slice(-3000)}`).join('\n');
      // A DM killed by a signal says nothing in its log: the kernel's (seccomp, segfault).
      const kernel = (trySh('dmesg', []) ?? '').split('\n').slice(-25).join('\n');
      throw new Error(
        `xl restore failed: ${restored.err}\n${diag()}\n${logs}\n--- dmesg\n${kernel}`,
      );
    }
    const dm = await dmOfGuest();
    assert.notEqual(s.domid, oldDomid);
    s.consoleFrom = from;
    await until('a tick after the restore', 120_000, () => ticks().some((t) => t > before));
    return { before, after: Math.max(...ticks()), domid: s.domid, ...dm };
  });

  test('guest devices: xl destroy leaves nothing', async () => {
    await destroy();
  });

  test('guest device: disk and nic through QEMU (xen_emul_unplug=never)', async () => {
    try {
      writeFileSync(DISK, Buffer.concat([Buffer.from(`${s.diskMarker}\n`), Buffer.alloc(8 << 20)]));
      const dm = await create({ emulated: true });
      const disk = consoleLine('XD-DISK:');
      assert.match(disk ?? '', /path=emulated/, `${disk}\n${diag()}`);
      assert.ok(disk.endsWith(`first-line=${s.diskMarker}`), disk);
      const up = consoleLine('XD-NET-UP:');
      assert.match(up ?? '', /driver=8139(cp|too)/, up);
      const out = sh('ping', ['-c', '3', '-W', '5', '10.99.0.2']);
      assert.match(out, /3 packets transmitted, 3 (packets )?received/);
      await destroy();
      return { disk, up, ...dm };
    } finally {
      await finish();
    }
  });
}
