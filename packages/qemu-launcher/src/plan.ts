import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { LauncherError } from './errors.js';
import type { QemuCaps } from './probe.js';

export type LaunchMode = 'jail' | 'libxl-compat';
export type Namespace = 'mount' | 'ipc' | 'net' | 'uts' | 'pid';
export type RlimitName =
  | 'FSIZE'
  | 'CORE'
  | 'MSGQUEUE'
  | 'LOCKS'
  | 'MEMLOCK'
  | 'NPROC'
  | 'NOFILE'
  | 'AS';

/** A character device the DM gets in its private `/dev`. */
export interface DeviceNode {
  /** Absolute path inside the jail, under `/dev`. */
  readonly path: string;
  readonly major: number;
  readonly minor: number;
  readonly mode: number;
  /**
   * Removed from the jail once the DM is ready: Xen's QEMU restricts only the handles it holds
   * at the end of its init, so a handle opened later would not be restricted.
   */
  readonly removeAfterReady: boolean;
}

/** What the toolstack wants run; everything else comes from caps, lease and policy. */
export interface LaunchConfig {
  readonly domid: number;
  readonly binary: string;
  /** Defaults to `jail`; `libxl-compat` lets QEMU start as root and drop itself. */
  readonly mode?: LaunchMode;
  /** Run as Xen's device model (`-xen-domid`, `-xen-domid-restrict`, `/dev/xen/*`). */
  readonly xen?: boolean;
  /** Machine type; `xenfv` with `xen`, `none` otherwise. */
  readonly machine?: string;
  /** Device-model arguments the toolstack adds after the launcher's own. */
  readonly args?: readonly string[];
  /** Root-only directory holding jails, sockets, logs and launch state. */
  readonly stateDir: string;
  /** Extra device nodes; with `xen` the `/dev/xen/*` defaults come from `xenDevices`. */
  readonly devices?: readonly DeviceNode[];
  /** Host path of the DM's restricting xenstore proxy socket, bound at `/run/xenstored/socket`. */
  readonly xenstoreSocket?: string;
  readonly name?: string;
  /** Descriptors the caller passes at launch (after 0..3), by name. */
  readonly passedFds?: readonly PassedFd[];
  /**
   * Ways in from the host to what the DM serves: a unix socket in its `/run` (`socket`, a file
   * name under paths.run) or a TCP port on its own loopback (`loopback`; the plan then brings
   * `lo` up in its network namespace). `console: 'pty'`: the host side is a pty the executor
   * makes (a serial line), not a listener.
   */
  readonly bridges?: readonly {
    readonly name: string;
    readonly listen: PlannedBridge['listen'];
    readonly socket?: string;
    readonly loopback?: { readonly host: string; readonly port: number };
    readonly console?: 'pty';
  }[];
}

/** The uid/gid a DM runs as, from `uid-allocator`'s lease. */
export interface LeaseLike {
  readonly uid: number;
  readonly gid: number;
  readonly groups?: readonly number[];
}

export interface SeccompProgram {
  /** Where the program came from (e.g. privcmd-filter's profile name), for the printed plan. */
  readonly profile: string;
  /** Classic BPF, 8 bytes per instruction, as `seccomp(SECCOMP_SET_MODE_FILTER)` takes it. */
  readonly program: Uint8Array;
}

export interface LaunchPolicy {
  readonly seccomp?: SeccompProgram | null;
  readonly rlimits?: Partial<Record<RlimitName, number>>;
  /** `auto` adds QEMU's own `-sandbox` where the binary has it. */
  readonly sandbox?: 'auto' | 'off';
  readonly namespaces?: readonly Namespace[];
  readonly env?: Readonly<Record<string, string>>;
  /**
   * How a jail-mode DM enters its private root: `pivot_root` (default), or `chroot` inside its
   * own mount namespace where pivot_root(2) is EINVAL (a host whose root is the initial ramfs,
   * as in a dom0 booted from an initramfs; see `hostRootIsRamfs`). The DM holds no
   * CAP_SYS_CHROOT to leave it either way.
   */
  readonly rootEntry?: 'pivot_root' | 'chroot';
}

