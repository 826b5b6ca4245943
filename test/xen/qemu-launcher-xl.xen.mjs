// `xl create` of a real HVM guest whose device_model_override is the project's libxl shim
// (apps/depriv-launcher's C `xen-depriv-dm`) with the resident service `xen-deprivd` running in
// dom0: libxl execs the shim as root with QEMU's full argv; the shim hands it (and libxl's
// pre-opened QMP listener, taken with pidfd_getfd) to the service, which runs Xen's QEMU in jail
// mode (leased uid, private root, no-new-privs, seccomp) behind a restricting xenstore proxy.
// The guest must reach userspace, QEMU must never be root, the service's confinement check must
// pass, and `xl destroy` must leave nothing. In the same run, `xl create`'s return time with the
// shim is compared with libxl's own `dm_restrict` QEMU.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { verifyConfinement } from '@xen-depriv/qemu-launcher';
import {
  cleanup,
  connectDeprivd,
  cpuSeconds,
  leftovers,
  proxyForwarded,
  proxyRefusals,
  readJson,
  rssKiB,
  running,
  SHIM,
  startDeprivd,
  startedAt,
  unplanned,
  uptime,
  xlConfig,
} from './deprivd.mjs';
import { readOr, sleep, until as untilEvery } from './helpers.mjs';

const NAME = 'hvmxl';
const DIR = '/run/xen-deprivd-xl-test';
const STATE = `${DIR}/state`;
const SOCKET = `${DIR}/deprivd.sock`;
const POOL_FIRST = 3_220_000;
const POOL_COUNT = 1000;
const STARTUP_TRACE = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'reports',
  'xs-proxy-qemu-startup.jsonl',
);
const now = () => performance.now() / 1000;
const round = (x) => Math.round(x * 10) / 10;
// The guest boots for minutes under TCG: poll twice a second.
const until = (what, ms, fn) => untilEvery(what, ms, fn, 500);

const sh = (cmd, args, env) =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: 'pipe', ...(env ? { env } : {}) });
const trySh = (cmd, args) => {
  try {
    return sh(cmd, args);
  } catch {
    return null;
  }
};

/** `xl create CFG`'s wall time in seconds (throws with xl's stderr). */
function timedCreate(cfg, env, diag) {
  const t0 = now();
  try {
    sh('xl', ['create', cfg], env);
  } catch (e) {
    throw new Error(`xl create ${cfg} failed: ${e.stderr ?? e.message}\n${diag()}`);
  }
  return now() - t0;
}

