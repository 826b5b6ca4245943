import { lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { posix } from 'node:path';
import type { LaunchPlan, Namespace, RlimitName } from './plan.js';

export interface ConfinementCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly expected: string;
  readonly actual: string;
}

export interface ConfinementReport {
  readonly pid: number;
  /** True when every check passed. */
  readonly ok: boolean;
  readonly checks: readonly ConfinementCheck[];
  /** Raw facts read from /proc, for logs. */
  readonly facts: {
    readonly uids: readonly number[];
    readonly gids: readonly number[];
    readonly groups: readonly number[];
    readonly capabilities: Readonly<Record<'inh' | 'prm' | 'eff' | 'bnd' | 'amb', bigint>>;
    readonly noNewPrivs: number;
    readonly seccomp: number;
    readonly seccompFilters: number;
    readonly rootEntries: readonly string[];
    readonly fds: Readonly<Record<number, string>>;
  };
}

export interface VerifyOptions {
  /** The root dev/ino the launcher recorded at launch (pins the exact jail). */
  readonly expectedRoot?: { readonly dev: number; readonly ino: number };
  /** Host paths of sockets the DM may see in its root, as seen from inside (e.g. `/run/qmp.sock`). */
  readonly allowedSockets?: readonly string[];
  /** The /proc to read (tests). */
  readonly proc?: string;
}

/** Device nodes and sockets that would give a DM a fresh, unrestricted handle. */
export const FRESH_HANDLE_PATHS = [
  '/dev/xen/privcmd',
  '/dev/xen/evtchn',
  '/dev/xen/gntdev',
  '/dev/xen/gntalloc',
  '/dev/xen/xenbus',
  '/dev/xen/xenbus_backend',
  '/dev/xen/hypercall',
  '/proc/xen/privcmd',
  '/run/xenstored/socket',
  '/var/run/xenstored/socket',
  '/run/xenstored/socket_ro',
];

const NS_FILE: Readonly<Record<Namespace, string>> = {
  mount: 'mnt',
  ipc: 'ipc',
  net: 'net',
  uts: 'uts',
  pid: 'pid',
};

const LIMIT_NAME: Readonly<Record<RlimitName, string>> = {
  FSIZE: 'Max file size',
  CORE: 'Max core file size',
  MSGQUEUE: 'Max msgqueue size',
  LOCKS: 'Max file locks',
  MEMLOCK: 'Max locked memory',
  NPROC: 'Max processes',
  NOFILE: 'Max open files',
  AS: 'Max address space',
};

