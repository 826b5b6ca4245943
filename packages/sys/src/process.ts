import { fail, fd, INT32_MAX, id, int, str } from './check.js';
import { binding } from './native.js';

/** getpwnam(3): null when no such user. */
export function getpwnam(
  name: string,
): { name: string; uid: number; gid: number; dir: string; shell: string } | null {
  return binding().getpwnam(str('getpwnam name', name));
}

/** getgrnam(3): null when no such group. */
export function getgrnam(name: string): { name: string; gid: number; members: string[] } | null {
  return binding().getgrnam(str('getgrnam name', name));
}

/** SO_PEERCRED of a connected unix socket: the peer's pid, uid and gid at connect time. */
export function peerCredentials(socketFd: number): { pid: number; uid: number; gid: number } {
  return binding().peerCredentials(fd('peerCredentials socketFd', socketFd));
}

/** pidfd_open(2); the pidfd is close-on-exec. */
export function pidfdOpen(pid: number): number {
  return binding().pidfdOpen(int('pidfdOpen pid', pid, 1, INT32_MAX));
}

/** pidfd_send_signal(2). */
export function pidfdSendSignal(pidfd: number, signal: number): void {
  binding().pidfdSendSignal(
    fd('pidfdSendSignal pidfd', pidfd),
    int('pidfdSendSignal signal', signal, 0, 64),
  );
}

/**
 * waitpid(2) for one child. Blocks unless `noHang`; with `noHang`, null while it still runs.
 * Exactly one of exitCode and signal is set.
 */
export function waitPid(
  pid: number,
  options: { noHang?: boolean } = {},
): { pid: number; exitCode: number | null; signal: number | null } | null {
  const noHang = options.noHang ?? false;
  if (typeof noHang !== 'boolean') fail('waitPid options.noHang', 'a boolean', noHang);
  return binding().waitPid(int('waitPid pid', pid, 1, INT32_MAX), noHang);
}

/** The lowest uid either side of reaperKill may be: below it live system accounts. */
export const REAPER_MIN_UID = 1000;

/**
 * Kills every process of `targetUid`, as libxl's device-model reaper does: a child sets
 * real uid = reaperUid, effective uid = targetUid, saved uid = 0, checks that its euid is
 * the target and it holds no effective capability, then calls kill(-1, SIGKILL).
 * Refuses, before forking anything, uid 0, uids below 1000, and equal uids.
 */
export function reaperKill(targetUid: number, reaperUid: number): void {
  const [target, reaper] = reaperUids('reaperKill', targetUid, reaperUid);
  binding().reaperKill(target, reaper);
}

/**
 * reaperKill with the fork and the wait for the reaper on the libuv thread pool, so the
 * event loop keeps running. The same refusals (as rejections, before anything is forked)
 * and the same checks in the child before kill(-1).
 */
export async function reaperKillAsync(targetUid: number, reaperUid: number): Promise<void> {
  const [target, reaper] = reaperUids('reaperKillAsync', targetUid, reaperUid);
  return binding().reaperKillAsync(target, reaper);
}

function reaperUids(fn: string, targetUid: unknown, reaperUid: unknown): [number, number] {
  const target = id(`${fn} targetUid`, targetUid);
  const reaper = id(`${fn} reaperUid`, reaperUid);
  const never = `a uid >= ${REAPER_MIN_UID} (never root or a system account)`;
  if (target < REAPER_MIN_UID) fail(`${fn} targetUid`, never, target);
  if (reaper < REAPER_MIN_UID) fail(`${fn} reaperUid`, never, reaper);
  if (target === reaper) fail(`${fn} reaperUid`, `a uid other than the target ${target}`, reaper);
  return [target, reaper];
}