export default function (test) {
  test('xl create: HVM guest with the xen-depriv-dm shim and xen-deprivd in dom0, jail mode + xenstore proxy, reaches userspace, torn down; xl create time vs libxl dm_restrict', async () => {
    const vga = process.env.XEN_TEST_HVM_VGA ?? 'none';
    const cfg = '/tmp/hvmxl.cfg';
    const cfgLibxl = '/tmp/hvmxl-libxl.cfg';
    writeFileSync(cfg, xlConfig({ name: NAME, override: SHIM, vga }));
    writeFileSync(cfgLibxl, xlConfig({ name: `${NAME}-libxl`, vga }));
    rmSync(DIR, { recursive: true, force: true });
    rmSync(`/var/log/xen/console/guest-${NAME}.log`, { force: true });
    const env = { ...process.env, XEN_DEPRIVD_SOCKET: SOCKET };
    let service = null;
    let client = null;
    let domid = null;
    let shimPid = null;
    let qemuPid = null;
    let uid = null;
    const links = () => (domid === null ? [] : [`/var/run/xen/qmp-libxenstat-${domid}`]);
    const diag = () =>
      [
        `qemu-dm log: ${readOr(`/var/log/xen/qemu-dm-${NAME}.log`).slice(-1500)}`,
        `xen-deprivd: ${service?.stderr().slice(-3000) ?? '(not started)'}`,
        domid !== null ? `QEMU log: ${readOr(`${STATE}/dm-${domid}/qemu.log`).slice(-1500)}` : '',
        `guest console: ${readOr(`/var/log/xen/console/guest-${NAME}.log`).slice(-800)}`,
        // How far the guest got: its vCPU time (xl list), QEMU's CPU, the proxy's refusals.
        `xl list: ${trySh('xl', ['list']) ?? '-'}`,
        qemuPid ? `QEMU cpu ${cpuSeconds(qemuPid)} s, running ${running(qemuPid)}` : '',
        domid !== null
          ? `refused: ${JSON.stringify(proxyRefusals(STATE, domid)).slice(0, 1500)}`
          : '',
      ].join('\n');
    try {
      // The shim is a dynamically linked C program built on the host: it must run in dom0.
      const noService = (() => {
        try {
          sh(SHIM, ['-xen-domid', '1'], { ...process.env, XEN_DEPRIVD_SOCKET: `${DIR}/none.sock` });
          return 'exit 0';
        } catch (e) {
          return `${e.status} ${String(e.stderr).trim()}`;
        }
      })();
      assert.match(noService, /^1 xen-depriv-dm: cannot reach xen-deprivd at /, 'the shim in dom0');

      service = await startDeprivd({
        socket: SOCKET,
        stateDir: STATE,
        pool: `${POOL_FIRST}:${POOL_COUNT}`,
        logLevel: 'debug',
      });
      client = await connectDeprivd(SOCKET);
      const status = await client.call('status');
      assert.equal(status.target, 'dom0');

      // The service probes Xen's QEMU once per binary (cached on disk): a `plan` of a libxl argv
      // does it, so the timed `xl create` below is the steady state of a host whose service has
      // launched before (the probe's cost is reported apart).
      const tProbe = now();
      const planned = await client.call('plan', {
        libxlArgv: ['-xen-domid', '32000', '-machine', 'xenfv', '-m', '128', '-S'],
      });
      const probeS = round(now() - tProbe);
      assert.equal(planned.plan.domid, 32000);

      // libxl's own dm_restrict QEMU (root-started, -runas/-chroot), same guest, same boot.
      // Each run's time is split at the processes' start times (uptime clock): libxl's work
      // before it spawns the device model, then (shim) the service's work up to QEMU's
      // fork, then QEMU's start-up and the QMP handshakes up to `xl create`'s return.
      const upLibxl = uptime();
      const libxlCreateS = timedCreate(cfgLibxl, process.env, diag);
      const libxlDomid = sh('xl', ['domid', `${NAME}-libxl`]).trim();
      const libxlQemu = Number(
        sh('xenstore-read', [`/local/domain/${libxlDomid}/image/device-model-pid`]),
      );
      const libxlSpawnS = startedAt(libxlQemu) - upLibxl;
      sh('xl', ['destroy', `${NAME}-libxl`]);

      const tCreate = now();
      const upShim = uptime();
      const createS = timedCreate(cfg, env, diag);
      domid = Number(sh('xl', ['domid', NAME]).trim());
      // Xen's QEMU's xenstore requests from its start to `xl create`'s return, through the
      // privileged proxy: bench/xenstore-proxy replays them (`--sequence`).
      const startup = proxyForwarded(STATE, domid);
      assert.ok(startup.length > 0, 'the proxy traced the start-up');
      writeFileSync(STARTUP_TRACE, `${startup.join('\n')}\n`);
      // The whole log, refusals included, apart (what came after the start-up too).
      writeFileSync(
        STARTUP_TRACE.replace(/\.jsonl$/, '-all.jsonl'),
        readOr(`${STATE}/xs-proxy/dm-${domid}.log`),
      );
      shimPid = Number(sh('xenstore-read', [`/local/domain/${domid}/image/device-model-pid`]));
      assert.equal(readlinkSync(`/proc/${shimPid}/exe`), SHIM, 'libxl spawned the shim');
      const shimRssKiB = rssKiB(shimPid);

      // The service holds it: running, a libxl launch, a uid from the service's pool.
      const { dms } = await client.call('list');
      assert.equal(dms.length, 1, JSON.stringify(dms));
      const dm = dms[0];
      assert.equal(dm.domid, domid);
      assert.equal(dm.kind, 'libxl');
      assert.equal(dm.state, 'running');
      assert.equal(dm.adopted, false);
      qemuPid = dm.pid;
      uid = dm.uid;
      const split = {
        libxl: {
          beforeQemuS: round(libxlSpawnS),
          qemuToReturnS: round(libxlCreateS - libxlSpawnS),
        },
        shim: {
          beforeShimS: round(startedAt(shimPid) - upShim),
          serviceBeforeQemuS: round(startedAt(qemuPid) - startedAt(shimPid)),
          qemuToReturnS: round(createS - (startedAt(qemuPid) - upShim)),
        },
      };
      assert.ok(uid >= POOL_FIRST && uid < POOL_FIRST + POOL_COUNT, `uid ${uid} from the pool`);
      assert.equal(
        sh('xenstore-read', [`/local/domain/${domid}/image/device-model-kill-uid`]).trim(),
        String(uid),
        'libxl kills the DM by the leased uid',
      );

      // QEMU never root: it was exec'd as the uid (spawnConfined), and is now.
      const procStatus = readFileSync(`/proc/${qemuPid}/status`, 'utf8');
      assert.match(procStatus, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(procStatus, new RegExp(`^Gid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(procStatus, /^CapEff:\t0000000000000000$/m);
      assert.match(procStatus, /^CapPrm:\t0000000000000000$/m);
      assert.match(procStatus, /^NoNewPrivs:\t1$/m);
      assert.match(procStatus, /^Seccomp:\t2$/m);
      // (Seen from dom0, through its private root when that is a chroot.)
      assert.ok(
        readlinkSync(`/proc/${qemuPid}/exe`).endsWith('/usr/libexec/xen-qemu-system-i386'),
        "Xen's QEMU",
      );

      // libxl's pre-opened QMP listener is QEMU's fd 4, as planned.
      const record = readJson(`${STATE}/state/dm-${domid}.json`);
      assert.equal(record?.phase, 'running');
      const fd4 = record.plan.fds.find((f) => f.target === 4);
      assert.equal(fd4?.source, 'passed:libxl-qmp', JSON.stringify(record.plan.fds));
      assert.match(readlinkSync(`/proc/${qemuPid}/fd/4`), /^socket:\[\d+\]$/);

      // The confinement report: the service's `check` and an independent one from here.
      const check = await client.call('check', { domid });
      const checkFailed = check.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.actual}`);
      assert.deepEqual(checkFailed, [], `xen-deprivd check failed:\n${checkFailed.join('\n')}`);
      assert.ok(check.ok);
      // The sockets the plan declares: QMP, the proxy, libxenstat's and the serial line's.
      const report = verifyConfinement(qemuPid, record.plan, { expectedRoot: record.root });
      const failed = report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.actual}`);
      assert.deepEqual(failed, [], `verifyConfinement failed:\n${failed.join('\n')}`);
      const keys = trySh('xenstore-ls', [`/local/domain/0/device-model/${domid}`]) ?? '';

      // The guest's userspace marker on its console.
      const log = `/var/log/xen/console/guest-${NAME}.log`;
      try {
        await until('the guest userspace marker', 240_000, () => {
          if (!running(qemuPid)) throw new Error('QEMU died before the guest reached userspace');
          return readOr(log).includes('GUEST:');
        });
      } catch (e) {
        throw new Error(`${e.message}\n${diag()}`);
      }
      const tGuest = now();
      const forwardedAtUserspace = proxyForwarded(STATE, domid).length;
      const refused = proxyRefusals(STATE, domid);
      assert.deepEqual(unplanned(refused, domid), [], 'proxy refusals outside the catalogue plan');
      const cpu = {
        shimS: cpuSeconds(shimPid),
        serviceS: cpuSeconds(service.pid),
        qemuS: cpuSeconds(qemuPid),
      };
      const serviceRssKiB = rssKiB(service.pid);

      // xl destroy: libxl kills the DM by the uid the service wrote into
      // device-model-kill-uid; the service sees QEMU exit (pidfd), tears down the rest and tells
      // the shim (`exited`), which exits. A `watch` of our own hears the same notification.
      await client.call('watch', { domid });
      const tDestroy = now();
      sh('xl', ['destroy', NAME]);
      const exited = await until('the service to tell the end of the DM', 30_000, () =>
        client.notifications.find((n) => n.method === 'exited' && n.params.domid === domid),
      );
      await until('the shim to exit', 15_000, () => !running(shimPid));
      const tGone = now();
      assert.deepEqual(exited.params.errors, [], 'teardown errors');
      assert.deepEqual((await client.call('list')).dms, [], 'the service holds no DM');
      const left = leftovers({ stateDir: STATE, domid, uid, links: links(), xenstore: true });
      assert.deepEqual(left, [], 'nothing left after xl destroy');
      return {
        domid,
        uid,
        vga,
        xlCreateShimS: round(createS),
        xlCreateLibxlS: round(libxlCreateS),
        ratio: Math.round((createS / libxlCreateS) * 100) / 100,
        split,
        probeS,
        serviceStartS: service.startS,
        guestUserspaceS: round(tGuest - tCreate),
        teardownS: round(tGone - tDestroy),
        teardownWhy: exited.params.reason,
        checks: `${check.passed}/${check.checks.length}`,
        verifyConfinement: `${report.checks.filter((c) => c.ok).length}/${report.checks.length}`,
        cpu,
        shimRssKiB,
        serviceRssKiB,
        deviceModelKeys: keys.trim().split('\n').filter(Boolean).length,
        refused: refused.length,
        xsForwarded: { atCreate: startup.length, atUserspace: forwardedAtUserspace },
      };
    } finally {
      client?.close();
      for (const n of [NAME, `${NAME}-libxl`]) {
        if (trySh('xl', ['domid', n]) !== null) trySh('xl', ['destroy', n]);
      }
      // The shim exits on the service's `exited` (or, the service gone, a failed watch).
      if (shimPid && running(shimPid)) await sleep(3000);
      await service?.stop();
      await cleanup({ qemuPid, uid, links: links(), dirs: [DIR] });
    }
  });
}
