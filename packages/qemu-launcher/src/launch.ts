import { EventEmitter } from 'node:events';
import {
  chownSync,
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { constants as osConstants } from 'node:os';
import { posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAvailable } from '@xen-depriv/sys';
import pLimit from 'p-limit';
import { LauncherError } from './errors.js';
import type { LaunchPlan } from './plan.js';
import { QmpClient, type QmpLimits } from './qmp.js';
import { type SpawnedDm, type Spawner, utilLinuxSpawner } from './spawner.js';
import {
  type LaunchRecord,
  listRecords,
  processStartTime,
  readRecord,
  removeRecord,
  writeRecord,
} from './state.js';
import { sysSpawner } from './sys-spawner.js';
import { procUidOps, type UidOps } from './uids.js';

export type LaunchStep =
  | 'record-state'
  | 'prepare-dirs'
  | 'qmp-listen'
  | 'spawn'
  | 'qmp-connect'
  | 'qmp-ready'
  | 'seal-jail'
  | 'running';

export type DestroyStep =
  | 'mark-destroying'
  | 'qmp-quit'
  | 'sigterm'
  | 'sigkill'
  | 'reap'
  | 'verify-empty'
  | 'remove-jail'
  | 'release-lease'
  | 'remove-state';

export interface LauncherDeps {
  readonly spawner?: Spawner;
  readonly uids?: UidOps;
  /** The lease the plan was made from; released by destroy. Stored in the state as JSON. */
  readonly lease?: unknown;
  readonly qmpLimits?: Partial<QmpLimits>;
  /** Greeting plus `query-status` must arrive within this. */
  readonly readyTimeoutMs?: number;
  /** Time QEMU gets to leave after `quit`, then after SIGTERM. */
  readonly quitTimeoutMs?: number;
  /** Destroy the DM as soon as its QMP session fails (oversize, garbage, timeout). Default true. */
  readonly destroyOnQmpFailure?: boolean;
  /** Called before each step; tests kill the launcher here. */
  readonly beforeStep?: ((step: LaunchStep | DestroyStep) => void) | undefined;
  /**
   * The caller's descriptors for the plan's `passed:NAME` fds (the plan's `passedFds`), by
   * name. The caller keeps ownership: launch never closes them.
   */
  readonly passedFds?: Readonly<Record<string, number>>;
}

export interface DmHandle {
  readonly plan: LaunchPlan;
  readonly pid: number;
  readonly startTime: number | null;
  readonly qmp: QmpClient | null;
  /** QMP `query-status`'s status when the DM became ready (`running`, `prelaunch`, ...). */
  readonly status: string | null;
  readonly root: { readonly dev: number; readonly ino: number } | null;
  readonly lease: unknown;
  /** Why the DM was marked for destruction (a hostile or broken QMP session), if it was. */
  readonly condemned: LauncherError | null;
  /** Settles when the handle's automatic destroy (after a QMP failure) has finished. */
  readonly destroyed: Promise<void> | null;
  /** The spawner used and what it could not do of the plan. */
  readonly spawner: string;
  readonly limitations: readonly string[];
  /** Signals exactly this DM (pidfd where the spawner has one). */
  readonly signal: ((signal: 'SIGTERM' | 'SIGKILL') => void) | undefined;
}

type MutableHandle = { -readonly [K in keyof DmHandle]: DmHandle[K] };

/** QMP sessions a launch opens at most before it gives up on a DM that is still alive. */
const QMP_SESSIONS = 3;
/** How a session QEMU mishandled fails: a stray line, silence, or the connection closed. */
const QMP_RETRIED: ReadonlySet<string> = new Set(['EQMP_PROTOCOL', 'EQMP_TIMEOUT', 'EQMP_CLOSED']);

/**
 * The error of a QMP session whose DM died: the same code and step, the DM's end in the
 * message (its exit code or signal, once its spawner reaped it, 200 ms at most).
 */
async function dmGone(e: unknown, dm: SpawnedDm): Promise<unknown> {
  if (!(e instanceof LauncherError)) return e;
  await Promise.race([dm.exited, sleep(200)]);
  const st = dm.exitStatus?.() ?? null;
  const end =
    st === null
      ? 'the DM is gone'
      : st.signal !== null
        ? `the DM was killed by signal ${st.signal}${signalName(st.signal)}`
        : `the DM exited with code ${st.exitCode}`;
  return new LauncherError(e.code, `${e.message} (${end})`, {
    step: e.step,
    errno: e.errno,
    cause: e,
  });
}

function signalName(n: number): string {
  const name = Object.entries(osConstants.signals).find(([, v]) => v === n)?.[0];
  return name === undefined ? '' : ` (${name})`;
}

function alive(pid: number, startTime: number | null): boolean {
  const t = processStartTime(pid);
  return t !== null && (startTime === null || t === startTime);
}

async function waitGone(
  pid: number,
  startTime: number | null,
  ms: number,
  dm?: SpawnedDm,
): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!alive(pid, startTime)) return true;
    if (dm) await Promise.race([dm.exited, sleep(10)]);
    else await sleep(10);
  }
  return !alive(pid, startTime);
}

