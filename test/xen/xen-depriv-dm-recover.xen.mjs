// xen-depriv-dm SIGKILLed (a crash, the OOM killer): its QEMU outlives it, and nothing tears
// down the lease, jail, launch record, proxy socket or QMP symlink. `xen-depriv recover
// --state-dir` must keep all of it while QEMU runs, and remove all of it once QEMU is gone.
// No guest boot: the DM is started directly with a minimal libxl-shaped argv against a paused
// `dmop-test mkhvm` domain (as qemu-launcher.xen.mjs does with the library). Each `xen-depriv
// recover` is a Node start of the CLI, ~10 s under the lab's TCG; hence two, not more.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidsOfUid, readOr, until } from './helpers.mjs';
import { makeHvm } from './privcmd-filter.xen.mjs';

const repo = join(import.meta.dirname, '..', '..');
const DM = join(repo, 'apps', 'depriv-launcher', 'dist', 'dm.js');
const CLI = join(repo, 'apps', 'depriv-launcher', 'dist', 'cli.js');
const STATE = '/run/xen-depriv-dm-recover-test';
const POOL_FIRST = 3_240_000;
const POOL_COUNT = 16;

const exists = (path) => {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
};
const ls = (dir) => (existsSync(dir) ? readdirSync(dir).sort() : []);

const recoverMs = [];
function recover() {
  const t = performance.now();
  const out = execFileSync(process.execPath, [CLI, '--json', 'recover', '--state-dir', STATE], {
    encoding: 'utf8',
    stdio: 'pipe',
  });
  recoverMs.push(Math.round(performance.now() - t));
  return JSON.parse(out);
}

