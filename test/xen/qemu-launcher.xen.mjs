// qemu-launcher in jail mode with Xen's own QEMU (Debian's qemu-system-xen) as the device model
// of a real, paused HVM domain: never root, private root with only its /dev/xen nodes (removed
// once ready), -xen-domid-restrict, the launcher's seccomp filter; verifyConfinement in dom0.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  destroy,
  deviceModelSeccomp,
  hostRootIsRamfs,
  launch,
  plan,
  probeQemu,
  sysSpawner,
  verifyConfinement,
  xenDevices,
} from '@xen-depriv/qemu-launcher';
import { RestrictingProxy, XenstoreClient } from '@xen-depriv/xs-restrict';
import { makeHvm } from './privcmd-filter.xen.mjs';

const XEN_QEMU = '/usr/libexec/xen-qemu-system-i386';
const numbers = (path) => {
  const rdev = statSync(path).rdev;
  return { major: (rdev >> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
};

export default function (test) {
  test("Xen's QEMU as the DM of a real HVM domain, launched in jail mode: never root, confined, torn down", async () => {
    const domid = makeHvm();
    const stateDir = mkdtempSync(join(tmpdir(), 'ql-'));
    const uid = 3_210_000 + domid;
    let handle;
    let dom0;
    let proxy;
    const refusals = [];
    try {
      // The DM's only xenstore is a restricting proxy for domain D in privileged mode (a dom0
      // connection on which the proxy decides as D): dom0 gives D its device-model directory.
      dom0 = await XenstoreClient.connect({ path: '/run/xenstored/socket' });
      const dmDir = `/local/domain/0/device-model/${domid}`;
      await dom0.mkdir(dmDir);
      await dom0.setPerms(dmDir, [
        { domid: 0, perm: 'n' },
        { domid, perm: 'b' },
      ]);
      const proxySocket = join(stateDir, 'xs-proxy.sock');
      proxy = new RestrictingProxy({
        domid,
        upstream: { privileged: '/run/xenstored/socket' },
        log: (line) => refusals.push(JSON.parse(line)),
      });
      await proxy.listen(proxySocket);
      chownSync(proxySocket, uid, uid);
      const caps = await probeQemu(XEN_QEMU);
      const devices = [
        ...xenDevices({
          privcmd: numbers('/dev/xen/privcmd'),
          evtchn: numbers('/dev/xen/evtchn'),
          gntdev: numbers('/dev/xen/gntdev'),
          xenbus: numbers('/dev/xen/xenbus'),
        }),
        {
          path: '/dev/xen/hypercall',
          ...numbers('/dev/xen/hypercall'),
          mode: 0o600,
          removeAfterReady: true,
        },
      ];
      const p = plan(
        {
          domid,
          binary: XEN_QEMU,
          xen: true,
          stateDir,
          devices,
          xenstoreSocket: proxySocket,
          args: ['-xen-attach', '-m', '16', '-S'],
        },
        caps,
        { uid, gid: uid },
        { seccomp: deviceModelSeccomp(), rootEntry: hostRootIsRamfs() ? 'chroot' : 'pivot_root' },
      );
      handle = await launch(p, { spawner: sysSpawner });
      const status = readFileSync(`/proc/${handle.pid}/status`, 'utf8');
      const report = verifyConfinement(handle.pid, p, { expectedRoot: handle.root });
      const failed = report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.actual}`);
      assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(status, /^CapEff:\t0000000000000000$/m);
      assert.match(status, /^NoNewPrivs:\t1$/m);
      assert.match(status, /^Seccomp:\t2$/m);
      assert.deepEqual(failed, []);
      const ioreq = execFileSync('xenstore-ls', [`/local/domain/0/device-model/${domid}`], {
        encoding: 'utf8',
      });
      await destroy(handle);
      handle = undefined;
      return {
        uid,
        checks: report.checks.length,
        deviceModelKeys: ioreq.trim().split('\n').filter(Boolean).length,
        proxyRefusals: refusals.filter((r) => r.event === 'refused').length,
      };
    } finally {
      if (handle) await destroy(handle).catch(() => {});
      await proxy?.close();
      await dom0?.rm(`/local/domain/0/device-model/${domid}`).catch(() => {});
      await dom0?.close();
      rmSync(stateDir, { recursive: true, force: true });
      execFileSync('dmop-test', ['destroy', String(domid)]);
    }
  });
}