function listenUnix(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (e) =>
      reject(
        new LauncherError('ESPAWN', `listen ${path}: ${e.message}`, {
          step: 'qmp-listen',
          cause: e,
        }),
      ),
    );
    server.listen({ path, backlog: 4 }, () => resolve(server));
  });
}

/**
 * The backend that does all of the plan, preferring `@xen-depriv/sys`; where none does, sys when
 * the plan carries a seccomp program (it alone installs one), else util-linux.
 */
export function chooseSpawner(p: LaunchPlan): Spawner {
  const sys = isAvailable() ? [sysSpawner] : [];
  const all = [...sys, utilLinuxSpawner];
  return (
    all.find((s) => s.limitations(p).length === 0) ??
    (p.seccomp !== null && sys[0] ? sys[0] : utilLinuxSpawner)
  );
}

/** The listening descriptor under a node server; libuv keeps it in the handle's `fd`. */
function serverFd(server: Server): number {
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new LauncherError('ESPAWN', `QMP listener: expected a descriptor, saw ${String(fd)}`, {
      step: 'qmp-listen',
    });
  }
  return fd;
}

/** The end of the DM's log, to say why it died (the log is capped by RLIMIT_FSIZE anyway). */
function logTail(path: string): string {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return text === '' ? '' : ` (log: ${text.slice(-400)})`;
  } catch {
    return '';
  }
}

function ensureDirs(p: LaunchPlan): void {
  const base = posix.dirname(p.paths.jail);
  mkdirSync(posix.dirname(base), { recursive: true, mode: 0o700 });
  mkdirSync(base, { recursive: true, mode: 0o711 });
  // libxl makes the chroot 0000: nothing in it is readable even before QEMU drops.
  mkdirSync(p.paths.jail, { recursive: true, mode: p.mode === 'jail' ? 0o755 : 0o000 });
  mkdirSync(p.paths.run, { recursive: true, mode: 0o700 });
  if (p.mode !== 'jail') return;
  chownSync(p.paths.run, p.uid, p.gid);
  for (const e of p.skeleton) {
    const at = posix.join(p.paths.jail, e.path);
    if (lstatExists(at)) continue;
    if (e.kind === 'dir') mkdirSync(at, { mode: e.mode });
    else if (e.kind === 'file') writeFileSync(at, '', { mode: e.mode });
    else if (e.kind === 'symlink') symlinkSync(e.linkTo, at);
  }
  if (p.mounts.some((m) => m.type === 'bind' && m.target.endsWith('/run/xenstored/socket'))) {
    const dir = posix.join(p.paths.run, 'xenstored');
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    chownSync(dir, 0, 0);
    if (!lstatExists(posix.join(dir, 'socket')))
      writeFileSync(posix.join(dir, 'socket'), '', { mode: 0o600 });
  }
}

function lstatExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Removes from the DM's root what could give it a fresh, unrestricted handle once it is ready. */
function sealJail(p: LaunchPlan, pid: number): void {
  const root = `/proc/${pid}/root`;
  for (const path of p.removeAfterReady) {
    try {
      unlinkSync(posix.join(root, path));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  for (const dir of new Set(p.removeAfterReady.map((x) => posix.dirname(x)))) {
    if (dir === '/dev') continue;
    try {
      if (readdirSync(posix.join(root, dir)).length === 0) rmdirSync(posix.join(root, dir));
    } catch {
      // Not there, or not empty: verifyConfinement reports what remains.
    }
  }
}

/**
 * Executes a plan step by step: state record, directories, the QMP listener (created here and
 * passed as fd 3, never a path QEMU creates), the confined spawn, readiness over QMP (greeting,
 * `qmp_capabilities`, `query-status`), then the jail is sealed. Any failure destroys what was built.
 */
export async function launch(p: LaunchPlan, deps: LauncherDeps = {}): Promise<DmHandle> {
  const spawner = deps.spawner ?? chooseSpawner(p);
  const step = (s: LaunchStep) => deps.beforeStep?.(s);
  const record = (r: Partial<LaunchRecord>) =>
    writeRecord({
      version: 1,
      domid: p.domid,
      phase: 'launching',
      plan: p,
      lease: deps.lease ?? null,
      pid: null,
      startTime: null,
      root: null,
      ...r,
    });
  const handle: MutableHandle = {
    plan: p,
    pid: 0,
    startTime: null,
    qmp: null,
    status: null,
    root: null,
    lease: deps.lease ?? null,
    condemned: null,
    destroyed: null,
    spawner: spawner.name,
    limitations: spawner.limitations(p),
    signal: undefined,
  };
  let current: LaunchStep = 'record-state';
  const enter = (s: LaunchStep) => {
    current = s;
    step(s);
  };
  let server: Server | null = null;
  let dm: SpawnedDm | null = null;
  const fds: number[] = [];
  try {
    enter('record-state');
    record({});
    enter('prepare-dirs');
    ensureDirs(p);
    enter('qmp-listen');
    // Listen under a temporary name: node unlinks the path it listened on when it closes.
    const tmp = `${p.paths.qmpSocket}.${process.pid}`;
    rmSync(tmp, { force: true });
    server = await listenUnix(tmp);
    renameSync(tmp, p.paths.qmpSocket);
    enter('spawn');
    const devnull = openSync('/dev/null', 'r+');
    fds.push(devnull);
    const log = openSync(p.paths.log, 'a', 0o600);
    fds.push(log);
    dm = await spawner.spawn(p, {
      devnull,
      log,
      'qmp-listener': serverFd(server),
      ...(deps.passedFds === undefined ? {} : { passed: deps.passedFds }),
    });
    handle.pid = dm.pid;
    handle.signal = dm.signal;
    handle.startTime = processStartTime(dm.pid);
    record({ pid: dm.pid, startTime: handle.startTime });
    // QEMU holds its own copy of the listener; ours must not accept its clients.
    server.close();
    server = null;
    for (const fd of fds.splice(0)) closeSync(fd);
    enter('qmp-connect');
    const readyMs = deps.readyTimeoutMs ?? 10_000;
    // QEMU 7.2 sometimes mishandles a client that connected while it was starting (a second
    // greeting, a session that never answers, or one it closes): 0.3% of early connections in
    // bench/deprivd. A fresh session fixes it, so while the DM lives, a session that failed
    // other than by a missing greeting is retried, up to QMP_SESSIONS sessions, all within twice
    // the ready timeout (a silent session takes a whole one).
    const readyBy = Date.now() + 2 * readyMs;
    const left = () => Math.min(readyMs, readyBy - Date.now());
    const session = async (): Promise<QmpClient> => {
      const qmp = await QmpClient.connect(p.paths.qmpSocket, {
        greetingTimeoutMs: left(),
        ...deps.qmpLimits,
      });
      handle.qmp = qmp;
      enter('qmp-ready');
      const status = (await qmp.execute('query-status', undefined, { timeoutMs: left() })) as {
        status?: unknown;
      };
      if (typeof status?.status !== 'string') {
        throw new LauncherError(
          'EREADY',
          `query-status: expected {status: string}, saw ${JSON.stringify(status).slice(0, 80)}`,
          { step: 'qmp-ready' },
        );
      }
      handle.status = status.status;
      return qmp;
    };
    let qmp: QmpClient | null = null;
    for (let attempt = 1; qmp === null; attempt++) {
      try {
        qmp = await session();
      } catch (e) {
        if (!alive(dm.pid, handle.startTime)) throw await dmGone(e, dm);
        const retry =
          e instanceof LauncherError &&
          QMP_RETRIED.has(e.code) &&
          e.step !== 'qmp-greeting' &&
          attempt < QMP_SESSIONS &&
          left() > 0;
        if (!retry) throw e;
        handle.qmp?.close();
        handle.qmp = null;
        enter('qmp-connect');
      }
    }
    enter('seal-jail');
    if (p.mode === 'jail') sealJail(p, dm.pid);
    const r = statSync(`/proc/${dm.pid}/root`);
    handle.root = { dev: r.dev, ino: r.ino };
    enter('running');
    record({ phase: 'running', pid: dm.pid, startTime: handle.startTime, root: handle.root });
    if (deps.destroyOnQmpFailure !== false) {
      qmp.onFailure((e) => {
        if (inFlight.has(handle)) return;
        handle.condemned = e;
        handle.destroyed = destroy(handle, { ...deps, beforeStep: undefined }).catch(
          () => undefined,
        );
      });
    }
    return handle;
  } catch (e) {
    server?.close();
    for (const fd of fds) closeSync(fd);
    const code = e instanceof LauncherError ? e.code : 'ESPAWN';
    const err = new LauncherError(
      code,
      `launch of domid ${p.domid} failed at ${current}: ${(e as Error).message}${logTail(p.paths.log)}`,
      { step: current, cause: e },
    );
    await destroy(handle, { ...deps, beforeStep: undefined }).catch(() => undefined);
    throw err;
  }
}

export interface DestroyTarget {
  readonly plan: LaunchPlan;
  readonly pid: number | null;
  readonly startTime: number | null;
  readonly qmp?: QmpClient | null;
  readonly lease: unknown;
  /** Signals exactly the DM (its pidfd) when the caller still holds it. */
  readonly signal?: ((signal: 'SIGTERM' | 'SIGKILL') => void) | undefined;
}

function sendSignal(target: DestroyTarget, pid: number, signal: 'SIGTERM' | 'SIGKILL'): void {
  if (target.signal) {
    target.signal(signal);
    return;
  }
  try {
    process.kill(pid, signal);
  } catch {
    // Gone.
  }
}

/**
 * Takes a DM down so that nothing is left: QMP `quit` → SIGTERM → SIGKILL → reap the uid →
 * verify it is empty → release the lease → remove jail, sockets and the state record. Every step
 * is idempotent, so a second destroy, or one after the launcher crashed, finishes the job.
 */
export function destroy(target: DestroyTarget, deps: LauncherDeps = {}): Promise<void> {
  // One teardown per target at a time: QEMU leaving on `quit` closes its QMP socket, which would
  // otherwise condemn the DM and start a second, racing destroy.
  const running = inFlight.get(target);
  if (running) return running;
  const done = destroyOnce(target, deps).finally(() => inFlight.delete(target));
  inFlight.set(target, done);
  return done;
}

const inFlight = new WeakMap<DestroyTarget, Promise<void>>();

async function destroyOnce(target: DestroyTarget, deps: LauncherDeps): Promise<void> {
  const p = target.plan;
  const uids = deps.uids ?? procUidOps;
  const step = (s: DestroyStep) => deps.beforeStep?.(s);
  const quitMs = deps.quitTimeoutMs ?? 2_000;
  const pid = target.pid !== null && target.pid > 0 ? target.pid : null;

  step('mark-destroying');
  if (existsSync(p.paths.state)) {
    writeRecord({
      version: 1,
      domid: p.domid,
      phase: 'destroying',
      plan: p,
      lease: target.lease,
      pid,
      startTime: target.startTime,
      root: null,
    });
  }
  step('qmp-quit');
  const qmp = target.qmp ?? null;
  if (qmp && qmp.failure === null && pid !== null && alive(pid, target.startTime)) {
    await qmp.execute('quit', undefined, { timeoutMs: quitMs }).catch(() => undefined);
    await waitGone(pid, target.startTime, quitMs);
  }
  qmp?.close();
  step('sigterm');
  if (pid !== null && alive(pid, target.startTime)) {
    sendSignal(target, pid, 'SIGTERM');
    await waitGone(pid, target.startTime, quitMs);
  }
  step('sigkill');
  if (pid !== null && alive(pid, target.startTime)) {
    sendSignal(target, pid, 'SIGKILL');
    await waitGone(pid, target.startTime, quitMs);
  }
  step('reap');
  const provedEmpty = await uids.reap(p.uid, target.lease);
  step('verify-empty');
  if (!provedEmpty && !(await uids.verifyEmpty(p.uid))) {
    throw new LauncherError(
      'EDESTROY',
      `uid ${p.uid}: expected no process after the reaper, saw some`,
      {
        step: 'verify-empty',
      },
    );
  }
  // Before the release: the DM's /run is owned by its uid, and release verifies the uid owns nothing.
  step('remove-jail');
  const base = posix.dirname(p.paths.jail);
  if (existsSync(base)) {
    // Jail mounts live only in the DM's mount namespace, gone with it: this is a plain tree.
    const st = lstatSync(base);
    if (st.isDirectory()) rmSync(base, { recursive: true, force: true });
  }
  step('release-lease');
  if (target.lease !== null && target.lease !== undefined) await uids.release(target.lease);
  step('remove-state');
  removeRecord(p.paths.state);
}

export interface RecoverResult {
  /** Domids whose half-done launch or destroy was finished (everything removed). */
  readonly finished: readonly number[];
  /** DMs that were running and still are; a toolstack may adopt them. */
  readonly running: readonly LaunchRecord[];
  readonly errors: readonly { readonly domid: number; readonly error: Error }[];
}

/** Finds launches and destroys a crashed launcher left half done, and finishes them. */
export async function recover(stateDir: string, deps: LauncherDeps = {}): Promise<RecoverResult> {
  const finished: number[] = [];
  const running: LaunchRecord[] = [];
  const errors: { domid: number; error: Error }[] = [];
  for (const path of listRecords(stateDir)) {
    let r: LaunchRecord;
    try {
      r = readRecord(path);
    } catch (e) {
      errors.push({ domid: -1, error: e as Error });
      continue;
    }
    if (r.phase === 'running' && r.pid !== null && alive(r.pid, r.startTime)) {
      running.push(r);
      continue;
    }
    try {
      await destroy(
        { plan: r.plan, pid: r.pid, startTime: r.startTime, lease: r.lease },
        { ...deps, beforeStep: undefined },
      );
      finished.push(r.domid);
    } catch (e) {
      errors.push({ domid: r.domid, error: e as Error });
    }
  }
  return { finished, running, errors };
}

export interface LaunchManyItem {
  readonly plan: LaunchPlan;
  readonly deps?: LauncherDeps;
}

export interface LaunchManyResult {
  readonly handles: readonly (DmHandle | null)[];
  readonly errors: readonly (Error | null)[];
  /** Milliseconds from start to ready, per item (null when it failed). */
  readonly latencies: readonly (number | null)[];
}

export type LaunchProgress =
  | { readonly type: 'start'; readonly index: number; readonly domid: number }
  | { readonly type: 'ready'; readonly index: number; readonly domid: number; readonly ms: number }
  | {
      readonly type: 'failed';
      readonly index: number;
      readonly domid: number;
      readonly error: Error;
    };

/** Bounded parallel launches (a boot storm), with progress events. */
export async function launchMany(
  items: readonly LaunchManyItem[],
  options: {
    readonly concurrency: number;
    readonly progress?: EventEmitter | ((e: LaunchProgress) => void);
  } & LauncherDeps,
): Promise<LaunchManyResult> {
  const { concurrency, progress, ...deps } = options;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new LauncherError('EPLAN', `concurrency: expected an integer >= 1, saw ${concurrency}`);
  }
  const emit = (e: LaunchProgress) => {
    if (progress instanceof EventEmitter) progress.emit(e.type, e);
    else progress?.(e);
  };
  const handles: (DmHandle | null)[] = items.map(() => null);
  const errors: (Error | null)[] = items.map(() => null);
  const latencies: (number | null)[] = items.map(() => null);
  const limit = pLimit(concurrency);
  await Promise.all(
    items.map((item, i) =>
      limit(async () => {
        const t0 = performance.now();
        emit({ type: 'start', index: i, domid: item.plan.domid });
        try {
          handles[i] = await launch(item.plan, { ...deps, ...item.deps });
          const ms = performance.now() - t0;
          latencies[i] = ms;
          emit({ type: 'ready', index: i, domid: item.plan.domid, ms });
        } catch (e) {
          errors[i] = e as Error;
          emit({ type: 'failed', index: i, domid: item.plan.domid, error: e as Error });
        }
      }),
    ),
  );
  return { handles, errors, latencies };
}