export interface PlannedRlimit {
  readonly resource: RlimitName;
  readonly soft: number;
  readonly hard: number;
}

/**
 * What the launcher creates on the host before spawn, relative to the jail directory, owned by
 * root: mount points, placeholder files for bind mounts, and the merged-/usr symlinks.
 */
export type JailEntry =
  | { readonly kind: 'dir' | 'file'; readonly path: string; readonly mode: number }
  | { readonly kind: 'symlink'; readonly path: string; readonly linkTo: string };

/**
 * One mount made in the DM's own mount namespace before pivot_root, in order; host paths, in
 * the shape `@xen-depriv/sys`'s `spawnConfined` takes.
 */
export type JailMount =
  | {
      readonly type: 'bind';
      readonly source: string;
      readonly target: string;
      readonly readOnly: boolean;
    }
  | {
      readonly type: 'tmpfs';
      readonly target: string;
      readonly mode: number;
      readonly size: number;
      readonly devices: boolean;
    }
  | {
      readonly type: 'mknod';
      readonly path: string;
      readonly kind: 'char';
      readonly major: number;
      readonly minor: number;
      readonly mode: number;
      readonly uid: number;
      readonly gid: number;
    };

/**
 * Where a descriptor comes from: one the launcher opens (`devnull`, `log`, `qmp-listener`), or
 * one the caller passes by name (`passed:NAME`, e.g. libxl's pre-opened QMP listener).
 */
export type FdSource = 'devnull' | 'log' | 'qmp-listener' | `passed:${string}`;

/** Which descriptor the launcher puts at `target` in the DM. */
export interface PlannedFd {
  readonly target: number;
  readonly source: FdSource;
  /** What the DM finds there (checked by verifyConfinement). */
  readonly kind: 'file' | 'socket' | 'tap';
  readonly open?: PassedFd['open'];
  readonly tap?: PassedFd['tap'];
}

/** A descriptor the caller hands the DM besides the launcher's own (LaunchConfig.passedFds). */
export interface PassedFd {
  readonly target: number;
  /** The key of the descriptor in `launch`'s `passedFds`. */
  readonly name: string;
  readonly kind: 'file' | 'socket' | 'tap';
  /** What the executor opens as root for it: a host file (disk image), read-only or not. */
  readonly open?: { readonly path: string; readonly readOnly: boolean };
  /** Or the tap device it creates in the host's network namespace (libxl's `vifN.I-emu`). */
  readonly tap?: { readonly ifname: string; readonly bridge: string | null };
}

/**
 * A way in from the host to something the DM serves (its VNC server, a serial line): the
 * executor listens on `listen` (or, with `console: 'pty'`, makes a pty in the host) and joins
 * each client to `unix` (a host path under the DM's run directory) or to `loopback`, a TCP
 * port on the DM's own loopback, reached by a socket made in its network namespace.
 */
export interface PlannedBridge {
  readonly name: string;
  readonly listen: { readonly host: string; readonly port: number } | null;
  readonly unix: string | null;
  readonly loopback?: { readonly host: string; readonly port: number };
  readonly console?: 'pty';
}

