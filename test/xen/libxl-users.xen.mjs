// The passwd entries libxl itself wants (docs/operations.md): with the shim `xen-depriv-dm` as
// `device_model_override` and no `xen-qemuuser-range-base` / `xen-qemuuser-shared` in dom0's
// /etc/passwd (and no `device_model_user`),
// (a) `dm_restrict = 1`: libxl refuses the domain before it spawns anything
//     (libxl__domain_get_device_model_uid: "Could not find user xen-qemuuser-shared or range
//     base pseudo-user xen-qemuuser-range-base, cannot restrict"); nothing of ours is left;
// (b) `dm_restrict = 0`: libxl needs no user, passes a path-based QMP socket
//     (`-chardev socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-N,...`, no pre-opened fd, no
//     `-S`) and waits for `device-model/N/state` = "running" in xenstore; the service runs QEMU
//     confined all the same (never root, `check` passes), libxl reaches its QMP socket through
//     the service's symlink, and `xl destroy` (SIGHUP to the shim: no device-model-kill-uid)
//     leaves nothing. Guests are created paused (`xl create -p`): no guest boot.
// dom0 is an initramfs, so the passwd edit dies with the boot; it is restored anyway.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
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
import { pidsOfUid, readOr, until } from './helpers.mjs';

const NAME = 'hvmusers';
const DIR = '/run/xen-deprivd-users-test';
const STATE = `${DIR}/state`;
const SOCKET = `${DIR}/deprivd.sock`;
const POOL_FIRST = 3_250_000;
const POOL = `${POOL_FIRST}:16`;
const LIBXL_REFUSAL =
  'Could not find user xen-qemuuser-shared or range base pseudo-user xen-qemuuser-range-base, cannot restrict';

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

/** The lab's HVM guest with the shim, `dm_restrict` set to `restrict`. */
const config = (restrict) =>
  xlConfig({ name: NAME, override: SHIM }).replace(
    /^dm_restrict\s*=.*$/m,
    `dm_restrict = ${restrict}`,
  );

/** Pids running the shim (by their exe), zombies aside. */
const shimPids = () =>
  readdirSync('/proc')
    .filter((d) => /^[0-9]+$/.test(d))
    .filter((d) => {
      try {
        return readlinkSync(`/proc/${d}/exe`) === SHIM && running(Number(d));
      } catch {
        return false;
      }
    })
    .map(Number);

/** The first message a QMP server sends on a new connection (its greeting), or throws. */
const qmpGreeting = (path) =>
  new Promise((resolve, reject) => {
    const s = connect(path);
    let buf = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`no QMP greeting on ${path} in 10 s`));
    }, 10_000);
    s.setEncoding('utf8');
    s.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(t);
      s.destroy();
      resolve(JSON.parse(buf.slice(0, nl)));
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });

export default function (test) {
  test('no xen-qemuuser-* users: dm_restrict=1 refused by libxl before the shim runs; dm_restrict=0 runs the shim, QEMU confined (path-based libxl QMP), xl destroy leaves nothing', async () => {
    const t0 = performance.now();
    const passwd = readFileSync('/etc/passwd', 'utf8');
    const cfgRestrict = '/tmp/hvmusers-restrict.cfg';
    const cfgOpen = '/tmp/hvmusers-norestrict.cfg';
    writeFileSync(cfgRestrict, config(1));
    writeFileSync(cfgOpen, config(0));
    rmSync(DIR, { recursive: true, force: true });
    rmSync(`/var/log/xen/qemu-dm-${NAME}.log`, { force: true });
    const env = { ...process.env, XEN_DEPRIVD_SOCKET: SOCKET };
    let service = null;
    let client = null;
    let domid = null;
    let shimPid = null;
    let qemuPid = null;
    let uid = null;
    let refusedStderr = '';
    let createStderr = '';
    const links = () =>
      domid === null
        ? []
        : [`/var/run/xen/qmp-libxenstat-${domid}`, `/var/run/xen/qmp-libxl-${domid}`];
    const diag = () =>
      [
        `xl create stderr: ${createStderr.slice(-3000)}`,
        `qemu-dm log: ${readOr(`/var/log/xen/qemu-dm-${NAME}.log`).slice(-1500)}`,
        `xen-deprivd: ${service?.stderr().slice(-3000) ?? '(not started)'}`,
        domid !== null ? `QEMU log: ${readOr(`${STATE}/dm-${domid}/qemu.log`).slice(-1500)}` : '',
        domid !== null
          ? `device-model/${domid}: ${trySh('xenstore-ls', ['-f', `/local/domain/0/device-model/${domid}`]) ?? '-'}`
          : '',
        `xl list: ${trySh('xl', ['list']) ?? '-'}`,
      ].join('\n');
    try {
      // No passwd entry libxl could use (libxl looks them up with getpwnam/getpwuid).
      writeFileSync(
        '/etc/passwd',
        passwd
          .split('\n')
          .filter((l) => !l.startsWith('xen-qemuuser-'))
          .join('\n'),
      );
      assert.doesNotMatch(readFileSync('/etc/passwd', 'utf8'), /xen-qemuuser-/);

      service = await startDeprivd({ socket: SOCKET, stateDir: STATE, pool: POOL });
      client = await connectDeprivd(SOCKET);

      // (a) dm_restrict = 1: libxl refuses before it spawns the device model.
      const tRefused = performance.now();
      let refusedStatus = 0;
      try {
        sh('xl', ['create', '-p', cfgRestrict], env);
      } catch (e) {
        refusedStatus = e.status;
        refusedStderr = String(e.stderr ?? e.message);
      }
      const refusedMs = performance.now() - tRefused;
      assert.notEqual(refusedStatus, 0, 'xl create -p with dm_restrict=1 and no users must fail');
      const xlLog = readOr(`/var/log/xen/xl-${NAME}.log`);
      assert.ok(
        refusedStderr.includes(LIBXL_REFUSAL) || xlLog.includes(LIBXL_REFUSAL),
        `libxl's refusal in xl's stderr or its log:\n${refusedStderr}\n${xlLog}`,
      );
      const refusalLine = `${refusedStderr}\n${xlLog}`
        .split('\n')
        .find((l) => l.includes(LIBXL_REFUSAL));
      assert.equal(trySh('xl', ['domid', NAME]), null, 'no domain left');
      assert.deepEqual((await client.call('list')).dms, [], 'the service launched nothing');
      assert.deepEqual(shimPids(), [], 'no shim runs');
      assert.deepEqual(pidsOfUid(POOL_FIRST), [], 'no process of the pool');
      const leftA = leftovers({ stateDir: STATE, domid: -1, uid: null });
      assert.deepEqual(leftA, [], 'nothing left after the refusal');
      assert.equal(readOr(`/var/log/xen/qemu-dm-${NAME}.log`), '', 'libxl spawned no DM');

      // (b) dm_restrict = 0, users still absent: the shim runs, the service launches QEMU.
      const tCreate = performance.now();
      try {
        sh('xl', ['create', '-p', cfgOpen], env);
      } catch (e) {
        createStderr = String(e.stderr ?? e.message);
        throw new Error(
          `xl create -p with dm_restrict=0 failed after ${s1(performance.now() - tCreate)} s\n${diag()}`,
        );
      }
      const createMs = performance.now() - tCreate;
      domid = Number(sh('xl', ['domid', NAME]).trim());
      shimPid = Number(sh('xenstore-read', [`/local/domain/${domid}/image/device-model-pid`]));
      assert.equal(readlinkSync(`/proc/${shimPid}/exe`), SHIM, 'libxl spawned the shim');
      // libxl kills no uid of its own: it found none.
      assert.equal(
        trySh('xenstore-read', [`/local/domain/${domid}/image/device-model-kill-uid`]),
        null,
        'no device-model-kill-uid',
      );

      const { dms } = await client.call('list');
      assert.equal(dms.length, 1, JSON.stringify(dms));
      const dm = dms[0];
      assert.equal(dm.domid, domid);
      assert.equal(dm.kind, 'libxl');
      assert.equal(dm.state, 'running');
      qemuPid = dm.pid;
      uid = dm.uid;
      assert.ok(uid >= POOL_FIRST && uid < POOL_FIRST + 16, `uid ${uid} from the pool`);

      // Never root: the leased uid ×4, no capabilities, no-new-privs, seccomp.
      const procStatus = readFileSync(`/proc/${qemuPid}/status`, 'utf8');
      assert.match(procStatus, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(procStatus, new RegExp(`^Gid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(procStatus, /^CapEff:\t0000000000000000$/m);
      assert.match(procStatus, /^CapPrm:\t0000000000000000$/m);
      assert.match(procStatus, /^NoNewPrivs:\t1$/m);
      assert.match(procStatus, /^Seccomp:\t2$/m);

      // libxl's path-based QMP: no pre-opened fd, the socket created in the DM's /run, and a
      // symlink at libxl's path. xl create returned, so libxl's query-chardev went through it;
      // a QMP greeting on the symlink shows it from here too (libxl has closed its connection).
      const cmdline = readOr(`/proc/${qemuPid}/cmdline`).split('\0');
      const libxlCmd = cmdline.find((a) => a.startsWith('socket,id=libxl-cmd,'));
      assert.equal(libxlCmd, `socket,id=libxl-cmd,path=/run/qmp-libxl-${domid},server=on,wait=off`);
      assert.ok(!cmdline.includes('-S'), 'no -S: libxl waits for the xenstore state');
      const qmpLink = `/var/run/xen/qmp-libxl-${domid}`;
      assert.ok(lstatSync(qmpLink).isSymbolicLink(), `${qmpLink} is a symlink`);
      assert.ok(statSync(qmpLink).isSocket(), `${qmpLink} names a socket`);
      const greeting = await qmpGreeting(qmpLink);
      assert.ok(greeting.QMP?.version?.qemu, JSON.stringify(greeting));
      const dmState = trySh('xenstore-read', [`/local/domain/0/device-model/${domid}/state`]);

      const check = await client.call('check', { domid });
      const failed = check.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.actual}`);
      assert.deepEqual(failed, [], `xen-deprivd check failed:\n${failed.join('\n')}`);
      assert.ok(check.ok);

      // xl destroy: no kill-uid, so libxl sends SIGHUP to the shim, which sends `destroy`.
      await client.call('watch', { domid });
      const tDestroy = performance.now();
      sh('xl', ['destroy', NAME]);
      const exited = await until('the service to tell the end of the DM', 30_000, () =>
        client.notifications.find((n) => n.method === 'exited' && n.params.domid === domid),
      );
      await until('the shim to exit', 15_000, () => !running(shimPid));
      const teardownMs = performance.now() - tDestroy;
      assert.deepEqual(exited.params.errors, [], 'teardown errors');
      assert.ok(!running(qemuPid), 'QEMU gone');
      assert.deepEqual((await client.call('list')).dms, []);
      assert.deepEqual(unplanned(proxyRefusals(STATE, domid), domid), [], 'unplanned refusals');
      const left = leftovers({ stateDir: STATE, domid, uid, links: links(), xenstore: true });
      assert.deepEqual(left, [], 'nothing left after xl destroy');
      return {
        refusedS: s1(refusedMs),
        refusal: refusalLine?.trim() ?? null,
        refusalOn: refusedStderr.includes(LIBXL_REFUSAL) ? 'xl stderr' : 'xl log',
        domid,
        uid,
        xlCreatePausedS: s1(createMs),
        dmState,
        libxlCmd,
        checks: `${check.passed}/${check.checks.length}`,
        exitReason: exited.params.reason,
        teardownS: s1(teardownMs),
        totalS: s1(performance.now() - t0),
      };
    } catch (e) {
      if (e instanceof assert.AssertionError) e.message += `\n${diag()}`;
      throw e;
    } finally {
      client?.close();
      if (trySh('xl', ['domid', NAME]) !== null) trySh('xl', ['destroy', NAME]);
      await service?.stop();
      await cleanup({ qemuPid, uid, links: links(), dirs: [DIR] });
      writeFileSync('/etc/passwd', passwd);
    }
  });
}
