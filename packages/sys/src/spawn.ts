import { readFileSync } from 'node:fs';
import { array, bytes, fail, fd, id, int, path, record, str } from './check.js';
import { constants } from './constants.js';
import { binding, type NativeMount, type NativeSpawnSpec } from './native.js';

export type Namespace = 'mount' | 'ipc' | 'net' | 'uts' | 'pid';

/** A tmpfs mounted at `target` (nosuid; nodev unless `devices`). */
export interface TmpfsMount {
  type: 'tmpfs';
  target: string;
  /** Bytes; tmpfs's default (half of RAM) when absent. */
  size?: number;
  /** Mode of the tmpfs root directory, e.g. 0o755. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Allow device nodes in it (no MS_NODEV), for a /dev made with mknod entries. */
  devices?: boolean;
  noexec?: boolean;
}

/** A bind mount of `source` at `target`, read-only (and nosuid) unless `readOnly: false`. */
export interface BindMount {
  type: 'bind';
  source: string;
  target: string;
  readOnly?: boolean;
  /** MS_REC: bring the mounts below source along. Only the top mount is made read-only. */
  recursive?: boolean;
}

/** A device node at `path` with an exact mode and owner. */
export interface MknodMount {
  type: 'mknod';
  path: string;
  kind: 'char' | 'block';
  major: number;
  minor: number;
  /** Permission bits, e.g. 0o600 (applied exactly, not through the umask). */
  mode: number;
  uid: number;
  gid: number;
}

export type MountSpec = TmpfsMount | BindMount | MknodMount;

export interface RlimitSpec {
  /** constants.RLIMIT_* or its name ('RLIMIT_NOFILE'). */
  resource: number | string;
  soft: number | 'unlimited';
  hard: number | 'unlimited';
}

/**
 * What spawnConfined runs, and how it is confined. The child applies, in order: setsid;
 * fds (each `source` moved to `target`, every other fd closed); env (exactly `env`);
 * chdir (`cwd`); unshare (`namespaces`; 'pid' is applied at clone time, the child is pid 1);
 * loopback (`loopbackUp`);
 * mounts (everything made private first, then each entry in order); pivot_root or chroot
 * into `root` (then `cwd` is resolved inside it); setrlimit; capbset; setgroups; setresgid;
 * setresuid; no_new_privs; seccomp; execve.
 */
export interface SpawnSpec {
  /** Path of the binary, resolved after the root change; no PATH search. */
  file: string;
  argv: readonly string[];
  env: Readonly<Record<string, string>>;
  cwd?: string;
  fds?: readonly { target: number; source: number }[];
  namespaces?: readonly Namespace[];
  /**
   * Bring `lo` up in the child's new network namespace (step 'loopback', right after unshare):
   * a loopback listener there is reachable from sockets made in that namespace only
   * (`netnsConnect`). Requires the 'net' namespace; default false.
   */
  loopbackUp?: boolean;
  /** Host paths (the root change comes after). Requires the 'mount' namespace. */
  mounts?: readonly MountSpec[];
  /** 'pivot_root' requires the 'mount' namespace; the old root is detached. */
  root?: { path: string; mode: 'pivot_root' | 'chroot' };
  rlimits?: readonly RlimitSpec[];
  /** uid and gid go together (a uid drop that kept gid 0 is refused). */
  uid?: number;
  gid?: number;
  /** Supplementary groups; defaults to none when uid or gid is given. */
  groups?: readonly number[];
  /**
   * Empty the capability bounding set (PR_CAPBSET_DROP of every capability up to
   * /proc/sys/kernel/cap_last_cap), step 'capbset', before the uid drop; default false.
   */
  dropCapabilityBoundingSet?: boolean;
  /** PR_SET_NO_NEW_PRIVS; default true. */
  noNewPrivs?: boolean;
  /** Classic BPF program: 8-byte struct sock_filter entries, 1 to 4096 of them. */
  seccomp?: Uint8Array;
}

