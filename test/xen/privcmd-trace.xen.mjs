// A recording of a real deprivileged Xen QEMU run by the project's launcher: `xl create` of an
// HVM guest with stdvga, booted to userspace, whose device_model_override is the libxl shim
// `xen-depriv-dm`, handing the DM to the service `xen-deprivd` in dom0, which runs QEMU in jail
// mode (leased uid, private root, no-new-privs, its seccomp filter, RLIMIT_FSIZE 256 KiB, an
// empty environment). The QEMU the service runs (its `XEN_DEPRIVD_QEMU`) is a copy of Debian's
// Xen QEMU that loads tools/privcmd-trace itself (patchelf: DT_NEEDED + RUNPATH), installed in
// dom0 beside Debian's as /usr/libexec/xen-qemu-system-i386-traced (QEMU 7.2 finds its ROMs at
// <its directory>/../share/qemu), the recorder in /usr/lib/privcmd-trace: /usr is what the jail
// binds, and no LD_PRELOAD survives the launcher's `env -i`. The recorder (built with that directory as its default destination)
// sends its lines over a unix stream socket there, to a listener in this test: a socket is no
// file, so the DM's 256 KiB RLIMIT_FSIZE does not cut the trace (2.6 MB), and the launcher needs
// no change. The whole trace is audited here with the shipped profile and a context derived
// from this guest's xl config, the shipped device-model seccomp program and the one the
// launcher installed; its condensed form (every distinct request once, in order, with its
// count: tools/privcmd-trace/condense.mjs) goes to
// packages/privcmd-filter/test/vectors/qemu-xen-trace.jsonl, which the unit test
// qemu-trace.test.ts audits again. Needs, built on the host:
//   make -C tools/privcmd-trace OUT=build lab
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import {
  auditTrace,
  deviceModelContext,
  qemuXenHvmProfile,
  xenDeviceModelSeccomp,
} from '@xen-depriv/privcmd-filter';
import {
  AUDIT_ARCH_X86_64,
  runSeccomp,
  SECCOMP_RET,
  X86_64_SYSCALLS,
} from '@xen-depriv/privcmd-filter/seccomp';
import { condense } from '../../tools/privcmd-trace/condense.mjs';
import {
  cleanup,
  connectDeprivd,
  cpuSeconds,
  readJson,
  running,
  SHIM,
  startDeprivd,
  xlConfig,
} from './deprivd.mjs';
import { readOr, sleep, until as untilEvery } from './helpers.mjs';

const here = new URL('.', import.meta.url).pathname;
const repo = join(here, '..', '..');
const BUILT = join(repo, 'tools', 'privcmd-trace', 'build', 'lab');
const OUT = join(repo, 'packages', 'privcmd-filter', 'test', 'vectors', 'qemu-xen-trace.jsonl');
// In dom0, under /usr (bound read-only into the DM's root); the recorder's built-in destination.
const LAB_DIR = '/usr/lib/privcmd-trace';
const QEMU = '/usr/libexec/xen-qemu-system-i386-traced';
const TRACE_SOCKET = `${LAB_DIR}/trace.sock`;
const NAME = 'hvmtrace';
const DIR = '/run/xen-depriv-trace';
const STATE = `${DIR}/state`;
const SOCKET = `${DIR}/deprivd.sock`;
const POOL_FIRST = 3_230_000;
const POOL_COUNT = 1000;
const now = () => performance.now() / 1000;
const round = (x) => Math.round(x * 10) / 10;
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

/** A listener on `path` (any uid may connect) keeping what each connection sends. */
async function traceListener(path) {
  rmSync(path, { force: true });
  const conns = [];
  const server = createServer((c) => {
    const chunks = [];
    conns.push(chunks);
    c.on('data', (d) => chunks.push(d));
    c.on('error', () => {});
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  chmodSync(path, 0o666);
  return {
    conns,
    bytes: () => conns.flat().reduce((n, b) => n + b.length, 0),
    text: () => conns.map((chunks) => Buffer.concat(chunks).toString('utf8')),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        rmSync(path, { force: true });
      }),
  };
}

