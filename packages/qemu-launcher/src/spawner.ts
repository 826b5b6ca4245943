import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { LauncherError } from './errors.js';
import type { JailMount, LaunchPlan, RlimitName } from './plan.js';

/** Descriptors the launcher opened, by the plan's `PlannedFd.source`. */
export interface SpawnFds {
  readonly devnull: number;
  readonly log: number;
  readonly 'qmp-listener': number;
  /** The caller's descriptors, by the name in the plan's `passed:NAME` sources. */
  readonly passed?: Readonly<Record<string, number>>;
}

/** The descriptor of this process a planned fd is taken from. */
export function sourceFd(fds: SpawnFds, source: string): number {
  if (source.startsWith('passed:')) {
    const fd = fds.passed?.[source.slice('passed:'.length)];
    if (fd === undefined) {
      throw new LauncherError('ESPAWN', `fd ${source}: the plan names it, the launch passed none`, {
        step: 'spawn',
      });
    }
    return fd;
  }
  return fds[source as 'devnull' | 'log' | 'qmp-listener'];
}

export interface SpawnedDm {
  readonly pid: number;
  /** Sends a signal to exactly this process (a pidfd where the backend has one). */
  signal(signal: 'SIGTERM' | 'SIGKILL'): void;
  /** Settles when the process is gone (reaped if it is the launcher's child). */
  readonly exited: Promise<void>;
  /** How it ended, once `exited` settled, where the backend reaped it; null before. */
  exitStatus?(): DmExitStatus | null;
}

/** A reaped DM's wait status: its exit code, or the signal that ended it. */
export interface DmExitStatus {
  readonly exitCode: number | null;
  readonly signal: number | null;
}

/** Executes a plan's process part: namespaces, root, rlimits, ids, no-new-privs, seccomp, exec. */
export interface Spawner {
  readonly name: string;
  /** What this backend cannot do from the plan (printed, and checked by verifyConfinement). */
  limitations(plan: LaunchPlan): string[];
  spawn(plan: LaunchPlan, fds: SpawnFds): Promise<SpawnedDm>;
}

/** umount2's syscall number (x86_64 166, arm64's generic table 39); flag 2 is MNT_DETACH. */
const SYS_umount2 = process.arch === 'arm64' ? 39 : 166;

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

const PRLIMIT_FLAG: Readonly<Record<RlimitName, string>> = {
  FSIZE: '--fsize',
  CORE: '--core',
  MSGQUEUE: '--msgqueue',
  LOCKS: '--locks',
  MEMLOCK: '--memlock',
  NPROC: '--nproc',
  NOFILE: '--nofile',
  AS: '--as',
};

const UNSHARE_FLAG = { mount: '--mount', ipc: '--ipc', net: '--net', uts: '--uts' } as const;

function mountScript(m: JailMount): string[] {
  switch (m.type) {
    case 'tmpfs':
      return [
        `mount -t tmpfs -o ${q(`mode=${m.mode.toString(8)},size=${m.size},nosuid${m.devices ? '' : ',nodev'}`)} xen-depriv ${q(m.target)}`,
      ];
    case 'bind':
      return [
        `mount --bind ${q(m.source)} ${q(m.target)}`,
        ...(m.readOnly ? [`mount -o remount,bind,ro,nosuid ${q(m.target)}`] : []),
      ];
    case 'mknod':
      return [
        `mknod -m ${m.mode.toString(8)} ${q(m.path)} c ${m.major} ${m.minor}`,
        `chown ${m.uid}:${m.gid} ${q(m.path)}`,
      ];
  }
}

