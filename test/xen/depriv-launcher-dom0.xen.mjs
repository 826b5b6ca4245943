// The CLI's `xen-depriv launch` with `target: "dom0"` while xen-deprivd runs in dom0
// (XEN_DEPRIVD_SOCKET): the CLI is the service's client, and the service runs Xen's QEMU in jail
// mode as the DM of a paused HVM domain (`dmop-test mkhvm`, no guest boot) behind a restricting
// xenstore proxy. Its QEMU sees only the proxy's socket at the xenstored path: the socket at
// /run/xenstored/socket in its root is the proxy's inode, not the real xenstored's, its
// XENSTORED_PATH points there, and its xenstore requests went through the proxy (its refusals).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CLI,
  cleanup,
  connectDeprivd,
  leftovers,
  proxyRefusals,
  running,
  startDeprivd,
} from './deprivd.mjs';
import { readOr } from './helpers.mjs';
import { makeHvm } from './privcmd-filter.xen.mjs';

const DIR = '/run/xen-deprivd-cli-test';
const STATE = `${DIR}/state`;
const SOCKET = `${DIR}/deprivd.sock`;
const POOL_FIRST = 3_250_000;
const POOL_COUNT = 16;
const s1 = (ms) => Math.round(ms / 100) / 10;

/** `xen-depriv --json ARGS...` through the service; its JSON line, or a thrown error. */
function cli(args) {
  const t = performance.now();
  try {
    const out = execFileSync(process.execPath, [CLI, '--json', ...args], {
      encoding: 'utf8',
      stdio: 'pipe',
      env: { ...process.env, XEN_DEPRIVD_SOCKET: SOCKET },
    });
    return {
      ...JSON.parse(out.trim().split('\n').pop()),
      cliMs: Math.round(performance.now() - t),
    };
  } catch (e) {
    throw new Error(`xen-depriv ${args.join(' ')}: exit ${e.status}: ${e.stderr}${e.stdout}`);
  }
}

const ident = (st) => `dev ${st.dev} ino ${st.ino}`;

export default function (test) {
  test('xen-depriv launch with target dom0 through xen-deprivd: QEMU sees only the proxy at the xenstored path; destroy leaves nothing', async () => {
    const domid = makeHvm();
    const tmp = mkdtempSync(join(tmpdir(), 'cli-dom0-'));
    rmSync(DIR, { recursive: true, force: true });
    let service = null;
    let client = null;
    let qemuPid = null;
    let uid = null;
    const diag = () =>
      [
        `xen-deprivd: ${service?.stderr().slice(-2500) ?? '(not started)'}`,
        `QEMU log: ${readOr(`${STATE}/dm-${domid}/qemu.log`).slice(-1500)}`,
      ].join('\n');
    try {
      // The service watches /local/domain/N/domid (gone: the domain was destroyed);
      // dmop-test's domain has no xenstore entries of its own.
      execFileSync('xenstore-write', [`/local/domain/${domid}/domid`, String(domid)]);
      service = await startDeprivd({
        socket: SOCKET,
        stateDir: STATE,
        pool: `${POOL_FIRST}:${POOL_COUNT}`,
      });
      const config = join(tmp, 'dom0.json');
      writeFileSync(
        config,
        JSON.stringify({
          domid,
          name: 'clidom0',
          target: 'dom0',
          qemu: { args: ['-xen-attach', '-m', '16', '-S'] },
          user: { scheme: 'pool', first: POOL_FIRST, count: POOL_COUNT },
        }),
      );
      const launched = cli(['launch', config]);
      assert.equal(launched.ok, true);
      assert.equal(launched.via, 'service', 'the CLI used the running service');
      qemuPid = launched.pid;
      uid = launched.uid;
      assert.ok(uid >= POOL_FIRST && uid < POOL_FIRST + POOL_COUNT, `uid ${uid} from the pool`);
      assert.equal(launched.xenstoreSocket, `${STATE}/xs-proxy/dm-${domid}.sock`);
      const status = readFileSync(`/proc/${qemuPid}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      assert.match(status, /^CapEff:\t0000000000000000$/m);
      assert.match(status, /^Seccomp:\t2$/m);

      // What QEMU finds at the xenstored path is the proxy's socket, not xenstored's.
      const inJail = statSync(`/proc/${qemuPid}/root/run/xenstored/socket`);
      const proxy = statSync(launched.xenstoreSocket);
      const real = statSync('/run/xenstored/socket');
      assert.ok(inJail.isSocket(), 'a socket at /run/xenstored/socket in its root');
      assert.equal(ident(inJail), ident(proxy), "the proxy's socket");
      assert.notEqual(ident(inJail), ident(real), "not the real xenstored's");
      assert.equal(inJail.uid, uid, "owned by the DM's uid");
      assert.equal(inJail.mode & 0o777, 0o600);
      const environ = readFileSync(`/proc/${qemuPid}/environ`, 'utf8').split('\0');
      const xsPath = environ.filter((e) => e.startsWith('XENSTORED_PATH='));
      assert.deepEqual(xsPath, ['XENSTORED_PATH=/run/xenstored/socket']);
      // The xenstored path does not lead anywhere else in its root either.
      assert.throws(() => statSync(`/proc/${qemuPid}/root/var/run/xenstored/socket`));
      assert.throws(() => statSync(`/proc/${qemuPid}/root/dev/xen/xenbus`));
      // QEMU's xenstore requests went through the proxy: the proxy refused the ones the
      // catalogue plans for (it reads /local/domain/0/domid and mkdirs its backends first).
      const refused = proxyRefusals(STATE, domid);
      assert.ok(refused.length > 0, 'the proxy saw QEMU');

      client = await connectDeprivd(SOCKET);
      const { dms } = await client.call('list');
      assert.deepEqual(
        dms.map((d) => [d.domid, d.pid, d.kind, d.target, d.state]),
        [[domid, qemuPid, 'config', 'dom0', 'running']],
      );
      const check = await client.call('check', { domid });
      const failed = check.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.actual}`);
      assert.deepEqual(failed, [], `check failed:\n${failed.join('\n')}`);
      client.close();
      client = null;

      const destroyed = cli(['destroy', String(domid)]);
      assert.equal(destroyed.via, 'service');
      assert.equal(destroyed.pid, qemuPid);
      assert.ok(!running(qemuPid), 'QEMU gone');
      // /local/domain/0/device-model/N included: the launch made it, the teardown removes it.
      const left = leftovers({ stateDir: STATE, domid, uid, xenstore: true });
      assert.deepEqual(left, [], 'nothing left after destroy');
      return {
        domid,
        uid,
        jailSocket: ident(inJail),
        proxySocket: ident(proxy),
        xenstored: ident(real),
        refused: refused.map(
          (r) => `${r.rule?.replace(/^not-in-allowlist:/, '')} ${r.request?.path}`,
        ),
        checks: `${check.passed}/${check.checks.length}`,
        serviceStartS: service.startS,
        cliLaunchS: s1(launched.cliMs),
        cliDestroyS: s1(destroyed.cliMs),
      };
    } catch (e) {
      if (e instanceof assert.AssertionError) e.message += `\n${diag()}`;
      throw e;
    } finally {
      client?.close();
      await service?.stop();
      await cleanup({ qemuPid, uid, dirs: [DIR, tmp] });
      for (const p of [`/local/domain/0/device-model/${domid}`, `/local/domain/${domid}`]) {
        try {
          execFileSync('xenstore-rm', [p], { stdio: 'pipe' });
        } catch {}
      }
      execFileSync('dmop-test', ['destroy', String(domid)]);
    }
  });
}
