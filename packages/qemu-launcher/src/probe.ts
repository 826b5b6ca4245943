import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { LauncherError } from './errors.js';

/** The identity a probe result is cached under: a replaced or rebuilt binary is probed again. */
export interface BinaryIdentity {
  readonly path: string;
  readonly dev: number;
  readonly ino: number;
  readonly mtimeMs: number;
  readonly size: number;
}

/** A top-level host directory the DM's jail mirrors: bound read-only, or recreated as a symlink. */
export type HostRootEntry =
  | { readonly path: string; readonly kind: 'dir' }
  | { readonly path: string; readonly kind: 'symlink'; readonly target: string };

export interface QemuCaps {
  readonly binary: string;
  readonly identity: BinaryIdentity;
  readonly version: {
    readonly major: number;
    readonly minor: number;
    readonly micro: number;
    readonly package: string;
  };
  readonly machines: readonly string[];
  /** Option groups QMP `query-command-line-options` reports: the authority on `-sandbox`. */
  readonly commandLineOptions: readonly string[];
  readonly flags: {
    readonly chroot: boolean;
    readonly runas: boolean;
    readonly runWith: boolean;
    /** True only when the binary really accepts `-sandbox`; `-help` lists it even when not built in. */
    readonly sandbox: boolean;
    readonly sandboxOptions: readonly string[];
    readonly xenDomid: boolean;
    readonly xenDomidRestrict: boolean;
    readonly xenAttach: boolean;
  };
  /** Extra arguments the probe needed to start `-M none` (Xen-only builds have no default accel). */
  readonly probeArgs: readonly string[];
  /** The host's top-level directories a jail needs to run this binary (merged-/usr aware). */
  readonly hostRoot: readonly HostRootEntry[];
}

export interface ProbeOptions {
  /** Per-command timeout of the probe runs. */
  readonly timeoutMs?: number;
  /** Bypass the per-identity cache (memory and disk). */
  readonly fresh?: boolean;
  /**
   * A root-only directory where results persist across processes, one JSON file per binary
   * identity: a resident service probes a binary once per host, and again only when it is
   * replaced. A file that does not parse, or names another identity, is probed over.
   */
  readonly cacheDir?: string;
}

const cache = new Map<string, QemuCaps>();

const identityKey = (id: BinaryIdentity): string =>
  `${id.path}\0${id.dev}\0${id.ino}\0${id.mtimeMs}\0${id.size}`;

/** Where QEMU and its libraries live on a Debian-like host; others are skipped when absent. */
const HOST_ROOT_CANDIDATES = ['/usr', '/lib', '/lib64', '/lib32', '/libx32', '/bin', '/sbin'];

export function hostRootLayout(
  candidates: readonly string[] = HOST_ROOT_CANDIDATES,
): HostRootEntry[] {
  const out: HostRootEntry[] = [];
  for (const path of candidates) {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(path);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) out.push({ path, kind: 'symlink', target: readlinkSync(path) });
    else if (st.isDirectory()) out.push({ path, kind: 'dir' });
  }
  return out;
}

function run(binary: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      binary,
      args,
      { timeout: timeoutMs, env: { LC_ALL: 'C' }, maxBuffer: 4 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          reject(
            new LauncherError(
              'EPROBE',
              `${binary} ${args.join(' ')}: expected exit 0, saw ${err.message.trim()} (stderr: ${stderr.trim().slice(0, 200)})`,
              { step: 'probe', cause: err },
            ),
          );
        } else resolve(stdout);
      },
    );
  });
}

interface QmpProbe {
  options: string[];
  sandboxOptions: string[];
}

/** One QMP session over stdio of `-M none`: the only way to know which option groups exist. */
function qmpProbe(binary: string, extra: readonly string[], timeoutMs: number): Promise<QmpProbe> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      binary,
      ['-M', 'none', ...extra, '-nodefaults', '-display', 'none', '-S', '-qmp', 'stdio'],
      { env: { LC_ALL: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new LauncherError('EPROBE', `${binary}: no QMP answer within ${timeoutMs} ms`));
    }, timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      if (out.length < 4 << 20) out += d;
    });
    child.stderr.on('data', (d: string) => {
      if (err.length < 65536) err += d;
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new LauncherError('EPROBE', `${binary}: cannot run: ${e.message}`, { cause: e }));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const replies: unknown[] = [];
      for (const line of out.split('\n')) {
        if (line.trim() === '') continue;
        try {
          replies.push(JSON.parse(line));
        } catch {
          // QEMU prints nothing but JSON on a QMP stdio monitor; a stray line is ignored.
        }
      }
      const listing = replies.find(
        (r): r is { return: { option: string; parameters: { name: string }[] }[] } =>
          typeof r === 'object' &&
          r !== null &&
          Array.isArray((r as { return?: unknown }).return) &&
          ((r as { return: unknown[] }).return.length === 0 ||
            typeof (r as { return: { option?: unknown }[] }).return[0]?.option === 'string'),
      );
      if (!listing) {
        reject(
          new LauncherError(
            'EPROBE',
            `${binary}: expected a query-command-line-options reply, saw exit ${code} and stderr "${err.trim().slice(0, 300)}"`,
            { step: 'probe' },
          ),
        );
        return;
      }
      const options = listing.return.map((o) => o.option).filter((o) => o !== '');
      const sandbox = listing.return.find((o) => o.option === 'sandbox');
      resolve({
        options: options.sort(),
        sandboxOptions: (sandbox?.parameters ?? []).map((p) => p.name).sort(),
      });
    });
    child.stdin.end(
      '{"execute":"qmp_capabilities"}\n{"execute":"query-command-line-options"}\n{"execute":"quit"}\n',
    );
  });
}