export default function (test) {
  test('xen-depriv-dm SIGKILLed: recover keeps the running QEMU, then finishes the teardown once it is gone', async () => {
    const t0 = performance.now();
    const domid = makeHvm();
    const logDir = mkdtempSync(join(tmpdir(), 'dm-recover-log-'));
    const qmpLink = `/var/run/xen/qmp-libxenstat-${domid}`;
    const proxySocket = `${STATE}/xs-proxy/dm-${domid}.sock`;
    const recordPath = `${STATE}/state/dm-${domid}.json`;
    rmSync(STATE, { recursive: true, force: true });
    let launcher = null;
    let qemuPid = null;
    let uid = null;
    const diag = () =>
      [
        `dm log: ${readOr(join(logDir, `xen-depriv-dm-${domid}.log`)).slice(-2500)}`,
        `QEMU log: ${readOr(`${STATE}/dm-${domid}/qemu.log`).slice(-1500)}`,
      ].join('\n');
    try {
      // The DM watches /local/domain/N/domid (gone: the domain was destroyed); dmop-test's
      // domain has no xenstore entries of its own.
      execFileSync('xenstore-write', [`/local/domain/${domid}/domid`, String(domid)]);
      // What libxl passes, cut to what a paused domain without devices needs.
      const argv = [
        '-xen-domid',
        String(domid),
        '-chardev',
        `socket,id=libxenstat-cmd,path=${qmpLink},server=on,wait=off`,
        '-mon',
        'chardev=libxenstat-cmd,mode=control',
        '-nodefaults',
        '-no-user-config',
        '-name',
        'dmrecover',
        '-xen-attach',
        '-m',
        '16',
        '-S',
        '-xen-domid-restrict',
      ];
      let stderr = '';
      launcher = spawn(process.execPath, [DM, ...argv], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: {
          ...process.env,
          XEN_DEPRIV_DM_STATE_DIR: STATE,
          XEN_DEPRIV_DM_POOL_FIRST: String(POOL_FIRST),
          XEN_DEPRIV_DM_POOL_COUNT: String(POOL_COUNT),
          XEN_DEPRIV_DM_LOG_DIR: logDir,
        },
      });
      launcher.stderr.on('data', (b) => {
        stderr += b;
      });
      const exited = new Promise((r) => launcher.on('exit', (code, signal) => r({ code, signal })));
      const running = await until('xen-depriv-dm running', 60_000, () => {
        if (launcher.exitCode !== null) {
          throw new Error(`xen-depriv-dm exited ${launcher.exitCode}: ${stderr}\n${diag()}`);
        }
        return readOr(join(logDir, `xen-depriv-dm-${domid}.log`)).includes('"event":"running"');
      });
      assert.ok(running);
      const record = JSON.parse(readFileSync(recordPath, 'utf8'));
      qemuPid = record.pid;
      uid = record.plan.uid;
      assert.ok(uid >= POOL_FIRST && uid < POOL_FIRST + POOL_COUNT, `uid ${uid} from the pool`);
      const saved = JSON.parse(readFileSync(`${STATE}/xen-depriv.json`, 'utf8'));
      assert.deepEqual(saved.user, { scheme: 'pool', first: POOL_FIRST, count: POOL_COUNT });
      assert.ok(lstatSync(qmpLink).isSymbolicLink(), 'the QMP symlink');
      assert.ok(lstatSync(proxySocket).isSocket(), 'the proxy socket');
      const tRunning = performance.now();

      // The crash: SIGKILL to the launcher's pid only. QEMU (its own session) survives.
      launcher.kill('SIGKILL');
      assert.equal((await exited).signal, 'SIGKILL');
      assert.ok(existsSync(`/proc/${qemuPid}`), 'QEMU outlived its launcher');

      // recover while QEMU runs: nothing of domain N is touched.
      const first = recover();
      assert.deepEqual(first.running, [{ domid, pid: qemuPid }]);
      assert.deepEqual(first.finished, []);
      assert.deepEqual(first.dmLeftoversRemoved, []);
      assert.deepEqual(first.leasesReclaimed, []);
      assert.ok(first.ok, JSON.stringify(first));
      assert.ok(exists(qmpLink) && exists(proxySocket) && existsSync(recordPath), 'kept');
      assert.equal(ls(`${STATE}/leases`).length, 1, 'the lease is kept');

      // QEMU ends (libxl's destroy by uid would do this), by its pid, checked to be the DM's.
      assert.match(
        readOr(`/proc/${qemuPid}/status`),
        new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'),
      );
      const tKill = performance.now();
      process.kill(qemuPid, 'SIGKILL');
      await until('QEMU gone', 10_000, () => !existsSync(`/proc/${qemuPid}`));
      const qemuGoneMs = Math.round(performance.now() - tKill);

      const second = recover();
      assert.ok(second.ok, JSON.stringify(second));
      assert.deepEqual(second.finished, [domid]);
      assert.deepEqual(second.running, []);
      assert.deepEqual([...second.dmLeftoversRemoved].sort(), [proxySocket, qmpLink].sort());

      const left = [];
      if (pidsOfUid(uid).length) left.push(`processes of uid ${uid}: ${pidsOfUid(uid)}`);
      if (ls(`${STATE}/leases`).length) left.push(`leases: ${ls(`${STATE}/leases`)}`);
      if (ls(`${STATE}/state`).length) left.push(`records: ${ls(`${STATE}/state`)}`);
      if (existsSync(`${STATE}/dm-${domid}`)) left.push(`jail ${STATE}/dm-${domid}`);
      if (readOr('/proc/mounts').includes(STATE)) left.push('a mount under the state dir');
      if (ls(`${STATE}/xs-proxy`).length) left.push(`xs-proxy: ${ls(`${STATE}/xs-proxy`)}`);
      if (exists(qmpLink)) left.push(qmpLink);
      assert.deepEqual(left, [], 'nothing left after recover');
      const s = (ms) => Math.round(ms / 100) / 10;
      return {
        domid,
        uid,
        dmRunningS: s(tRunning - t0),
        totalS: s(performance.now() - t0),
        qemuGoneMs,
        recoverMs,
        removedBySecondRecover: second.dmLeftoversRemoved.length,
      };
    } catch (e) {
      if (e instanceof assert.AssertionError) e.message += `\n${diag()}`;
      throw e;
    } finally {
      if (launcher && launcher.exitCode === null && launcher.signalCode === null) {
        launcher.kill('SIGKILL');
      }
      if (qemuPid && uid !== null && existsSync(`/proc/${qemuPid}`)) {
        if (new RegExp(`^Uid:\\t${uid}\\t`, 'm').test(readOr(`/proc/${qemuPid}/status`))) {
          try {
            process.kill(qemuPid, 'SIGKILL');
          } catch {}
        }
      }
      try {
        if (lstatSync(qmpLink).isSymbolicLink()) rmSync(qmpLink);
      } catch {}
      for (const p of [`/local/domain/0/device-model/${domid}`, `/local/domain/${domid}`]) {
        try {
          execFileSync('xenstore-rm', [p], { stdio: 'pipe' });
        } catch {}
      }
      execFileSync('dmop-test', ['destroy', String(domid)]);
      rmSync(STATE, { recursive: true, force: true });
      rmSync(logDir, { recursive: true, force: true });
    }
  });
}