const MS_NOSUID = 2;
const MS_NODEV = 4;
const MS_NOEXEC = 8;
const MS_RDONLY = 1;
const MS_REMOUNT = 32;
const MS_BIND = 4096;
const MS_REC = 16384;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

const namespaceFlags: Record<Namespace, number> = {
  mount: constants.CLONE_NEWNS,
  ipc: constants.CLONE_NEWIPC,
  net: constants.CLONE_NEWNET,
  uts: constants.CLONE_NEWUTS,
  pid: 0,
};

const MAX_FD_TARGET = 65535;
const SOCK_FILTER_SIZE = 8;
const BPF_MAXINSNS = 4096;

function opt<T>(value: T | undefined, f: (v: T) => void): void {
  if (value !== undefined) f(value);
}

function mountOf(m: unknown, i: number): NativeMount {
  const where = `spawnConfined mounts[${i}]`;
  const e = record(where, m);
  const base: NativeMount = {
    kind: 0,
    source: undefined,
    target: '',
    data: undefined,
    flags: 0,
    remountFlags: 0,
    mode: 0,
    major: 0,
    minor: 0,
    uid: 0,
    gid: 0,
  };
  switch (e.type) {
    case 'tmpfs': {
      const options: string[] = [];
      opt(e.size, (v) =>
        options.push(`size=${int(`${where}.size`, v, 1, Number.MAX_SAFE_INTEGER)}`),
      );
      opt(e.mode, (v) => options.push(`mode=${int(`${where}.mode`, v, 0, 0o7777).toString(8)}`));
      opt(e.uid, (v) => options.push(`uid=${id(`${where}.uid`, v)}`));
      opt(e.gid, (v) => options.push(`gid=${id(`${where}.gid`, v)}`));
      const flags =
        MS_NOSUID | (e.devices === true ? 0 : MS_NODEV) | (e.noexec === true ? MS_NOEXEC : 0);
      return {
        ...base,
        kind: 0,
        target: path(`${where}.target`, e.target),
        data: options.join(','),
        flags,
      };
    }
    case 'bind': {
      const readOnly = e.readOnly ?? true;
      if (typeof readOnly !== 'boolean') fail(`${where}.readOnly`, 'a boolean', readOnly);
      return {
        ...base,
        kind: 1,
        source: path(`${where}.source`, e.source),
        target: path(`${where}.target`, e.target),
        flags: MS_BIND | (e.recursive === true ? MS_REC : 0),
        remountFlags: readOnly ? MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID : 0,
      };
    }
    case 'mknod': {
      const kind = e.kind;
      if (kind !== 'char' && kind !== 'block') fail(`${where}.kind`, "'char' or 'block'", kind);
      return {
        ...base,
        kind: 2,
        target: path(`${where}.path`, e.path),
        mode: (kind === 'char' ? S_IFCHR : S_IFBLK) | int(`${where}.mode`, e.mode, 0, 0o7777),
        major: int(`${where}.major`, e.major, 0, 0xfff),
        minor: int(`${where}.minor`, e.minor, 0, 0xfffff),
        uid: id(`${where}.uid`, e.uid),
        gid: id(`${where}.gid`, e.gid),
      };
    }
    default:
      return fail(`${where}.type`, "'tmpfs', 'bind' or 'mknod'", e.type);
  }
}

/** CAP_LAST_CAP of the running kernel, which may know more capabilities than our headers. */
function capLastCap(): number {
  const text = readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim();
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 63) {
    throw new Error(`/proc/sys/kernel/cap_last_cap: expected an integer in [0, 63], got ${text}`);
  }
  return n;
}

function limit(what: string, v: unknown): number {
  return v === 'unlimited' ? -1 : int(what, v, 0, Number.MAX_SAFE_INTEGER);
}