export interface LaunchPlan {
  readonly version: 1;
  readonly domid: number;
  readonly mode: LaunchMode;
  readonly xen: boolean;
  readonly binary: string;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly fds: readonly PlannedFd[];
  readonly rlimits: readonly PlannedRlimit[];
  readonly namespaces: readonly Namespace[];
  readonly uid: number;
  readonly gid: number;
  readonly groups: readonly number[];
  /** Uid/gid the process has at exec: the DM's in `jail`, root in `libxl-compat`. */
  readonly execUid: number;
  readonly execGid: number;
  readonly noNewPrivs: boolean;
  /**
   * `empty`: the launcher clears the bounding set before exec, so not even a setuid binary
   * could hand the DM a capability; `inherit` where QEMU starts as root and drops itself.
   */
  readonly capabilityBoundingSet: 'empty' | 'inherit';
  readonly seccomp: SeccompProgram | null;
  /** The `-sandbox` value given to QEMU, or null when the binary lacks it or policy says off. */
  readonly qemuSandbox: string | null;
  readonly paths: {
    /** Host directory the jail's tmpfs is mounted on (jail) or QEMU chroots to (libxl-compat). */
    readonly jail: string;
    /** Host directory that is the DM's own writable `/run` (jail) or holds its sockets (compat). */
    readonly run: string;
    readonly qmpSocket: string;
    readonly log: string;
    readonly state: string;
  };
  /** How the root is entered: by the launcher (pivot_root or chroot) or by QEMU itself (`-chroot`). */
  readonly root: { readonly path: string; readonly how: 'pivot_root' | 'chroot' | 'qemu-chroot' };
  /** Made on the host by the launcher (jail mode). */
  readonly skeleton: readonly JailEntry[];
  /** Made in the DM's mount namespace (jail mode). */
  readonly mounts: readonly JailMount[];
  readonly devices: readonly DeviceNode[];
  /** Paths inside the DM's root removed once it is ready. */
  readonly removeAfterReady: readonly string[];
  /** Ways in from the host to the DM's own sockets (VNC, serial), kept while it runs. */
  readonly bridges: readonly PlannedBridge[];
  /** `lo` is up in the DM's own network namespace (a bridge reaches a port on it). */
  readonly loopbackUp?: boolean;
  /** Top-level entries the DM's root may contain (checked by verifyConfinement). */
  readonly rootEntries: readonly string[];
  readonly steps: readonly string[];
}

/** libxl's rlimits (libxl_linux.c) plus the NPROC, NOFILE and AS limits its design lists as TODO. */
export const DEFAULT_RLIMITS: Readonly<Record<RlimitName, number>> = {
  FSIZE: 256 * 1024,
  CORE: 0,
  MSGQUEUE: 0,
  LOCKS: 0,
  MEMLOCK: 0,
  NPROC: 256,
  NOFILE: 4096,
  AS: 16 * 2 ** 30,
};

/** Xen's mapcache sizes itself to the AS hard limit; 64 GiB is its own 64-bit maximum. */
const XEN_MAPCACHE_BYTES = 2 ** 36;

export const DEFAULT_NAMESPACES: readonly Namespace[] = ['mount', 'ipc', 'net', 'uts'];

/**
 * QEMU's own filter; `elevateprivileges=deny` traps set*uid, so it cannot be combined with
 * `-runas` (QEMU 7.2 installs the filter before it drops privileges).
 */
export const SANDBOX_JAIL =
  'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';
export const SANDBOX_COMPAT = 'on,obsolete=deny,spawn=deny,resourcecontrol=deny';

/** `/dev/xen` nodes Xen's QEMU opens; their misc minors are dynamic, so the caller supplies them. */
export function xenDevices(
  numbers: Readonly<
    Record<'privcmd' | 'evtchn' | 'gntdev' | 'xenbus', { major: number; minor: number }>
  >,
): DeviceNode[] {
  return (['privcmd', 'evtchn', 'gntdev', 'xenbus'] as const).map((n) => ({
    path: `/dev/xen/${n}`,
    major: numbers[n].major,
    minor: numbers[n].minor,
    mode: 0o600,
    removeAfterReady: true,
  }));
}

/** Nodes every DM gets (Linux's fixed mem-device numbers). */
export const BASE_DEVICES: readonly DeviceNode[] = [
  { path: '/dev/null', major: 1, minor: 3, mode: 0o666, removeAfterReady: false },
  { path: '/dev/zero', major: 1, minor: 5, mode: 0o666, removeAfterReady: false },
  { path: '/dev/urandom', major: 1, minor: 9, mode: 0o444, removeAfterReady: false },
];

export const QMP_FD = 3;
const JAIL_XENSTORE_SOCKET = '/run/xenstored/socket';

const LAUNCH_STEPS = [
  'record-state',
  'prepare-dirs',
  'qmp-listen',
  'spawn',
  'qmp-connect',
  'qmp-ready',
  'seal-jail',
  'running',
] as const;

