import { execFileSync, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAvailable, memfdCreate } from '@xen-depriv/sys';
import { dynamicPoolScheme, UidAllocator } from '@xen-depriv/uid-allocator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  allocatorUidOps,
  createSysSpawner,
  type DmHandle,
  destroy,
  deviceModelSeccomp,
  LauncherError,
  type LaunchPlan,
  type LaunchProgress,
  launch,
  launchMany,
  pidsOfUid,
  plan,
  probeQemu,
  type QemuCaps,
  sysSpawner,
  utilLinuxSpawner,
  verifyConfinement,
} from '../src/index.js';

const X86 = '/usr/bin/qemu-system-x86_64';
const sysAvailable = (): boolean => isAvailable();
const isRoot = process.getuid?.() === 0;
const haveTools = [
  '/usr/bin/unshare',
  '/usr/bin/setpriv',
  '/usr/bin/prlimit',
  '/usr/sbin/pivot_root',
].every(existsSync);
const runnable = isRoot && haveTools && existsSync(X86);

/** A stand-in for /dev/xen/privcmd on a host without Xen: the same path, /dev/null's numbers. */
const STAND_IN_PRIVCMD = {
  path: '/dev/xen/privcmd',
  major: 1,
  minor: 3,
  mode: 0o600,
  removeAfterReady: true,
};

