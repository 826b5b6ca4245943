// `xl create` of a real HVM guest whose device_model_override is the project's launcher
// (apps/depriv-launcher's xen-depriv-dm): libxl execs it as root with QEMU's full argv; it runs
// Xen's QEMU in jail mode (leased uid, private root, no-new-privs, seccomp) with a restricting
// xenstore proxy as its only xenstore. The guest must reach userspace, verifyConfinement must
// pass in dom0, and `xl destroy` plus the launcher's teardown must leave nothing.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { verifyConfinement } from '@xen-depriv/qemu-launcher';
import { pidsOfUid, readOr, sleep, until as untilEvery } from './helpers.mjs';

const repo = join(import.meta.dirname, '..', '..');
const DM = join(repo, 'apps', 'depriv-launcher', 'dist', 'dm.js');
const NAME = 'hvmxl';
const STATE = '/run/xen-depriv-xl-test';
const POOL_FIRST = 3_220_000;
const now = () => performance.now() / 1000;
// The guest boots for minutes under TCG: poll twice a second.
const until = (what, ms, fn) => untilEvery(what, ms, fn, 500);

const sh = (cmd, args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: 'pipe' });
const trySh = (cmd, args) => {
  try {
    return sh(cmd, args);
  } catch {
    return null;
  }
};
const alive = (pid) => existsSync(`/proc/${pid}`);

/**
 * The xl config: the lab's HVM guest with qemu-xen, dm_restrict and our launcher. `vga = "none"`
 * by default: the guest reaches userspace in about half the time stdvga takes under TCG
 * (XEN_TEST_HVM_VGA=stdvga runs the stdvga variant, which also exercises QEMU's VRAM
 * populate hypercall; see docs/xen-lab.md).
 */
function config(vga) {
  const lab = readFileSync('/lab/guest/hvm.cfg', 'utf8')
    .split('\n')
    .filter((l) => !/^(name|vga|on_poweroff|cmdline)\s*=/.test(l));
  return [
    ...lab,
    `name = "${NAME}"`,
    // No console on ttyS0: every character the kernel prints there is several port I/O exits
    // handled by QEMU in dom0 (minutes under TCG); hvc0 is xenconsoled's ring, and `quiet`
    // leaves the init's marker line.
    'cmdline = "console=hvc0 rdinit=/init quiet"',
    `vga = "${vga}"`,
    ...(vga === 'stdvga' ? ['videoram = 16'] : []),
    'device_model_version = "qemu-xen"',
    `device_model_override = "${DM}"`,
    // Kept after the guest's poweroff, so that the test's `xl destroy` is what tears it down.
    'on_poweroff = "preserve"',
    '',
  ].join('\n');
}