function fail(message: string): never {
  throw new LauncherError('EPLAN', message, { step: 'plan' });
}

const isAbs = (p: string): boolean => posix.isAbsolute(p) && posix.normalize(p) === p;

/**
 * Everything a launch will do, as a value: no file is touched, nothing is spawned. The same
 * inputs give the same plan, so plans are printable (`--dry-run`), diffable and snapshot-tested.
 */
export function plan(
  config: LaunchConfig,
  caps: QemuCaps,
  lease: LeaseLike,
  policy: LaunchPolicy = {},
): LaunchPlan {
  const { domid } = config;
  if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) {
    fail(`domid: expected an integer in [0, 0x7ff0), saw ${domid}`);
  }
  if (!isAbs(config.binary))
    fail(`binary: expected a normalized absolute path, saw "${config.binary}"`);
  if (config.binary !== caps.binary) {
    fail(`binary: caps were probed for "${caps.binary}", config names "${config.binary}"`);
  }
  if (!isAbs(config.stateDir))
    fail(`stateDir: expected a normalized absolute path, saw "${config.stateDir}"`);
  for (const [what, id] of [
    ['uid', lease.uid],
    ['gid', lease.gid],
  ] as const) {
    if (!Number.isInteger(id) || id <= 0 || id >= 0xffffffff) {
      fail(`lease.${what}: expected a non-root id in [1, 2^32-1), saw ${id}`);
    }
  }
  const groups = [...(lease.groups ?? [])];
  if (groups.includes(0)) fail('lease.groups: expected no group 0, saw 0');

  const xen = config.xen ?? false;
  const mode = config.mode ?? 'jail';
  if (xen && !(caps.flags.xenDomid && caps.flags.xenDomidRestrict)) {
    fail(
      `${caps.binary}: xen launch needs -xen-domid and -xen-domid-restrict, the probe found neither`,
    );
  }
  if (mode === 'libxl-compat' && !(caps.flags.runas && caps.flags.chroot) && !caps.flags.runWith) {
    fail(
      `${caps.binary}: libxl-compat needs -runas and -chroot or -run-with, the probe found none`,
    );
  }
  const machine = config.machine ?? (xen ? 'xenfv' : 'none');
  if (!caps.machines.includes(machine)) {
    fail(`machine: expected one of ${caps.binary}'s machines, saw "${machine}"`);
  }

  const devices: DeviceNode[] = [...BASE_DEVICES, ...(config.devices ?? [])];
  const seen = new Set<string>();
  for (const d of devices) {
    if (!isAbs(d.path) || !d.path.startsWith('/dev/')) {
      fail(`device: expected a normalized path under /dev/, saw "${d.path}"`);
    }
    if (seen.has(d.path)) fail(`device: "${d.path}" is listed twice`);
    seen.add(d.path);
  }
  const passed = config.passedFds ?? [];
  for (const f of passed) {
    if (!Number.isInteger(f.target) || f.target <= QMP_FD || f.target > 255) {
      fail(`passedFds: expected a target descriptor in [${QMP_FD + 1}, 255], saw ${f.target}`);
    }
    if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(f.name)) {
      fail(`passedFds: expected a name of a-z, 0-9 and -, saw "${f.name}"`);
    }
  }
  for (const b of config.bridges ?? []) {
    if ((b.socket === undefined) === (b.loopback === undefined)) {
      fail(`bridges: ${b.name}: expected a socket or a loopback port, exactly one`);
    }
    if (b.socket !== undefined && !/^[a-z0-9][a-z0-9.-]{0,31}$/.test(b.socket)) {
      fail(`bridges: expected a socket file name in the DM's /run, saw "${b.socket}"`);
    }
    if (b.loopback !== undefined && !(policy.namespaces ?? DEFAULT_NAMESPACES).includes('net')) {
      fail(`bridges: ${b.name}: a loopback port needs the DM's own network namespace`);
    }
  }
  if (new Set(passed.map((f) => f.target)).size !== passed.length) {
    fail('passedFds: two descriptors at the same target');
  }
  if (config.xenstoreSocket !== undefined && !isAbs(config.xenstoreSocket)) {
    fail(`xenstoreSocket: expected a normalized absolute path, saw "${config.xenstoreSocket}"`);
  }

  const base = posix.join(config.stateDir, `dm-${domid}`);
  const paths = {
    jail: posix.join(base, 'root'),
    run: posix.join(base, 'run'),
    qmpSocket: posix.join(base, 'run', 'qmp.sock'),
    log: posix.join(base, 'qemu.log'),
    state: posix.join(config.stateDir, 'state', `dm-${domid}.json`),
  };

  const limits = {
    ...DEFAULT_RLIMITS,
    ...(xen ? { AS: DEFAULT_RLIMITS.AS + XEN_MAPCACHE_BYTES } : {}),
    ...policy.rlimits,
  };
  const rlimits: PlannedRlimit[] = (Object.keys(DEFAULT_RLIMITS) as RlimitName[]).map(
    (resource) => {
      const v = limits[resource];
      if (!Number.isSafeInteger(v) || v < 0)
        fail(`rlimit ${resource}: expected a non-negative integer, saw ${v}`);
      return { resource, soft: v, hard: v };
    },
  );

  const qemuSandbox =
    policy.sandbox === 'off' || !caps.flags.sandbox
      ? null
      : mode === 'jail'
        ? SANDBOX_JAIL
        : SANDBOX_COMPAT;

  const skeleton: JailEntry[] = [];
  const mounts: JailMount[] = [];
  const rootEntries: string[] = [];
  const removeAfterReady: string[] = [];
  const name = config.name ?? `dm-${domid}`;
  const argv: string[] = [config.binary];
  if (xen) argv.push('-xen-domid', String(domid), '-no-shutdown');
  argv.push(
    '-chardev',
    `socket,id=qmp,fd=${QMP_FD},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
    '-nodefaults',
    '-no-user-config',
    '-name',
    name,
    '-display',
    'none',
    '-machine',
    machine,
  );
  if (!xen) argv.push(...caps.probeArgs);
  if (xen) argv.push('-xen-domid-restrict');
  if (qemuSandbox !== null) argv.push('-sandbox', qemuSandbox);

  if (mode === 'jail') {
    const j = (x: string) => posix.join(paths.jail, x);
    // The root itself: bound onto itself read-only, which also makes it the mount point pivot_root needs.
    mounts.push({ type: 'bind', source: paths.jail, target: paths.jail, readOnly: true });
    for (const e of caps.hostRoot) {
      rootEntries.push(e.path.slice(1));
      if (e.kind === 'dir') {
        skeleton.push({ kind: 'dir', path: e.path, mode: 0o755 });
        mounts.push({ type: 'bind', source: e.path, target: j(e.path), readOnly: true });
      } else {
        skeleton.push({ kind: 'symlink', path: e.path, linkTo: e.target });
      }
    }
    rootEntries.push('dev', 'run');
    skeleton.push({ kind: 'dir', path: '/dev', mode: 0o755 });
    const dirs: string[] = [];
    for (const d of devices) {
      const dir = posix.dirname(d.path);
      if (dir === '/dev') {
        // Fixed-number nodes in /dev itself are the host's, bound read-only onto placeholders.
        skeleton.push({ kind: 'file', path: d.path, mode: 0o600 });
        mounts.push({ type: 'bind', source: d.path, target: j(d.path), readOnly: true });
      } else if (!dirs.includes(dir)) {
        dirs.push(dir);
      }
      if (d.removeAfterReady) removeAfterReady.push(d.path);
    }
    for (const dir of dirs) {
      if (posix.dirname(dir) !== '/dev')
        fail(`device: expected at most one directory below /dev, saw "${dir}"`);
      // A tmpfs of its own, so that nodes made in it are the DM's and can be removed after ready.
      skeleton.push({ kind: 'dir', path: dir, mode: 0o755 });
      mounts.push({ type: 'tmpfs', target: j(dir), mode: 0o755, size: 65536, devices: true });
      for (const d of devices.filter((x) => posix.dirname(x.path) === dir)) {
        mounts.push({
          type: 'mknod',
          path: j(d.path),
          kind: 'char',
          major: d.major,
          minor: d.minor,
          mode: d.mode,
          uid: lease.uid,
          gid: lease.gid,
        });
      }
    }
    skeleton.push({ kind: 'dir', path: '/run', mode: 0o755 });
    mounts.push({ type: 'bind', source: paths.run, target: j('/run'), readOnly: false });
    if (config.xenstoreSocket !== undefined) {
      mounts.push({
        type: 'bind',
        source: config.xenstoreSocket,
        target: j(JAIL_XENSTORE_SOCKET),
        readOnly: false,
      });
    }
  } else {
    // libxl's dm_restrict: QEMU chroots itself into an empty directory and drops to the lease.
    if (caps.flags.runas && caps.flags.chroot) {
      argv.push('-runas', `${lease.uid}:${lease.gid}`, '-chroot', paths.jail);
    } else {
      argv.push('-run-with', `chroot=${paths.jail},user=${lease.uid}:${lease.gid}`);
    }
  }
  argv.push(...(config.args ?? []));

  const env: Record<string, string> = { ...policy.env };
  if (mode === 'jail' && config.xenstoreSocket !== undefined)
    env.XENSTORED_PATH = JAIL_XENSTORE_SOCKET;

  return {
    version: 1,
    domid,
    mode,
    xen,
    binary: config.binary,
    argv,
    env,
    fds: [
      { target: 0, source: 'devnull', kind: 'file' },
      { target: 1, source: 'log', kind: 'file' },
      { target: 2, source: 'log', kind: 'file' },
      { target: QMP_FD, source: 'qmp-listener', kind: 'socket' },
      ...passed.map((f) => ({
        target: f.target,
        source: `passed:${f.name}` as const,
        kind: f.kind,
        ...(f.open ? { open: f.open } : {}),
        ...(f.tap ? { tap: f.tap } : {}),
      })),
    ],
    rlimits,
    namespaces: [...(policy.namespaces ?? DEFAULT_NAMESPACES)],
    uid: lease.uid,
    gid: lease.gid,
    // QEMU's -runas uid:gid calls setgroups(1, &gid) (os-posix.c): the lease's groups cannot apply.
    groups: mode === 'jail' ? groups : [lease.gid],
    execUid: mode === 'jail' ? lease.uid : 0,
    execGid: mode === 'jail' ? lease.gid : 0,
    noNewPrivs: true,
    capabilityBoundingSet: mode === 'jail' ? 'empty' : 'inherit',
    seccomp: policy.seccomp ?? null,
    qemuSandbox,
    paths,
    root:
      mode === 'jail'
        ? { path: paths.jail, how: policy.rootEntry ?? 'pivot_root' }
        : { path: paths.jail, how: 'qemu-chroot' },
    skeleton,
    mounts,
    devices: mode === 'jail' ? devices : [],
    removeAfterReady,
    bridges: (config.bridges ?? []).map((b) => ({
      name: b.name,
      listen: b.listen,
      unix: b.socket === undefined ? null : posix.join(paths.run, b.socket),
      ...(b.loopback ? { loopback: b.loopback } : {}),
      ...(b.console ? { console: b.console } : {}),
    })),
    ...((config.bridges ?? []).some((b) => b.loopback !== undefined) ? { loopbackUp: true } : {}),
    rootEntries: mode === 'jail' ? rootEntries.sort() : [],
    steps: [...LAUNCH_STEPS],
  };
}

/** A stable, diffable text form of a plan (what `xen-depriv launch --dry-run` prints). */
export function formatPlan(p: LaunchPlan): string {
  const seccomp =
    p.seccomp === null
      ? null
      : {
          profile: p.seccomp.profile,
          instructions: p.seccomp.program.length / 8,
          sha256: createHash('sha256').update(p.seccomp.program).digest('hex'),
        };
  return `${JSON.stringify({ ...p, seccomp }, null, 2)}\n`;
}