function statusOf(pid: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

/** Runs `argv` as uid/gid inside the DM's namespaces and root (nsenter), returning its exit and stderr. */
function runInJail(pid: number, uid: number, argv: string[]) {
  return spawnSync(
    '/usr/bin/nsenter',
    ['-t', String(pid), '-m', '-i', '-n', '-u', '-r', '-w', `-S${uid}`, `-G${uid}`, '--', ...argv],
    { encoding: 'utf8' },
  );
}

describe.skipIf(!runnable)(
  'launch (as root, real qemu-system-x86_64 -M none, util-linux spawner)',
  () => {
    let stateDir: string;
    let caps: QemuCaps;
    const handles: DmHandle[] = [];
    beforeAll(async () => {
      stateDir = mkdtempSync(join(tmpdir(), 'ql-launch-'));
      caps = await probeQemu(X86);
    });
    afterAll(async () => {
      for (const h of handles) await destroy(h).catch(() => undefined);
      rmSync(stateDir, { recursive: true, force: true });
    });

    it('jail mode: verifyConfinement passes every check, /proc agrees, destroy leaves nothing', async () => {
      const uid = 3_011_001;
      const p: LaunchPlan = plan(
        { domid: 11, binary: X86, stateDir, devices: [STAND_IN_PRIVCMD] },
        caps,
        { uid, gid: uid },
      );
      // Before the seal the stand-in node is there and the DM's uid can open it: the check below can fail.
      let beforeSeal: ReturnType<typeof runInJail> | undefined;
      let dmPid = 0;
      const h = await launch(p, {
        spawner: utilLinuxSpawner,
        beforeStep: (s) => {
          if (s === 'seal-jail')
            beforeSeal = runInJail(dmPid, uid, ['/usr/bin/sh', '-c', 'exec 3</dev/xen/privcmd']);
          if (s === 'qmp-connect')
            dmPid = Number(JSON.parse(readFileSync(p.paths.state, 'utf8')).pid);
        },
      });
      expect(beforeSeal?.status).toBe(0);
      expect(h.spawner).toBe('util-linux');
      handles.push(h);
      const report = verifyConfinement(h.pid, p, { expectedRoot: h.root! });
      expect(report.checks.filter((c) => !c.ok)).toEqual([]);
      expect(report.ok).toBe(true);

      const st = statusOf(h.pid);
      expect(st.get('Uid')).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
      expect(st.get('CapEff')).toBe('0000000000000000');
      expect(st.get('CapBnd')).toBe('0000000000000000');
      expect(st.get('NoNewPrivs')).toBe('1');
      expect(st.get('Seccomp')).toBe('2');

      // QMP answers through the socket in the jail's /run.
      expect(await h.qmp!.execute('query-status')).toMatchObject({ status: 'running' });
      expect(existsSync(join(`/proc/${h.pid}/root`, 'run', 'qmp.sock'))).toBe(true);

      // After ready, nothing in the root gives a fresh handle: as the DM's uid, in its root.
      const open = runInJail(h.pid, uid, ['/usr/bin/sh', '-c', 'exec 3</dev/xen/privcmd']);
      expect(open.status).not.toBe(0);
      expect(open.stderr).toMatch(/No such file|can't open|cannot open/i);
      const write = runInJail(h.pid, uid, ['/usr/bin/sh', '-c', ': > /new-file']);
      expect(write.status).not.toBe(0);

      await destroy(h);
      expect(pidsOfUid(uid)).toEqual([]);
      expect(existsSync(join(stateDir, 'dm-11'))).toBe(false);
      expect(existsSync(p.paths.qmpSocket)).toBe(false);
      expect(existsSync(p.paths.state)).toBe(false);
      // A second destroy finishes nothing and fails nothing.
      await destroy(h);
    });

    it('libxl-compat mode: QEMU drops itself with -runas/-chroot; verifyConfinement passes', async () => {
      const uid = 3_011_002;
      const p = plan({ domid: 12, binary: X86, stateDir, mode: 'libxl-compat' }, caps, {
        uid,
        gid: uid,
      });
      const h = await launch(p);
      handles.push(h);
      const report = verifyConfinement(h.pid, p);
      expect(report.checks.filter((c) => !c.ok)).toEqual([]);
      const st = statusOf(h.pid);
      expect(st.get('Uid')).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
      expect(st.get('CapEff')).toBe('0000000000000000');
      expect(st.get('NoNewPrivs')).toBe('1');
      expect(st.get('Seccomp')).toBe('2');
      expect(report.facts.rootEntries).toEqual([]);
      // The chroot is empty and 0000: as the DM's uid, nothing at /dev/xen/privcmd to open.
      const open = runInJail(h.pid, uid, ['/bin/true']);
      expect(open.status).not.toBe(0);
      await destroy(h);
      expect(pidsOfUid(uid)).toEqual([]);
      expect(existsSync(join(stateDir, 'dm-12'))).toBe(false);
    });

    it.skipIf(!sysAvailable())(
      'jail mode through @xen-depriv/sys spawnConfined: every check but the bounding set',
      async () => {
        const uid = 3_011_003;
        const p = plan({ domid: 13, binary: X86, stateDir, devices: [STAND_IN_PRIVCMD] }, caps, {
          uid,
          gid: uid,
        });
        const h = await launch(p, { spawner: sysSpawner });
        handles.push(h);
        expect(h.spawner).toBe('sys');
        const report = verifyConfinement(h.pid, p, { expectedRoot: h.root! });
        expect(report.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual([]);
        const st = statusOf(h.pid);
        expect(st.get('CapBnd')).toBe('0000000000000000');
        expect(st.get('Uid')).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
        expect(st.get('CapEff')).toBe('0000000000000000');
        expect(st.get('NoNewPrivs')).toBe('1');
        expect(st.get('Seccomp')).toBe('2');
        const open = runInJail(h.pid, uid, ['/usr/bin/sh', '-c', 'exec 3</dev/xen/privcmd']);
        expect(open.status).not.toBe(0);
        await destroy(h);
        expect(pidsOfUid(uid)).toEqual([]);
        expect(existsSync(join(stateDir, 'dm-13'))).toBe(false);
      },
    );

    it.skipIf(!sysAvailable())(
      'createSysSpawner({ extraFds }): a descriptor of the launcher reaches the DM at its target',
      async () => {
        const uid = 3_011_011;
        const p = plan({ domid: 22, binary: X86, stateDir }, caps, { uid, gid: uid });
        const memfd = memfdCreate('libxl-qmp-stand-in');
        try {
          const h = await launch(p, {
            spawner: createSysSpawner({ extraFds: [{ target: 9, source: memfd }], pollMs: 50 }),
          });
          handles.push(h);
          expect(h.spawner).toBe('sys');
          expect(readlinkSync(`/proc/${h.pid}/fd/9`)).toBe('/memfd:libxl-qmp-stand-in (deleted)');
          await destroy(h);
          expect(pidsOfUid(uid)).toEqual([]);
        } finally {
          closeSync(memfd);
        }
      },
    );

    it.skipIf(!sysAvailable())(
      "jail mode with privcmd-filter's seccomp program: two filters, QMP works",
      async () => {
        const uid = 3_011_010;
        const p = plan(
          { domid: 20, binary: X86, stateDir },
          caps,
          { uid, gid: uid },
          { seccomp: deviceModelSeccomp() },
        );
        const h = await launch(p);
        handles.push(h);
        expect(h.spawner).toBe('sys');
        const report = verifyConfinement(h.pid, p, { expectedRoot: h.root! });
        expect(report.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual([]);
        // The launcher's filter, then QEMU's own -sandbox.
        expect(statusOf(h.pid).get('Seccomp_filters')).toBe('2');
        expect(await h.qmp!.execute('query-status')).toMatchObject({ status: 'running' });
        await destroy(h);
        expect(pidsOfUid(uid)).toEqual([]);
      },
    );

    it('with @xen-depriv/uid-allocator: the lease comes from acquire, destroy reaps and releases it', async () => {
      const allocator = new UidAllocator({
        scheme: dynamicPoolScheme({ first: 3_011_300, count: 8, reaperUid: 3_011_299 }),
        stateDir: join(stateDir, 'alloc'),
      });
      const lease = await allocator.acquire(21);
      expect(lease.uid).toBeGreaterThanOrEqual(3_011_300);
      const uids = allocatorUidOps(allocator);
      const p = plan({ domid: 21, binary: X86, stateDir }, caps, lease);
      const h = await launch(p, { lease, uids });
      handles.push(h);
      expect(verifyConfinement(h.pid, p, { expectedRoot: h.root! }).ok).toBe(true);
      expect(readdirSync(allocator.leaseDir)).toHaveLength(1);
      await destroy(h, { uids });
      expect(pidsOfUid(lease.uid)).toEqual([]);
      expect(readdirSync(allocator.leaseDir)).toEqual([]);
      expect(existsSync(join(stateDir, 'dm-21'))).toBe(false);
      expect(existsSync(p.paths.state)).toBe(false);
    });

    it('a real DM whose QMP reply exceeds the line cap is condemned and destroyed', async () => {
      const uid = 3_011_004;
      const p = plan({ domid: 14, binary: X86, stateDir }, caps, { uid, gid: uid });
      const h = await launch(p, { qmpLimits: { maxLineBytes: 4096 } });
      handles.push(h);
      // query-qmp-schema answers with one line of well over 4096 bytes.
      const e = await h.qmp!.execute('query-qmp-schema').catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'EQMP_OVERSIZE' });
      expect(h.condemned).toBe(e);
      await h.destroyed;
      expect(pidsOfUid(uid)).toEqual([]);
      expect(existsSync(p.paths.state)).toBe(false);
      expect(existsSync(join(stateDir, 'dm-14'))).toBe(false);
    });

    it.skipIf(!sysAvailable())(
      'a real DM killed after its QMP greeting: the launch fails naming the signal, nothing is left',
      async () => {
        const uid = 3_011_012;
        const p = plan({ domid: 23, binary: X86, stateDir }, caps, { uid, gid: uid });
        let killed = 0;
        const e = await launch(p, {
          spawner: sysSpawner,
          beforeStep: (s) => {
            if (s !== 'qmp-ready') return;
            for (const pid of pidsOfUid(uid)) {
              process.kill(pid, 'SIGKILL');
              killed++;
            }
          },
        }).catch((x: unknown) => x);
        expect(killed).toBe(1);
        expect(e).toBeInstanceOf(LauncherError);
        // No second session for a dead DM; its end, as its spawner reaped it, in the message.
        expect((e as LauncherError).code).toBe('EQMP_CLOSED');
        expect((e as LauncherError).message).toMatch(
          /^launch of domid 23 failed at qmp-ready: .* \(the DM was killed by signal 9 \(SIGKILL\)\)$/,
        );
        expect(pidsOfUid(uid)).toEqual([]);
        expect(existsSync(p.paths.state)).toBe(false);
      },
    );

    it('a real DM that stops answering (SIGSTOP) times out, is condemned and killed', async () => {
      const uid = 3_011_005;
      const p = plan({ domid: 15, binary: X86, stateDir }, caps, { uid, gid: uid });
      const h = await launch(p, { quitTimeoutMs: 200 });
      handles.push(h);
      process.kill(h.pid, 'SIGSTOP');
      const e = await h
        .qmp!.execute('query-status', undefined, { timeoutMs: 200 })
        .catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'EQMP_TIMEOUT', step: 'qmp:query-status' });
      await h.destroyed;
      expect(pidsOfUid(uid)).toEqual([]);
      expect(existsSync(p.paths.state)).toBe(false);
    });

    it('launchMany: bounded concurrency, progress events, all ready, all destroyed', async () => {
      const uids = [3_011_006, 3_011_007, 3_011_008, 3_011_009];
      const items = uids.map((uid, i) => ({
        plan: plan({ domid: 16 + i, binary: X86, stateDir }, caps, { uid, gid: uid }),
      }));
      const events: LaunchProgress[] = [];
      let inFlight = 0;
      let maxInFlight = 0;
      const result = await launchMany(items, {
        concurrency: 2,
        progress: (e) => {
          events.push(e);
          if (e.type === 'start') maxInFlight = Math.max(maxInFlight, ++inFlight);
          else inFlight--;
        },
      });
      handles.push(...result.handles.filter((h): h is DmHandle => h !== null));
      expect(result.errors).toEqual([null, null, null, null]);
      expect(maxInFlight).toBe(2);
      expect(
        events
          .filter((e) => e.type === 'ready')
          .map((e) => e.domid)
          .sort(),
      ).toEqual([16, 17, 18, 19]);
      for (const h of result.handles) {
        expect(verifyConfinement(h!.pid, h!.plan).ok).toBe(true);
        await destroy(h!);
      }
      for (const uid of uids) expect(pidsOfUid(uid)).toEqual([]);
    });

    it('verifyConfinement on a pid it did not launch (an unconfined root process) fails the right checks', () => {
      const child = execFileSync('/bin/sh', ['-c', 'sleep 30 >/dev/null 2>&1 & echo $!'], {
        encoding: 'utf8',
      });
      const pid = Number(child.trim());
      try {
        const report = verifyConfinement(pid);
        expect(report.ok).toBe(false);
        const failed = report.checks.filter((c) => !c.ok).map((c) => c.name);
        expect(failed).toEqual(
          expect.arrayContaining([
            'uid',
            'gid',
            'capabilities.eff',
            'capabilities.prm',
            'noNewPrivs',
            'seccomp',
            'root.notHost',
            'namespace.mount',
            'namespace.net',
          ]),
        );
        expect(report.facts.uids).toEqual([0, 0, 0, 0]);
      } finally {
        process.kill(pid, 'SIGKILL');
      }
    });
  },
);