function statusFields(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

const ints = (s: string | undefined): number[] =>
  (s ?? '')
    .split(/\s+/)
    .filter((x) => x !== '')
    .map(Number);

function parseLimits(text: string): Map<string, { soft: string; hard: string }> {
  const out = new Map<string, { soft: string; hard: string }>();
  for (const line of text.split('\n').slice(1)) {
    const m = /^(.+?)\s{2,}(\S+)\s+(\S+)/.exec(line);
    if (m) out.set(m[1]!, { soft: m[2]!, hard: m[3]! });
  }
  return out;
}

const tryLstat = (p: string) => {
  try {
    return lstatSync(p);
  } catch {
    return null;
  }
};

/** Sockets anywhere in the DM's root, not descending into read-only binds of host directories. */
function socketsUnder(root: string, skip: ReadonlySet<string>): string[] {
  const out: string[] = [];
  const walk = (rel: string, depth: number) => {
    if (depth > 6) return;
    let names: string[];
    try {
      names = readdirSync(posix.join(root, rel));
    } catch {
      return;
    }
    for (const n of names) {
      const r = posix.join(rel, n);
      if (skip.has(r)) continue;
      const st = tryLstat(posix.join(root, r));
      if (!st) continue;
      if (st.isSocket()) out.push(r);
      else if (st.isDirectory()) walk(r, depth + 1);
    }
  };
  walk('/', 0);
  return out.sort();
}

/**
 * What a running DM really has, check by check, from /proc. Works on any pid: with a plan the
 * checks compare against it, without one they apply the baseline every deprivileged DM must meet.
 */
export function verifyConfinement(
  pid: number,
  p?: LaunchPlan,
  options: VerifyOptions = {},
): ConfinementReport {
  const proc = options.proc ?? '/proc';
  const base = `${proc}/${pid}`;
  const status = statusFields(readFileSync(`${base}/status`, 'utf8'));
  const checks: ConfinementCheck[] = [];
  const check = (name: string, ok: boolean, expected: string, actual: string) =>
    checks.push({ name, ok, expected, actual });

  const uids = ints(status.get('Uid'));
  const gids = ints(status.get('Gid'));
  const groups = ints(status.get('Groups'));
  if (p) {
    check(
      'uid',
      uids.length === 4 && uids.every((u) => u === p.uid),
      `all ${p.uid}`,
      uids.join(' '),
    );
    check(
      'gid',
      gids.length === 4 && gids.every((g) => g === p.gid),
      `all ${p.gid}`,
      gids.join(' '),
    );
    check(
      'groups',
      groups.join(' ') === p.groups.join(' '),
      `[${p.groups.join(' ')}]`,
      `[${groups.join(' ')}]`,
    );
  } else {
    check('uid', uids.length === 4 && uids.every((u) => u !== 0), 'no 0', uids.join(' '));
    check('gid', gids.length === 4 && gids.every((g) => g !== 0), 'no 0', gids.join(' '));
    check('groups', !groups.includes(0), 'no 0', `[${groups.join(' ')}]`);
  }

  const cap = (k: string): bigint => BigInt(`0x${status.get(k) ?? 'ffffffffffffffff'}`);
  const capabilities = {
    inh: cap('CapInh'),
    prm: cap('CapPrm'),
    eff: cap('CapEff'),
    bnd: cap('CapBnd'),
    amb: cap('CapAmb'),
  };
  for (const k of ['eff', 'prm', 'inh', 'amb'] as const) {
    check(`capabilities.${k}`, capabilities[k] === 0n, '0', capabilities[k].toString(16));
  }
  const wantEmptyBnd = p ? p.capabilityBoundingSet === 'empty' : false;
  check(
    'capabilities.bnd',
    !wantEmptyBnd || capabilities.bnd === 0n,
    wantEmptyBnd ? '0' : 'any (no-new-privs makes it unreachable)',
    capabilities.bnd.toString(16),
  );

  const noNewPrivs = Number(status.get('NoNewPrivs') ?? -1);
  const seccomp = Number(status.get('Seccomp') ?? -1);
  const seccompFilters = Number(status.get('Seccomp_filters') ?? 0);
  check('noNewPrivs', noNewPrivs === 1, '1', String(noNewPrivs));
  const wantFilters = p ? (p.seccomp ? 1 : 0) + (p.qemuSandbox ? 1 : 0) : 1;
  check('seccomp', seccomp === 2, '2 (filter)', String(seccomp));
  check(
    'seccompFilters',
    seccompFilters >= Math.max(wantFilters, 1),
    `>= ${Math.max(wantFilters, 1)}`,
    String(seccompFilters),
  );

  const root = `${base}/root`;
  const rootSt = statSync(root);
  const hostRoot = statSync('/');
  check(
    'root.notHost',
    !(rootSt.dev === hostRoot.dev && rootSt.ino === hostRoot.ino),
    'not the host root',
    `dev ${rootSt.dev} ino ${rootSt.ino}`,
  );
  if (options.expectedRoot) {
    check(
      'root.identity',
      rootSt.dev === options.expectedRoot.dev && rootSt.ino === options.expectedRoot.ino,
      `dev ${options.expectedRoot.dev} ino ${options.expectedRoot.ino}`,
      `dev ${rootSt.dev} ino ${rootSt.ino}`,
    );
  } else if (p && p.root.how === 'qemu-chroot') {
    const j = tryLstat(p.root.path);
    check(
      'root.identity',
      j !== null && j.dev === rootSt.dev && j.ino === rootSt.ino,
      `${p.root.path}`,
      `dev ${rootSt.dev} ino ${rootSt.ino}`,
    );
  }
  const writable =
    rootSt.uid === uids[1] ||
    (rootSt.mode & 0o002) !== 0 ||
    ((rootSt.mode & 0o020) !== 0 && gids.includes(rootSt.gid));
  check(
    'root.notWritable',
    !writable,
    'owned by another uid, no group/other write',
    `uid ${rootSt.uid} mode ${(rootSt.mode & 0o7777).toString(8)}`,
  );
  const rootEntries = readdirSync(root).sort();
  const allowedEntries = p ? p.rootEntries : [];
  const extra = rootEntries.filter((e) => !allowedEntries.includes(e));
  check(
    'root.entries',
    extra.length === 0,
    `only [${allowedEntries.join(' ')}]`,
    `[${rootEntries.join(' ')}]`,
  );

  // An empty directory gives nothing; a node or socket (or anything else) at these paths does.
  // At a xenstored socket path, only the daemon's own socket does (the host file at the same
  // path, bound in): a restricting proxy's socket mounted there is what the DM is meant to use.
  const reachable = FRESH_HANDLE_PATHS.filter((x) => {
    const st = tryLstat(posix.join(root, x));
    if (st === null || (st.isDirectory() && readdirSync(posix.join(root, x)).length === 0)) {
      return false;
    }
    if (st.isSocket() && x.includes('/xenstored/')) {
      const daemon = tryLstat(x);
      return daemon !== null && daemon.dev === st.dev && daemon.ino === st.ino;
    }
    return true;
  });
  check(
    'freshHandles',
    reachable.length === 0,
    'no /dev/xen node or xenstored socket',
    reachable.length ? reachable.join(' ') : 'none',
  );
  const skip = new Set(
    p
      ? p.mounts.flatMap((m) =>
          m.type === 'bind' && m.readOnly && m.target !== p.paths.jail
            ? [m.target.slice(p.paths.jail.length)]
            : [],
        )
      : ['/usr'],
  );
  const allowedSockets = new Set(
    options.allowedSockets ??
      (p?.mode === 'jail'
        ? [
            '/run/qmp.sock',
            '/run/xenstored/socket',
            // What the DM serves to dom0 through the plan's bridges (VNC, serial).
            ...(p.bridges ?? []).flatMap((b) =>
              b.unix === null ? [] : [`/run/${b.unix.slice(b.unix.lastIndexOf('/') + 1)}`],
            ),
            // Sockets its own argv has it create in its /run (`-chardev socket,...,path=/run/X`,
            // e.g. libxenstat's QMP socket of a libxl launch).
            ...argvSockets(p.argv),
          ]
        : []),
  );
  // Walking the host's own tree says nothing about a jail (and /proc is endless): only a jail is walked.
  const isHostRoot = rootSt.dev === hostRoot.dev && rootSt.ino === hostRoot.ino;
  const sockets = (isHostRoot ? [] : socketsUnder(root, skip)).filter(
    (s) => !allowedSockets.has(s),
  );
  check(
    'sockets',
    sockets.length === 0,
    `only [${[...allowedSockets].join(' ')}]`,
    sockets.length ? sockets.join(' ') : 'none',
  );

  const wantNs = p ? p.namespaces : (['mount', 'ipc', 'net', 'uts'] as const);
  for (const ns of wantNs) {
    const file = NS_FILE[ns];
    const mine = readlinkSync(`/proc/self/ns/${file}`);
    const theirs = readlinkSync(`${base}/ns/${file}`);
    check(`namespace.${ns}`, mine !== theirs, `not ${mine}`, theirs);
  }

  const limits = parseLimits(readFileSync(`${base}/limits`, 'utf8'));
  if (p) {
    for (const r of p.rlimits) {
      const got = limits.get(LIMIT_NAME[r.resource]);
      check(
        `rlimit.${r.resource}`,
        got !== undefined && got.soft === String(r.soft) && got.hard === String(r.hard),
        `${r.soft}/${r.hard}`,
        got ? `${got.soft}/${got.hard}` : 'missing',
      );
    }
  } else {
    for (const r of ['CORE', 'MEMLOCK'] as const) {
      const got = limits.get(LIMIT_NAME[r]);
      check(`rlimit.${r}`, got?.hard === '0', '0/0', got ? `${got.soft}/${got.hard}` : 'missing');
    }
  }

  const fds: Record<number, string> = {};
  for (const n of readdirSync(`${base}/fd`)) {
    try {
      fds[Number(n)] = readlinkSync(`${base}/fd/${n}`);
    } catch {
      // Closed between readdir and readlink.
    }
  }
  const allowedPaths = new Set<string>(['/dev/null', '/dev/zero', '/dev/urandom']);
  if (p) {
    for (const d of p.devices) allowedPaths.add(d.path);
    allowedPaths.add(p.paths.log);
    for (const f of p.fds) {
      // A descriptor the caller passed may be given up by QEMU (an ejected disc, a NIC the
      // guest unplugged, a migration stream read to its end): closed is fine, what matters is
      // that nothing undeclared is open (fds.paths below).
      const passed = f.source.startsWith('passed:');
      if (f.open) {
        // QEMU moves an -add-fd descriptor into its fdset (and closes the number it got): the
        // image is open in the DM at whatever number, or no longer at all.
        allowedPaths.add(f.open.path);
        const open = Object.values(fds).includes(f.open.path);
        check(
          `fd.${f.target}`,
          open || passed,
          `${f.source} (${f.open.path})${passed ? ', or given up' : ''}`,
          open ? f.open.path : 'not open',
        );
        continue;
      }
      if (f.kind === 'tap') allowedPaths.add('/dev/net/tun');
      const link = fds[f.target];
      // A file the caller passed as it is (libxl's saved state for -incoming): whatever it names.
      if (f.kind === 'file' && link?.startsWith('/')) allowedPaths.add(link);
      // A record written before fds carried `kind` has only the launcher's own sources.
      const kind =
        f.kind === 'tap'
          ? '/dev/net/tun'
          : f.kind === 'socket' || f.source === 'qmp-listener'
            ? 'socket:'
            : f.source === 'log'
              ? p.paths.log
              : f.source === 'devnull'
                ? '/dev/null'
                : '/';
      // Once QEMU has given a passed descriptor up, the number may hold something of its own
      // (a socket, an eventfd); any file there is still checked by fds.paths.
      check(
        `fd.${f.target}`,
        link === undefined ? passed : link.startsWith(kind) || (passed && !link.startsWith('/')),
        `${f.source} (${kind}…)${passed ? ', or given up' : ''}`,
        link ?? 'closed',
      );
    }
  }
  // A DM that entered its root with chroot (no pivot_root on a ramfs host root) shares the
  // host's view of its mounts, so its files show with the jail's host path in front.
  const inJail = (l: string) =>
    p && l.startsWith(`${p.paths.jail}/`) ? l.slice(p.paths.jail.length) : l;
  const stray = Object.entries(fds).filter(([, raw]) => {
    const l = inJail(raw);
    return l.startsWith('/') && !allowedPaths.has(l) && !(p?.xen && l.startsWith('/dev/xen/'));
  });
  check(
    'fds.paths',
    stray.length === 0,
    'only declared files and devices',
    stray.length ? stray.map(([n, l]) => `${n}=${l}`).join(' ') : 'none',
  );

  return {
    pid,
    ok: checks.every((c) => c.ok),
    checks,
    facts: {
      uids,
      gids,
      groups,
      capabilities,
      noNewPrivs,
      seccomp,
      seccompFilters,
      rootEntries,
      fds,
    },
  };
}

/** The `/run/...` paths of the `-chardev socket,...,path=` arguments of an argv. */
function argvSockets(argv: readonly string[]): string[] {
  return argv.flatMap((a, i) =>
    argv[i - 1] === '-chardev' && a.startsWith('socket,')
      ? a.split(',').flatMap((f) => (f.startsWith('path=/run/') ? [f.slice('path='.length)] : []))
      : [],
  );
}
