import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  close,
  constants,
  isAvailable,
  pidfdSendSignal,
  type SpawnSpec,
  spawnConfinedAsync,
  waitPid,
  watchPidfd,
} from '@xen-depriv/sys';
import { LauncherError } from './errors.js';
import type { LaunchPlan, RlimitName } from './plan.js';
import {
  type DmExitStatus,
  type SpawnedDm,
  type Spawner,
  type SpawnFds,
  sourceFd,
} from './spawner.js';

/** Linux's RLIMIT_* numbers (asm-generic/resource.h, shared by x86_64 and arm64). */
const RLIMIT: Readonly<Record<RlimitName, number>> = {
  FSIZE: 1,
  CORE: 4,
  NPROC: 6,
  NOFILE: 7,
  MEMLOCK: 8,
  AS: 9,
  LOCKS: 10,
  MSGQUEUE: 12,
};

/**
 * Whether the host's own root is the initial ramfs (`rootfs` in mountinfo), as in a dom0 booted
 * from an initramfs that never switched root (the Xen lab's). pivot_root(2) is EINVAL there, so
 * the DM's private root is entered with chroot(2) inside its own mount namespace instead; the DM
 * has no CAP_SYS_CHROOT to leave it.
 */
export function hostRootIsRamfs(mountinfo?: string): boolean {
  let text = mountinfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/mountinfo', 'utf8');
    } catch {
      return false;
    }
  }
  for (const line of text.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (pre?.split(' ')[4] === '/' && post?.split(' ')[0] === 'rootfs') return true;
  }
  return false;
}

/** The `spawnConfined` spec a plan turns into (exposed so tests and --dry-run can show it). */
export function sysSpawnSpec(plan: LaunchPlan, fds: SpawnFds): SpawnSpec {
  return {
    file: plan.binary,
    argv: plan.argv,
    env: plan.env,
    cwd: '/',
    fds: plan.fds.map((f) => ({ target: f.target, source: sourceFd(fds, f.source) })),
    namespaces: plan.namespaces,
    ...(plan.loopbackUp ? { loopbackUp: true } : {}),
    ...(plan.mode === 'jail'
      ? {
          mounts: plan.mounts,
          // The plan says how: the caller chose it (hostRootIsRamfs) when it made the plan.
          root: {
            path: plan.root.path,
            mode: plan.root.how === 'chroot' ? ('chroot' as const) : ('pivot_root' as const),
          },
        }
      : {}),
    rlimits: plan.rlimits.map((r) => ({
      resource: RLIMIT[r.resource],
      soft: r.soft,
      hard: r.hard,
    })),
    ...(plan.execUid === 0 ? {} : { uid: plan.execUid, gid: plan.execGid, groups: plan.groups }),
    noNewPrivs: plan.noNewPrivs,
    dropCapabilityBoundingSet: plan.capabilityBoundingSet === 'empty',
    ...(plan.seccomp === null ? {} : { seccomp: plan.seccomp.program }),
  };
}

export interface SysSpawnerOptions {
  /**
   * Descriptors of this process handed to the DM besides the plan's, as `{ target, source }`
   * (e.g. a QMP listener libxl opened before it exec'd the launcher).
   */
  extraFds?: readonly { target: number; source: number }[];
  /**
   * How often the DM's exit is polled with waitpid(WNOHANG), only where its pidfd cannot be
   * polled (a libuv poll error); otherwise exit is seen through the pidfd. Default 20 ms.
   */
  pollMs?: number;
}

/**
 * The real backend: `@xen-depriv/sys`'s `spawnConfined` (clone, unshare, mounts, pivot_root,
 * setrlimit, setgroups/setresgid/setresuid, no-new-privs, the launcher's seccomp program, execve),
 * signalled through its pidfd and reaped with waitpid. `sysSpawner` is this with the defaults.
 */
export function createSysSpawner(options: SysSpawnerOptions = {}): Spawner {
  const extraFds = options.extraFds ?? [];
  const pollMs = options.pollMs ?? 20;
  return {
    name: 'sys',
    limitations() {
      return [];
    },
    async spawn(plan, fds) {
      if (!isAvailable()) {
        throw new LauncherError('EUNSUPPORTED', '@xen-depriv/sys: native addon not available', {
          step: 'spawn',
        });
      }
      let child: { pid: number; pidfd: number };
      try {
        const spec = sysSpawnSpec(plan, fds);
        // The clone, the child's setup and the wait for its exec run on libuv's thread pool:
        // a service launching many DMs keeps serving meanwhile.
        child = await spawnConfinedAsync(
          extraFds.length === 0 ? spec : { ...spec, fds: [...(spec.fds ?? []), ...extraFds] },
        );
      } catch (e) {
        const x = e as Error & { step?: string; errno?: string; code?: string };
        throw new LauncherError('ESPAWN', `spawnConfined: ${x.message}`, {
          step: 'spawn',
          errno: typeof x.errno === 'string' ? x.errno : x.code,
          cause: e,
        });
      }
      let done = false;
      let status: DmExitStatus | null = null;
      const reap = () => {
        const st = waitPid(child.pid, { noHang: true });
        if (st) status = { exitCode: st.exitCode, signal: st.signal };
        return st;
      };
      // The pidfd turns readable when the DM exits (libuv polls it with the rest of the loop: no
      // timer per DM); then the zombie is reaped. A poll error falls back to waitPid polling.
      const exited = new Promise<void>((resolve) => {
        const w = watchPidfd(child.pidfd, (error) => {
          w.close();
          if (error === undefined) {
            resolve();
            return;
          }
          void (async () => {
            while (reap() === null) await sleep(pollMs);
            resolve();
          })().catch(() => resolve());
        });
        // Supervision alone must not keep a short-lived launcher (the CLI) running.
        w.unref();
      })
        .then(() => {
          try {
            reap();
          } catch {
            // Reaped already (ECHILD).
          }
        })
        .finally(() => {
          done = true;
          close(child.pidfd);
        });
      return {
        pid: child.pid,
        signal(signal) {
          if (done) return;
          try {
            pidfdSendSignal(
              child.pidfd,
              signal === 'SIGKILL' ? (constants.SIGKILL ?? 9) : (constants.SIGTERM ?? 15),
            );
          } catch {
            // Already gone.
          }
        },
        exited,
        exitStatus: () => status,
      } satisfies SpawnedDm;
    },
  };
}

export const sysSpawner: Spawner = createSysSpawner();