/** The shell script the util-linux backend runs in the new namespaces (exposed for review). */
export function utilLinuxScript(plan: LaunchPlan): string {
  const lines = ['set -e', 'mount --make-rprivate /'];
  if (plan.mode === 'jail') {
    const jail = plan.root.path;
    for (const m of plan.mounts) lines.push(...mountScript(m));
    lines.push(
      `cd ${q(jail)}`,
      // pivot_root(".", "."): the root is read-only, so the old root is stacked and detached.
      'pivot_root . .',
      // util-linux umount needs /proc/self/mountinfo, which the new root has not: call umount2.
      `/usr/bin/perl -e 'my $p = "."; syscall(${SYS_umount2}, $p, 2) == 0 or die "umount2: $!\\n"'`,
      'cd /',
    );
  }
  const prlimit = plan.rlimits.map((r) => `${PRLIMIT_FLAG[r.resource]}=${r.soft}:${r.hard}`);
  const setpriv = ['/usr/bin/setpriv'];
  if (plan.execUid !== 0) {
    setpriv.push('--reuid', String(plan.execUid), '--regid', String(plan.execGid));
    setpriv.push(
      ...(plan.groups.length ? ['--groups', plan.groups.join(',')] : ['--clear-groups']),
    );
  }
  if (plan.capabilityBoundingSet === 'empty')
    setpriv.push('--inh-caps=-all', '--bounding-set=-all');
  if (plan.noNewPrivs) setpriv.push('--no-new-privs');
  const env = Object.entries(plan.env).map(([k, v]) => q(`${k}=${v}`));
  lines.push(
    `exec /usr/bin/env -i ${env.join(' ')} /usr/bin/prlimit ${prlimit.join(' ')} -- ${setpriv.join(' ')} -- ${plan.argv.map(q).join(' ')}`,
  );
  return `${lines.join('\n')}\n`;
}

/**
 * A spawner built from util-linux (unshare, prlimit, setpriv, pivot_root): every step of the
 * plan but the launcher's own seccomp program, which needs `@xen-depriv/sys`. The process keeps
 * one pid from unshare to QEMU (every stage execs).
 */
export const utilLinuxSpawner: Spawner = {
  name: 'util-linux',
  limitations(plan) {
    const out: string[] = [];
    if (plan.seccomp !== null)
      out.push(
        `seccomp program "${plan.seccomp.profile}" is not installed (needs @xen-depriv/sys)`,
      );
    if (plan.namespaces.includes('pid')) out.push('pid namespace is not supported');
    if (plan.loopbackUp)
      out.push("lo stays down in the DM's network namespace (needs @xen-depriv/sys)");
    return out;
  },
  spawn(plan, fds) {
    if (plan.namespaces.includes('pid')) {
      return Promise.reject(
        new LauncherError(
          'EUNSUPPORTED',
          'util-linux spawner: a pid namespace needs @xen-depriv/sys',
          { step: 'spawn' },
        ),
      );
    }
    const stdio: number[] = [];
    for (const f of plan.fds) stdio[f.target] = sourceFd(fds, f.source);
    for (let i = 0; i < stdio.length; i++) {
      if (stdio[i] === undefined) {
        return Promise.reject(
          new LauncherError(
            'ESPAWN',
            `util-linux spawner: fd ${i} is not declared; expected contiguous fds`,
            { step: 'spawn' },
          ),
        );
      }
    }
    const flags = plan.namespaces.map((n) => UNSHARE_FLAG[n as keyof typeof UNSHARE_FLAG]);
    const child = spawn(
      '/usr/bin/unshare',
      [...flags, '--', '/bin/sh', '-c', utilLinuxScript(plan)],
      {
        stdio,
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
        detached: true,
      },
    );
    return new Promise((resolve, reject) => {
      child.once('error', (e) =>
        reject(new LauncherError('ESPAWN', `unshare: ${e.message}`, { step: 'spawn', cause: e })),
      );
      child.once('spawn', () => {
        const pid = child.pid!;
        const exited = new Promise<void>((r) => {
          if (child.exitCode !== null || child.signalCode !== null) r();
          else child.once('exit', () => r());
        });
        child.unref();
        resolve({
          pid,
          signal(signal) {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          },
          exited,
          exitStatus: () =>
            child.exitCode === null && child.signalCode === null
              ? null
              : {
                  exitCode: child.exitCode,
                  signal: child.signalCode === null ? null : osConstants.signals[child.signalCode],
                },
        });
      });
    });
  },
};