/** `key = N` of an xl config text, as a number. */
const cfgNumber = (cfg, key) => {
  const m = new RegExp(`^${key}\\s*=\\s*(\\d+)\\s*$`, 'm').exec(cfg);
  assert.ok(m, `no ${key} in the guest's config`);
  return Number(m[1]);
};

/** The seccomp verdict of `program` on the ioctl of trace record `r`. */
const ioctlVerdict = (program, r) =>
  runSeccomp(program, {
    nr: X86_64_SYSCALLS.ioctl,
    arch: AUDIT_ARCH_X86_64,
    args: [BigInt(r.fd), BigInt(r.request)],
  });

export default function (test) {
  test(
    'a real depriv Xen QEMU under the launcher (xl create, xen-depriv-dm shim, xen-deprivd; stdvga HVM guest to userspace) recorded by tools/privcmd-trace',
    async () => {
      rmSync(DIR, { recursive: true, force: true });
      mkdirSync(DIR, { recursive: true });
      mkdirSync(LAB_DIR, { recursive: true, mode: 0o755 });
      chmodSync(LAB_DIR, 0o755);
      copyFileSync(join(BUILT, 'libprivcmd-trace.so'), `${LAB_DIR}/libprivcmd-trace.so`);
      chmodSync(`${LAB_DIR}/libprivcmd-trace.so`, 0o644);
      copyFileSync(join(BUILT, 'xen-qemu-system-i386'), QEMU);
      chmodSync(QEMU, 0o755);

      const cfgText = xlConfig({ name: NAME, override: SHIM, vga: 'stdvga' });
      const cfg = `${DIR}/${NAME}.cfg`;
      writeFileSync(cfg, cfgText);
      // The guest's config, as a toolstack would pass it: nothing declared by hand.
      const memoryMiB = cfgNumber(cfgText, 'memory');
      const videoramMiB = cfgNumber(cfgText, 'videoram');
      const console = `/var/log/xen/console/guest-${NAME}.log`;
      rmSync(console, { force: true });

      const listener = await traceListener(TRACE_SOCKET);
      let service = null;
      let client = null;
      let domid = null;
      let qemuPid = null;
      let uid = null;
      const links = () => (domid === null ? [] : [`/var/run/xen/qmp-libxenstat-${domid}`]);
      const diag = () =>
        [
          `xen-deprivd: ${service?.stderr().slice(-3000) ?? '(not started)'}`,
          domid !== null ? `QEMU log: ${readOr(`${STATE}/dm-${domid}/qemu.log`).slice(-1500)}` : '',
          `qemu-dm log: ${readOr(`/var/log/xen/qemu-dm-${NAME}.log`).slice(-1000)}`,
          `guest console: ${readOr(console).slice(-800)}`,
          `xl list: ${trySh('xl', ['list']) ?? '-'}`,
          qemuPid ? `QEMU cpu ${cpuSeconds(qemuPid)} s, running ${running(qemuPid)}` : '',
          `trace so far: ${listener.bytes()} bytes on ${listener.conns.length} connection(s)`,
        ].join('\n');
      let tCreate;
      let createS;
      let guestS;
      let checkReport;
      let launched;
      try {
        // The service runs the tracing copy as its QEMU (XEN_DEPRIVD_QEMU; the child inherits
        // this process's environment).
        const before = process.env.XEN_DEPRIVD_QEMU;
        process.env.XEN_DEPRIVD_QEMU = QEMU;
        try {
          service = await startDeprivd({
            socket: SOCKET,
            stateDir: STATE,
            pool: `${POOL_FIRST}:${POOL_COUNT}`,
          });
        } finally {
          if (before === undefined) delete process.env.XEN_DEPRIVD_QEMU;
          else process.env.XEN_DEPRIVD_QEMU = before;
        }
        client = await connectDeprivd(SOCKET);

        tCreate = now();
        try {
          sh('xl', ['create', cfg], { ...process.env, XEN_DEPRIVD_SOCKET: SOCKET });
        } catch (e) {
          throw new Error(`xl create failed: ${e.stderr ?? e.message}\n${diag()}`);
        }
        createS = now() - tCreate;
        domid = Number(sh('xl', ['domid', NAME]).trim());

        // QEMU is the service's: its DM, a libxl launch, a leased uid, spawned by the service.
        const { dms } = await client.call('list');
        assert.equal(dms.length, 1, JSON.stringify(dms));
        const dm = dms[0];
        assert.equal(dm.domid, domid);
        assert.equal(dm.kind, 'libxl');
        assert.equal(dm.state, 'running');
        qemuPid = dm.pid;
        uid = dm.uid;
        assert.ok(uid >= POOL_FIRST && uid < POOL_FIRST + POOL_COUNT, `uid ${uid} from the pool`);
        const status = readFileSync(`/proc/${qemuPid}/status`, 'utf8');
        assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
        assert.match(status, /^CapEff:\t0000000000000000$/m);
        assert.match(status, /^NoNewPrivs:\t1$/m);
        assert.match(status, /^Seccomp:\t2$/m);
        const ppid = Number(/^PPid:\t(\d+)$/m.exec(status)?.[1]);
        assert.equal(ppid, service.pid, "QEMU is the service's child");
        assert.ok(readlinkSync(`/proc/${qemuPid}/exe`).endsWith(QEMU), 'the tracing QEMU copy');
        const record = readJson(`${STATE}/state/dm-${domid}.json`);
        assert.equal(record?.phase, 'running');
        assert.equal(record.pid ?? qemuPid, qemuPid);
        assert.equal(record.plan.binary, QEMU);
        assert.equal(record.plan.uid, uid);
        assert.deepEqual(record.plan.env, { XENSTORED_PATH: '/run/xenstored/socket' });
        const fsize = record.plan.rlimits.find((r) => r.resource === 'FSIZE');
        launched = {
          uid,
          fsizeLimit: fsize?.hard,
          seccompProfile: record.plan.seccomp?.profile,
        };
        assert.ok(record.plan.seccomp?.program, 'the launch record holds its seccomp program');
        const installed = new Uint8Array(Buffer.from(record.plan.seccomp.program, 'base64'));

        // The service's confinement check holds; at most its `sockets` check may name the trace
        // socket this test put under /usr (bound read-only into the root, connectable all the same).
        const check = await client.call('check', { domid });
        const failed = check.checks.filter((c) => !c.ok);
        const onlyTrace = (c) =>
          c.name === 'sockets' &&
          String(c.actual)
            .split(' ')
            .every((s) => s.endsWith(TRACE_SOCKET));
        assert.deepEqual(
          failed.filter((c) => !onlyTrace(c)),
          [],
          `xen-deprivd check failed: ${JSON.stringify(failed)}`,
        );
        checkReport = `${check.passed}/${check.checks.length}${failed.length ? ` (sockets: ${failed[0].actual}, the trace's)` : ''}`;

        try {
          // Within test-xen.sh's 420 s boot: dom0 start, the copies and xl create take ~60 s.
          await until('the guest userspace marker', 330_000, () => {
            if (!running(qemuPid)) throw new Error('QEMU died before the guest reached userspace');
            return readOr(console).includes('GUEST:');
          });
        } catch (e) {
          throw new Error(`${e.message}\n${diag()}`);
        }
        guestS = now() - tCreate;
        launched.installed = installed;
        launched.qemuCpuS = cpuSeconds(qemuPid);

        await client.call('watch', { domid });
        sh('xl', ['destroy', NAME]);
        const exited = await until('the service to tell the end of the DM', 30_000, () =>
          client.notifications.find((n) => n.method === 'exited' && n.params.domid === domid),
        );
        assert.deepEqual(exited.params.errors, [], 'teardown errors');
      } finally {
        client?.close();
        if (trySh('xl', ['domid', NAME]) !== null) trySh('xl', ['destroy', NAME]);
        await sleep(1000);
        await service?.stop();
        await listener.close();
        await cleanup({ qemuPid, uid, links: links(), dirs: [DIR] });
        rmSync(LAB_DIR, { recursive: true, force: true });
        rmSync(QEMU, { force: true });
      }

      // The trace: every line the recorder sent, from QEMU alone (the service's probe of the
      // binary opens no Xen device, so it never connects).
      const streams = listener.text();
      const lines = streams.flatMap((t) => t.split('\n')).filter((l) => l.startsWith('{'));
      const records = lines.map((l) => JSON.parse(l));
      const lost = records.filter((r) => r.lost !== undefined);
      assert.deepEqual(lost, [], 'the recorder lost lines (no listener when it first wrote)');
      assert.deepEqual([...new Set(records.map((r) => r.pid))], [qemuPid], 'pids in the trace');
      const admitted = records.filter((r) => r.ret >= 0);
      // Non-trivial: the guest's whole boot (tens of thousands of requests, restriction first).
      assert.ok(records.length > 10_000, `only ${records.length} requests recorded`);
      // QEMU restricted its privcmd fds to the guest (-xen-domid-restrict).
      assert.ok(
        records.some((r) => r.dev === 'privcmd' && r.domid === domid && r.ret === 0),
        'no IOCTL_PRIVCMD_RESTRICT to the guest in the trace',
      );

      // 1. The shipped profile and the kernel model, with the context of this guest's config.
      const context = deviceModelContext({ memoryMiB, videoramMiB });
      const report = auditTrace(admitted, qemuXenHvmProfile, context);
      assert.deepEqual(report.denials.slice(0, 10), [], 'the shipped profile denies the real QEMU');
      assert.equal(report.allowed, admitted.length);

      // 2. The shipped device-model seccomp program, and the very program the launcher
      // installed: every ioctl the kernel admitted passes; what the kernel refused may be
      // refused by the filter with the kernel's own errno.
      const programs = {
        xenDeviceModelSeccomp: xenDeviceModelSeccomp().program,
        installed: launched.installed,
      };
      const seccompPassed = {};
      for (const [name, program] of Object.entries(programs)) {
        let passed = 0;
        for (const r of records) {
          const verdict = ioctlVerdict(program, r);
          if (r.ret >= 0) {
            assert.equal(verdict, SECCOMP_RET.ALLOW, `${name}: seq ${r.seq} ioctl ${r.request}`);
            passed++;
          } else {
            assert.ok(
              verdict === SECCOMP_RET.ALLOW || verdict === (SECCOMP_RET.ERRNO | r.errno),
              `${name}: seq ${r.seq} ioctl ${r.request} refused by the kernel (${r.errno}), filter ${verdict}`,
            );
          }
        }
        seccompPassed[name] = passed;
      }

      const full = `${lines.join('\n')}\n`;
      const condensed = condense(full);
      writeFileSync(OUT, condensed);
      const byName = Object.fromEntries(
        Object.entries(report.byName).map(([name, c]) => [name, c.total]),
      );
      return {
        domid,
        uid: launched.uid,
        fsizeLimit: launched.fsizeLimit,
        seccompProfile: launched.seccompProfile,
        check: checkReport,
        xlCreateS: round(createS),
        guestUserspaceS: round(guestS),
        qemuCpuS: launched.qemuCpuS,
        traceBytes: full.length,
        records: records.length,
        admitted: admitted.length,
        profileAllowed: report.allowed,
        seccompPassed,
        condensedLines: condensed.split('\n').length - 1,
        context: { memoryMiB, videoramMiB },
        byName,
      };
    },
    {
      // Opt-in: an HVM guest with stdvga to userspace takes minutes under TCG and would stretch
      // the whole tier past its boot timeout; run it with --filter privcmd-trace.
      skip: !existsSync(join(BUILT, 'xen-qemu-system-i386'))
        ? `${BUILT} not built (make -C tools/privcmd-trace OUT=build lab)`
        : (process.env.XEN_TEST_FILTER ?? '').includes('privcmd-trace')
          ? undefined
          : 'slow (an HVM guest to userspace): run scripts/test-xen.sh --filter privcmd-trace',
    },
  );
}