const helpHas = (help: string, flag: string): boolean =>
  new RegExp(`^${flag.replace(/[-]/g, '\\-')}(\\s|$)`, 'm').test(help);

/**
 * What a QEMU binary can do, from `-version`, `-help`, `-M help` and QMP
 * `query-command-line-options` on `-M none`. Cached per binary identity (path, dev, ino, mtime, size).
 */
export async function probeQemu(binary: string, options: ProbeOptions = {}): Promise<QemuCaps> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(binary);
  } catch (e) {
    throw new LauncherError(
      'EPROBE',
      `${binary}: expected an executable, saw ${(e as Error).message}`,
      {
        step: 'probe',
        errno: (e as NodeJS.ErrnoException).code,
        cause: e,
      },
    );
  }
  const identity: BinaryIdentity = {
    path: binary,
    dev: st.dev,
    ino: st.ino,
    mtimeMs: st.mtimeMs,
    size: st.size,
  };
  const key = identityKey(identity);
  const hit = cache.get(key);
  if (hit && !options.fresh) return hit;
  const diskPath =
    options.cacheDir === undefined
      ? null
      : join(
          options.cacheDir,
          `${createHash('sha256').update(key).digest('hex').slice(0, 32)}.json`,
        );
  if (diskPath !== null && !options.fresh) {
    const stored = readCached(diskPath, key);
    if (stored) {
      cache.set(key, stored);
      return stored;
    }
  }

  const [versionText, help, machinesText] = await Promise.all([
    run(binary, ['-version'], timeoutMs),
    run(binary, ['-help'], timeoutMs),
    run(binary, ['-M', 'help'], timeoutMs),
  ]);
  const m = /version (\d+)\.(\d+)\.(\d+)(?:\s*\(([^)]*)\))?/.exec(versionText);
  if (!m) {
    throw new LauncherError(
      'EPROBE',
      `${binary} -version: expected "QEMU emulator version X.Y.Z", saw "${versionText.slice(0, 120)}"`,
      { step: 'probe' },
    );
  }
  const machines = machinesText
    .split('\n')
    .slice(1)
    .map((l) => l.split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');

  let probeArgs: string[] = [];
  let qmp: QmpProbe;
  try {
    qmp = await qmpProbe(binary, probeArgs, timeoutMs);
  } catch (e) {
    // A Xen-only build refuses `-M none` without an accelerator; qtest is always compiled in.
    probeArgs = ['-accel', 'qtest'];
    try {
      qmp = await qmpProbe(binary, probeArgs, timeoutMs);
    } catch {
      throw e;
    }
  }
  const caps: QemuCaps = {
    binary,
    identity,
    version: {
      major: Number(m[1]),
      minor: Number(m[2]),
      micro: Number(m[3]),
      package: m[4] ?? '',
    },
    machines,
    commandLineOptions: qmp.options,
    flags: {
      chroot: helpHas(help, '-chroot'),
      runas: helpHas(help, '-runas'),
      runWith: qmp.options.includes('run-with'),
      sandbox: qmp.options.includes('sandbox'),
      sandboxOptions: qmp.sandboxOptions,
      xenDomid: helpHas(help, '-xen-domid'),
      xenDomidRestrict: helpHas(help, '-xen-domid-restrict'),
      xenAttach: helpHas(help, '-xen-attach'),
    },
    probeArgs,
    hostRoot: hostRootLayout(),
  };
  cache.set(key, caps);
  if (diskPath !== null) writeCached(diskPath, caps);
  return caps;
}

function readCached(path: string, key: string): QemuCaps | null {
  try {
    const caps = JSON.parse(readFileSync(path, 'utf8')) as QemuCaps;
    return caps?.identity && identityKey(caps.identity) === key && Array.isArray(caps.machines)
      ? caps
      : null;
  } catch {
    return null;
  }
}

function writeCached(path: string, caps: QemuCaps): void {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(caps)}\n`, { mode: 0o600 });
    renameSync(tmp, path);
  } catch {
    // A cache that cannot be written costs a probe next time, nothing else.
  }
}
