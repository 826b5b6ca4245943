// xen-deprivd SIGKILLed (a crash, the OOM killer) while a guest's device model runs under it:
// QEMU and the libxl shim `xen-depriv-dm` outlive it. Started again on the same state dir and
// socket, the service adopts the DM (`list` says adopted, same pid and uid, `check` passes), the
// shim reconnects and sends `watch`, and `xl destroy` still tears everything down: libxl kills
// QEMU by its uid, the new service sees it end (pidfd), cleans up, tells the shim, which exits;
// nothing is left. Then a second guest is destroyed by libxl's other path: without
// device-model-kill-uid libxl sends SIGHUP to the shim, which sends `destroy`. The guests are
// created paused (`xl create -p`): libxl still runs the shim, the QMP handshake and its
// destroy, and no guest boot eats the lab's time.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readlinkSync, rmSync, writeFileSync } from 'node:fs';
import {
  cleanup,
  connectDeprivd,
  leftovers,
  proxyRefusals,
  running,
  SHIM,
  startDeprivd,
  unplanned,
  xlConfig,
} from './deprivd.mjs';
import { readOr, sleep, until } from './helpers.mjs';

const NAME = 'hvmfault';
const DIR = '/run/xen-deprivd-fault-test';
const STATE = `${DIR}/state`;
const SOCKET = `${DIR}/deprivd.sock`;
const POOL = '3240000:16';

const sh = (cmd, args, env) =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: 'pipe', ...(env ? { env } : {}) });
const trySh = (cmd, args) => {
  try {
    return sh(cmd, args);
  } catch {
    return null;
  }
};
const s1 = (ms) => Math.round(ms / 100) / 10;