/** Checks a SpawnSpec and turns it into the flat shape native/spawn.c reads. */
export function normalizeSpawnSpec(spec: SpawnSpec): {
  native: NativeSpawnSpec;
  pidNamespace: boolean;
} {
  const s = record('spawnConfined spec', spec);
  const file = str('spawnConfined file', s.file);
  if (file === '') fail('spawnConfined file', 'a non-empty path', file);
  const argv = array('spawnConfined argv', s.argv).map((a, i) =>
    str(`spawnConfined argv[${i}]`, a),
  );
  if (argv.length === 0) fail('spawnConfined argv', 'at least argv[0]', argv);
  const env = Object.entries(record('spawnConfined env', s.env)).map(([k, v]) => {
    if (k === '' || k.includes('=') || k.includes('\0'))
      fail('spawnConfined env key', "a name without '=' or NUL", k);
    return `${k}=${str(`spawnConfined env.${k}`, v)}`;
  });
  const cwd = s.cwd === undefined ? undefined : path('spawnConfined cwd', s.cwd);

  const fds: number[] = [];
  const targets = new Set<number>();
  for (const [i, entry] of array('spawnConfined fds', s.fds ?? []).entries()) {
    const e = record(`spawnConfined fds[${i}]`, entry);
    const target = int(`spawnConfined fds[${i}].target`, e.target, 0, MAX_FD_TARGET);
    if (targets.has(target))
      fail(`spawnConfined fds[${i}].target`, 'a target not already declared', target);
    targets.add(target);
    fds.push(target, fd(`spawnConfined fds[${i}].source`, e.source));
  }

  let unshareFlags = 0;
  let pidNamespace = false;
  const seen = new Set<string>();
  for (const [i, ns] of array('spawnConfined namespaces', s.namespaces ?? []).entries()) {
    if (typeof ns !== 'string' || !Object.hasOwn(namespaceFlags, ns)) {
      fail(`spawnConfined namespaces[${i}]`, "'mount', 'ipc', 'net', 'uts' or 'pid'", ns);
    }
    if (seen.has(ns)) fail(`spawnConfined namespaces[${i}]`, 'each namespace once', ns);
    seen.add(ns);
    if (ns === 'pid') pidNamespace = true;
    unshareFlags |= namespaceFlags[ns as Namespace];
  }
  const hasMountNs = seen.has('mount');
  const loopbackUp = s.loopbackUp ?? false;
  if (typeof loopbackUp !== 'boolean') fail('spawnConfined loopbackUp', 'a boolean', loopbackUp);
  if (loopbackUp && !seen.has('net')) {
    fail(
      'spawnConfined loopbackUp',
      "the 'net' namespace (lo up must not touch the host's)",
      'no net namespace',
    );
  }

  const mounts = array('spawnConfined mounts', s.mounts ?? []).map(mountOf);
  if (mounts.length > 0 && !hasMountNs) {
    fail(
      'spawnConfined mounts',
      "the 'mount' namespace (mounts must not touch the host)",
      'no mount namespace',
    );
  }

  let root: string | undefined;
  let rootMode = 0;
  if (s.root !== undefined) {
    const r = record('spawnConfined root', s.root);
    root = path('spawnConfined root.path', r.path);
    if (r.mode === 'pivot_root') {
      if (!hasMountNs)
        fail(
          'spawnConfined root.mode',
          "the 'mount' namespace for pivot_root",
          'no mount namespace',
        );
      rootMode = 1;
    } else if (r.mode === 'chroot') {
      rootMode = 2;
    } else {
      fail('spawnConfined root.mode', "'pivot_root' or 'chroot'", r.mode);
    }
  }

  const rlimits: number[] = [];
  for (const [i, entry] of array('spawnConfined rlimits', s.rlimits ?? []).entries()) {
    const e = record(`spawnConfined rlimits[${i}]`, entry);
    const res = e.resource;
    const resource =
      typeof res === 'string' && res.startsWith('RLIMIT_') && constants[res] !== undefined
        ? constants[res]
        : int(`spawnConfined rlimits[${i}].resource`, res, 0, 15);
    const soft = limit(`spawnConfined rlimits[${i}].soft`, e.soft);
    const hard = limit(`spawnConfined rlimits[${i}].hard`, e.hard);
    if (hard !== -1 && (soft === -1 || soft > hard)) {
      fail(`spawnConfined rlimits[${i}].soft`, `at most the hard limit ${hard}`, e.soft);
    }
    rlimits.push(resource, soft, hard);
  }

  const uid = s.uid === undefined ? -1 : id('spawnConfined uid', s.uid);
  const gid = s.gid === undefined ? -1 : id('spawnConfined gid', s.gid);
  // A uid drop that kept gid 0 (or a gid change that kept uid 0) is almost always a mistake.
  if ((uid === -1) !== (gid === -1)) {
    fail(
      'spawnConfined gid',
      'uid and gid given together',
      uid === -1 ? 'gid without uid' : 'uid without gid',
    );
  }
  let groups: number[] | undefined;
  if (s.groups !== undefined) {
    groups = array('spawnConfined groups', s.groups).map((g, i) =>
      id(`spawnConfined groups[${i}]`, g),
    );
  } else if (uid !== -1 || gid !== -1) {
    groups = [];
  }
  const noNewPrivs = s.noNewPrivs ?? true;
  if (typeof noNewPrivs !== 'boolean') fail('spawnConfined noNewPrivs', 'a boolean', noNewPrivs);
  const dropBounding = s.dropCapabilityBoundingSet ?? false;
  if (typeof dropBounding !== 'boolean') {
    fail('spawnConfined dropCapabilityBoundingSet', 'a boolean', dropBounding);
  }
  const capLast = dropBounding ? capLastCap() : -1;
  let seccomp: Uint8Array | undefined;
  if (s.seccomp !== undefined) {
    seccomp = bytes('spawnConfined seccomp', s.seccomp);
    const n = seccomp.length / SOCK_FILTER_SIZE;
    if (!Number.isInteger(n) || n < 1 || n > BPF_MAXINSNS) {
      fail(
        'spawnConfined seccomp',
        `1 to ${BPF_MAXINSNS} 8-byte sock_filter entries`,
        `${seccomp.length} bytes`,
      );
    }
  }
  return {
    native: {
      file,
      argv,
      env,
      cwd,
      fds,
      unshareFlags,
      loopbackUp,
      mounts,
      root,
      rootMode,
      rlimits,
      uid,
      gid,
      groups,
      noNewPrivs,
      capLast,
      seccomp,
    },
    pidNamespace,
  };
}

/**
 * Starts `spec.file` confined as `spec` says (see SpawnSpec for the steps and their order).
 * Returns once the child has executed the binary, or throws SpawnError naming the failed
 * step (the binary never ran; the child is already reaped). The caller owns `pidfd` and
 * reaps the child with waitPid.
 */
export function spawnConfined(spec: SpawnSpec): { pid: number; pidfd: number } {
  const { native, pidNamespace } = normalizeSpawnSpec(spec);
  return binding().spawnConfined(native, pidNamespace);
}

/**
 * spawnConfined without blocking the event loop: the spec is checked and copied here, and
 * the clone and the wait for the child's execve (or its failure report) run on the libuv
 * thread pool. Settles exactly as spawnConfined returns or throws: the same checks (as
 * rejections), the same SpawnError with step and errno. The fd sources in `spec.fds` are
 * duplicated before this returns, so the caller may close its own copies at once. The
 * caller owns `pidfd` and reaps the child (see watchPidfd and waitPid).
 */
export async function spawnConfinedAsync(spec: SpawnSpec): Promise<{ pid: number; pidfd: number }> {
  const { native, pidNamespace } = normalizeSpawnSpec(spec);
  return binding().spawnConfinedAsync(native, pidNamespace);
}