export default function (test) {
  test('xl create: HVM guest with xen-depriv-dm as device_model_override, jail mode + xenstore proxy, reaches userspace, torn down', async () => {
    const upstream = process.env.XEN_DEPRIV_DM_UPSTREAM ?? 'privileged';
    const cfg = '/tmp/hvmxl.cfg';
    const vga = process.env.XEN_TEST_HVM_VGA ?? 'none';
    writeFileSync(cfg, config(vga));
    rmSync(STATE, { recursive: true, force: true });
    rmSync(`/var/log/xen/console/guest-${NAME}.log`, { force: true });
    const env = {
      ...process.env,
      XEN_DEPRIV_DM_STATE_DIR: STATE,
      XEN_DEPRIV_DM_POOL_FIRST: String(POOL_FIRST),
      XEN_DEPRIV_DM_UPSTREAM: upstream,
    };
    let domid = null;
    let launcherPid = null;
    let qemuPid = null;
    let uid = null;
    const diag = () => {
      const parts = [
        `qemu-dm log: ${readOr(`/var/log/xen/qemu-dm-${NAME}.log`).slice(-1500)}`,
        ...readdirSync('/var/log/xen')
          .filter((f) => f.startsWith('xen-depriv-dm-'))
          .map((f) => `${f}: ${readOr(`/var/log/xen/${f}`).slice(-3000)}`),
        domid !== null ? `QEMU log: ${readOr(`${STATE}/dm-${domid}/qemu.log`).slice(-1500)}` : '',
        `guest console: ${readOr(`/var/log/xen/console/guest-${NAME}.log`).slice(-800)}`,
      ];
      return parts.join('\n');
    };
    try {
      const t0 = now();
      try {
        execFileSync('xl', ['create', cfg], { encoding: 'utf8', stdio: 'pipe', env });
      } catch (e) {
        throw new Error(`xl create failed: ${e.stderr ?? e.message}\n${diag()}`);
      }
      const tCreated = now();
      domid = Number(sh('xl', ['domid', NAME]).trim());
      launcherPid = Number(
        sh('xenstore-read', [`/local/domain/${domid}/image/device-model-pid`]).trim(),
      );
      const recordPath = `${STATE}/state/dm-${domid}.json`;
      const record = await until('the launch record in phase running', 30_000, () => {
        const r = JSON.parse(readOr(recordPath, 'null'));
        return r?.phase === 'running' ? r : null;
      });
      qemuPid = record.pid;
      uid = record.plan.uid;
      assert.ok(uid >= POOL_FIRST && uid < POOL_FIRST + 1000, `uid ${uid} from the test pool`);

      // Confinement while the guest boots.
      const status = readFileSync(`/proc/${qemuPid}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(status, /^CapEff:\t0000000000000000$/m);
      assert.match(status, /^NoNewPrivs:\t1$/m);
      assert.match(status, /^Seccomp:\t2$/m);
      const report = verifyConfinement(qemuPid, record.plan, {
        expectedRoot: record.root,
        allowedSockets: ['/run/qmp.sock', '/run/xenstored/socket', `/run/qmp-libxenstat-${domid}`],
      });
      const failed = report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.actual}`);
      assert.deepEqual(failed, [], `confinement checks failed:\n${failed.join('\n')}`);
      const keys = trySh('xenstore-ls', [`/local/domain/0/device-model/${domid}`]) ?? '';

      // The guest's userspace marker on its console.
      const log = `/var/log/xen/console/guest-${NAME}.log`;
      try {
        await until('the guest userspace marker', 240_000, () => {
          if (!alive(qemuPid)) throw new Error('QEMU died before the guest reached userspace');
          return readOr(log).includes('GUEST:');
        });
      } catch (e) {
        throw new Error(`${e.message}\n${diag()}`);
      }
      const tGuest = now();

      const dmLog = readOr(`/var/log/xen/xen-depriv-dm-${domid}.log`)
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
      const refused = dmLog.filter((r) => r.event === 'refused');
      // Refusals the catalogue plans for (deprivNeeds false): QEMU assumes backend domid 0
      // (backend-domid), the launcher writes the backends list (dm-backends), and the legacy
      // console backend's watch on the guest's primary console is not needed with xenconsoled.
      const expected = [
        /^read \/local\/domain\/0\/domid$/,
        new RegExp(`^mkdir /local/domain/0/device-model/${domid}/backends/[a-z0-9]+$`),
        new RegExp(`^watch /local/domain/${domid}/console$`),
      ];
      const unexpected = refused
        .map((r) => `${r.rule?.replace(/^not-in-allowlist:/, '')} ${r.request?.path}`)
        .filter((x) => !expected.some((re) => re.test(x)));
      assert.deepEqual(unexpected, [], 'proxy refusals outside the catalogue plan');
      const ready = dmLog.find((r) => r.event === 'running');

      const cpuSeconds = (pid) => {
        const f = readOr(`/proc/${pid}/stat`).split(') ')[1]?.split(' ') ?? [];
        return Math.round(((Number(f[11]) + Number(f[12])) / 100) * 10) / 10;
      };
      const cpu = {
        launcherS: cpuSeconds(launcherPid),
        launcherAtReadyS: ready?.cpuS ?? null,
        qemuS: cpuSeconds(qemuPid),
      };

      // xl destroy: libxl kills the DM by uid (the launcher wrote the leased uid into
      // device-model-kill-uid); the launcher sees QEMU exit and tears down the rest.
      // XEN_TEST_DM_KILL=pid: without device-model-kill-uid libxl signals the pid it spawned
      // (SIGHUP to the launcher) instead, the other teardown path.
      const killBy = process.env.XEN_TEST_DM_KILL ?? 'uid';
      if (killBy === 'pid')
        sh('xenstore-rm', [`/local/domain/${domid}/image/device-model-kill-uid`]);
      const tDestroy = now();
      sh('xl', ['destroy', NAME]);
      await until('the launcher to finish its teardown', 30_000, () => !alive(launcherPid));
      const tGone = now();
      const left = [];
      if (pidsOfUid(uid).length) left.push(`processes of uid ${uid}: ${pidsOfUid(uid)}`);
      if (existsSync(`${STATE}/dm-${domid}`)) left.push(`jail ${STATE}/dm-${domid}`);
      if (existsSync(recordPath)) left.push(`launch record ${recordPath}`);
      if (existsSync(`${STATE}/xs-proxy/dm-${domid}.sock`)) left.push('proxy socket');
      const leases = existsSync(`${STATE}/leases`) ? readdirSync(`${STATE}/leases`) : [];
      if (leases.length) left.push(`leases: ${leases.join(' ')}`);
      const qmpLink = `/var/run/xen/qmp-libxenstat-${domid}`;
      if (trySh('ls', ['-la', qmpLink]) !== null) left.push(qmpLink);
      if (trySh('xenstore-ls', [`/local/domain/0/device-model/${domid}`])?.trim())
        left.push(`/local/domain/0/device-model/${domid}`);
      if (readOr('/proc/mounts').includes(STATE)) left.push('a mount under the state dir');
      const done = readOr(`/var/log/xen/xen-depriv-dm-${domid}.log`)
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .find((r) => r.event === 'done');
      const teardown = readOr(`/var/log/xen/xen-depriv-dm-${domid}.log`)
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .find((r) => r.event === 'teardown');
      assert.deepEqual(left, [], 'nothing left after xl destroy');
      assert.ok(done, `the launcher logged its teardown:\n${diag()}`);
      assert.deepEqual(done.errors, [], 'teardown errors');
      const round = (x) => Math.round(x * 10) / 10;
      return {
        upstream,
        vga,
        killBy,
        teardownWhy: teardown?.why ?? null,
        domid,
        uid,
        xlCreateS: round(tCreated - t0),
        dmReadyS: ready?.seconds ?? null,
        guestUserspaceS: round(tGuest - t0),
        teardownS: round(tGone - tDestroy),
        cpu,
        checks: report.checks.length,
        deviceModelKeys: keys.trim().split('\n').filter(Boolean).length,
        refused: refused.length,
        refusals: done.refusals,
      };
    } finally {
      if (trySh('xl', ['domid', NAME]) !== null) trySh('xl', ['destroy', NAME]);
      if (launcherPid && alive(launcherPid)) {
        await sleep(5000);
        if (alive(launcherPid)) {
          try {
            process.kill(launcherPid, 'SIGKILL');
          } catch {}
        }
      }
      if (qemuPid && alive(qemuPid)) {
        try {
          process.kill(qemuPid, 'SIGKILL');
        } catch {}
      }
      try {
        if (lstatSync(`/var/run/xen/qmp-libxenstat-${domid}`).isSymbolicLink())
          rmSync(`/var/run/xen/qmp-libxenstat-${domid}`);
      } catch {}
      rmSync(STATE, { recursive: true, force: true });
    }
  });
}