export default function (test) {
  test('xen-deprivd SIGKILLed under a running libxl DM, started again: adopts it, the shim watches again, xl destroy leaves nothing; destroy by pid (SIGHUP to the shim) too', async () => {
    const t0 = performance.now();
    const cfg = '/tmp/hvmfault.cfg';
    writeFileSync(cfg, xlConfig({ name: NAME, override: SHIM }));
    rmSync(DIR, { recursive: true, force: true });
    const env = { ...process.env, XEN_DEPRIVD_SOCKET: SOCKET };
    let first = null;
    let second = null;
    let client = null;
    let domid = null;
    let shimPid = null;
    let qemuPid = null;
    let uid = null;
    // The second guest, destroyed by libxl's other path (SIGHUP to the shim).
    let hup = null;
    const links = () => (domid === null ? [] : [`/var/run/xen/qmp-libxenstat-${domid}`]);
    const diag = () =>
      [
        `qemu-dm log: ${readOr(`/var/log/xen/qemu-dm-${NAME}.log`).slice(-1500)}`,
        `first xen-deprivd: ${first?.stderr().slice(-2000) ?? '(not started)'}`,
        `second xen-deprivd: ${second?.stderr().slice(-2000) ?? '(not started)'}`,
        domid !== null ? `QEMU log: ${readOr(`${STATE}/dm-${domid}/qemu.log`).slice(-1000)}` : '',
      ].join('\n');
    try {
      first = await startDeprivd({ socket: SOCKET, stateDir: STATE, pool: POOL });
      const tCreate = performance.now();
      try {
        sh('xl', ['create', '-p', cfg], env);
      } catch (e) {
        throw new Error(`xl create -p failed: ${e.stderr ?? e.message}\n${diag()}`);
      }
      const createMs = performance.now() - tCreate;
      domid = Number(sh('xl', ['domid', NAME]).trim());
      shimPid = Number(sh('xenstore-read', [`/local/domain/${domid}/image/device-model-pid`]));
      assert.equal(readlinkSync(`/proc/${shimPid}/exe`), SHIM);
      client = await connectDeprivd(SOCKET);
      const [before] = (await client.call('list')).dms;
      assert.equal(before?.domid, domid);
      assert.equal(before.state, 'running');
      assert.equal(before.adopted, false);
      qemuPid = before.pid;
      uid = before.uid;
      client.close();
      client = null;

      // The crash: SIGKILL to the service's pid only.
      const killed = await first.kill();
      assert.equal(killed.signal, 'SIGKILL');
      await sleep(1500);
      assert.ok(running(qemuPid), 'QEMU outlived the service');
      assert.ok(running(shimPid), 'the shim outlived the service (it reconnects)');
      assert.match(
        readOr(`/proc/${qemuPid}/status`),
        new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'),
      );

      // Started again: recovery at start adopts the DM.
      const tRestart = performance.now();
      second = await startDeprivd({ socket: SOCKET, stateDir: STATE, pool: POOL });
      const restartMs = performance.now() - tRestart;
      assert.deepEqual(second.recovered?.adopted, [domid], JSON.stringify(second.recovered));
      assert.deepEqual(second.recovered.errors, []);
      client = await connectDeprivd(SOCKET);
      const { dms } = await client.call('list');
      assert.equal(dms.length, 1, JSON.stringify(dms));
      assert.equal(dms[0].domid, domid);
      assert.equal(dms[0].pid, qemuPid);
      assert.equal(dms[0].uid, uid);
      assert.equal(dms[0].state, 'running');
      assert.equal(dms[0].adopted, true);
      assert.equal(dms[0].kind, 'libxl');
      const check = await client.call('check', { domid });
      const failed = check.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.actual}`);
      assert.deepEqual(failed, [], `check of the adopted DM:\n${failed.join('\n')}`);

      // The shim reconnects within a second or so and sends `watch`: it is the second client
      // (this test holds one connection), and stays alive (a refused watch would end it).
      const tWatch = performance.now();
      await until(
        'the shim to reconnect',
        20_000,
        async () => (await client.call('status')).clients >= 2,
      );
      const reconnectMs = performance.now() - tWatch;
      await sleep(1000);
      assert.ok(running(shimPid), 'the shim waits on its watch');
      assert.equal((await client.call('status')).clients, 2);

      // xl destroy: libxl kills QEMU by the uid; the adopted DM's pidfd turns readable.
      await client.call('watch', { domid });
      const tDestroy = performance.now();
      sh('xl', ['destroy', NAME]);
      const exited = await until('the service to tell the end of the DM', 30_000, () =>
        client.notifications.find((n) => n.method === 'exited' && n.params.domid === domid),
      );
      await until('the shim to exit', 15_000, () => !running(shimPid));
      const teardownMs = performance.now() - tDestroy;
      assert.deepEqual(exited.params.errors, [], 'teardown errors');
      assert.equal(exited.params.reason, 'qemu exited');
      assert.deepEqual((await client.call('list')).dms, []);
      const refused = proxyRefusals(STATE, domid);
      assert.deepEqual(unplanned(refused, domid), [], 'proxy refusals outside the catalogue plan');
      const left = leftovers({ stateDir: STATE, domid, uid, links: links(), xenstore: true });
      assert.deepEqual(left, [], 'nothing left after xl destroy');

      // libxl's other destroy: with no device-model-kill-uid it sends SIGHUP to the pid it
      // spawned, the shim, which sends `destroy`; the service takes QEMU down.
      const tHup = performance.now();
      try {
        sh('xl', ['create', '-p', cfg], env);
      } catch (e) {
        throw new Error(`second xl create -p failed: ${e.stderr ?? e.message}\n${diag()}`);
      }
      const createWarmMs = performance.now() - tHup;
      hup = { domid: Number(sh('xl', ['domid', NAME]).trim()) };
      hup.shimPid = Number(
        sh('xenstore-read', [`/local/domain/${hup.domid}/image/device-model-pid`]),
      );
      const [dm2] = (await client.call('list')).dms;
      assert.equal(dm2?.domid, hup.domid);
      hup.qemuPid = dm2.pid;
      hup.uid = dm2.uid;
      await client.call('watch', { domid: hup.domid });
      sh('xenstore-rm', [`/local/domain/${hup.domid}/image/device-model-kill-uid`]);
      const tHupDestroy = performance.now();
      sh('xl', ['destroy', NAME]);
      const exited2 = await until('the end of the second DM', 30_000, () =>
        client.notifications.find((n) => n.method === 'exited' && n.params.domid === hup.domid),
      );
      await until('the second shim to exit', 15_000, () => !running(hup.shimPid));
      const hupTeardownMs = performance.now() - tHupDestroy;
      assert.equal(exited2.params.reason, 'destroyed', "torn down by the shim's destroy");
      assert.deepEqual(exited2.params.errors, []);
      assert.ok(!running(hup.qemuPid), 'QEMU gone');
      assert.deepEqual((await client.call('list')).dms, []);
      const hupLinks = [`/var/run/xen/qmp-libxenstat-${hup.domid}`];
      const left2 = leftovers({ ...hup, stateDir: STATE, links: hupLinks, xenstore: true });
      assert.deepEqual(left2, [], 'nothing left after the destroy by pid');
      return {
        domid,
        uid,
        xlCreatePausedS: s1(createMs),
        serviceStartS: first.startS,
        serviceRestartS: s1(restartMs),
        shimReconnectS: s1(reconnectMs),
        teardownS: s1(teardownMs),
        xlCreatePausedWarmS: s1(createWarmMs),
        byPidTeardownS: s1(hupTeardownMs),
        checks: `${check.passed}/${check.checks.length}`,
        totalS: s1(performance.now() - t0),
      };
    } catch (e) {
      if (e instanceof assert.AssertionError) e.message += `\n${diag()}`;
      throw e;
    } finally {
      client?.close();
      if (trySh('xl', ['domid', NAME]) !== null) trySh('xl', ['destroy', NAME]);
      if (shimPid && running(shimPid)) await sleep(3000);
      await first?.stop();
      await second?.stop();
      if (hup) {
        await cleanup({
          qemuPid: hup.qemuPid ?? null,
          uid: hup.uid ?? null,
          links: [`/var/run/xen/qmp-libxenstat-${hup.domid}`],
        });
      }
      await cleanup({ qemuPid, uid, links: links(), dirs: [DIR] });
    }
  });
}
