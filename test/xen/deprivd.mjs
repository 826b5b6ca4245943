// xen-deprivd for the real-Xen tests: started by the test as a child (foreground, JSON log lines
// on stderr), ended by its pid; a small JSON-RPC client of its socket; and the checks that a
// domain's device model left nothing behind in the service's state directory.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { pidsOfUid, readOr, sleep, until } from './helpers.mjs';

const repo = join(import.meta.dirname, '..', '..');
export const DEPRIVD = join(repo, 'apps', 'depriv-launcher', 'dist', 'deprivd.js');
export const SHIM = join(repo, 'apps', 'depriv-launcher', 'dist', 'xen-depriv-dm');
export const CLI = join(repo, 'apps', 'depriv-launcher', 'dist', 'cli.js');

/** Whether `pid` runs (a zombie counts as gone: it is only waiting for its parent). */
export const running = (pid) => {
  const s = readOr(`/proc/${pid}/status`);
  return s !== '' && !/^State:\tZ/m.test(s);
};

/** Seconds of CPU (user + system) `pid` has used, or null when it is gone. */
export const cpuSeconds = (pid) => {
  const f = readOr(`/proc/${pid}/stat`).split(') ')[1]?.split(' ');
  if (!f) return null;
  return Math.round(((Number(f[11]) + Number(f[12])) / 100) * 10) / 10;
};

/** VmRSS of `pid` in KiB, or null. */
export const rssKiB = (pid) => {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readOr(`/proc/${pid}/status`));
  return m ? Number(m[1]) : null;
};

/**
 * Starts `xen-deprivd --socket SOCKET --state-dir STATEDIR --target dom0 --pool FIRST:COUNT` and
 * resolves once it listens (`logLevel: 'debug'`: each proxy also logs every request it lets
 * through). `service.stop()` sends SIGTERM (SIGKILL after 15 s), by its pid.
 */
export async function startDeprivd({ socket, stateDir, pool, upstream = 'privileged', logLevel }) {
  const t0 = performance.now();
  const args = [DEPRIVD, '--socket', socket, '--state-dir', stateDir, '--target', 'dom0'];
  args.push('--pool', pool, '--upstream', upstream);
  if (logLevel) args.push('--log-level', logLevel);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const events = [];
  let partial = '';
  child.stderr.on('data', (b) => {
    stderr += b;
    partial += b;
    const lines = partial.split('\n');
    partial = lines.pop();
    for (const l of lines) {
      try {
        events.push(JSON.parse(l));
      } catch {
        // A line that is not JSON (a crash): kept in stderr.
      }
    }
  });
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  const listening = await until('xen-deprivd listening', 60_000, () => {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`xen-deprivd exited ${child.exitCode ?? child.signalCode}: ${stderr}`);
    }
    return events.find((e) => e.event === 'listening' || e.msg === 'listening');
  });
  const service = {
    pid: child.pid,
    child,
    events,
    exited,
    startS: Math.round((performance.now() - t0) / 100) / 10,
    listening,
    // (JSON lines of pino: the event's name is `msg`, or `event` in older builds.)
    recovered: events.find((e) => e.event === 'recovered' || e.msg === 'recovered') ?? null,
    stderr: () => stderr,
    alive: () => child.exitCode === null && child.signalCode === null,
    /** SIGKILL by its pid, as a crash or the OOM killer would; resolves when it is gone. */
    async kill() {
      if (service.alive()) process.kill(child.pid, 'SIGKILL');
      return exited;
    },
    async stop() {
      if (!service.alive()) return exited;
      process.kill(child.pid, 'SIGTERM');
      const t = setTimeout(() => {
        if (service.alive()) process.kill(child.pid, 'SIGKILL');
      }, 15_000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
  return service;
}

/** A connection to xen-deprivd: `call(method, params)`, and the notifications it got. */
export async function connectDeprivd(socket) {
  const s = connect(socket);
  await new Promise((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  s.setEncoding('utf8');
  const pending = new Map();
  const notifications = [];
  let buf = '';
  let nextId = 1;
  s.on('data', (d) => {
    buf += d;
    for (;;) {
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const m = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      if (m.method !== undefined) {
        notifications.push(m);
        continue;
      }
      const p = pending.get(m.id);
      if (!p) continue;
      pending.delete(m.id);
      if (m.error) {
        const e = new Error(`${m.error.code}: ${m.error.message}`);
        e.rpc = m.error;
        p.reject(e);
      } else {
        p.resolve(m.result);
      }
    }
  });
  const fail = (e) => {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  s.on('error', fail);
  s.on('close', () => fail(new Error('xen-deprivd closed the connection')));
  return {
    notifications,
    call(method, params = {}, timeoutMs = 120_000) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${method}: no reply in ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, {
          resolve: (v) => {
            clearTimeout(t);
            resolve(v);
          },
          reject: (e) => {
            clearTimeout(t);
            reject(e);
          },
        });
        s.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
      });
    },
    close() {
      s.destroy();
    },
  };
}

/** One call on a connection of its own. */
export async function rpc(socket, method, params = {}) {
  const c = await connectDeprivd(socket);
  try {
    return await c.call(method, params);
  } finally {
    c.close();
  }
}

const exists = (path) => {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
};
const ls = (dir) => (existsSync(dir) ? readdirSync(dir).sort() : []);
const trySh = (cmd, args) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: 'pipe' });
  } catch {
    return null;
  }
};

/**
 * What is left of domain `domid`'s device model (uid `uid`) under `stateDir` and on the host:
 * processes of the uid, lease, launch and service records, jail, proxy socket, mounts, QMP
 * symlinks (`links`), and (`xenstore`) libxl's device-model node. Empty when nothing is.
 */
export function leftovers({ stateDir, domid, uid, links = [], xenstore = false }) {
  const left = [];
  if (uid !== null && pidsOfUid(uid).length)
    left.push(`processes of uid ${uid}: ${pidsOfUid(uid)}`);
  const leases = ls(join(stateDir, 'leases'));
  if (leases.length) left.push(`leases: ${leases.join(' ')}`);
  if (exists(join(stateDir, 'state', `dm-${domid}.json`))) left.push('launch record');
  if (exists(join(stateDir, 'service', `dm-${domid}.json`))) left.push('service record');
  if (exists(join(stateDir, `dm-${domid}`))) left.push(`jail ${join(stateDir, `dm-${domid}`)}`);
  const proxy = ls(join(stateDir, 'xs-proxy')).filter((f) => f.endsWith('.sock'));
  if (proxy.length) left.push(`proxy sockets: ${proxy.join(' ')}`);
  if (readOr('/proc/mounts').includes(stateDir)) left.push('a mount under the state dir');
  for (const l of links) if (exists(l)) left.push(l);
  if (xenstore && trySh('xenstore-ls', [`/local/domain/0/device-model/${domid}`])?.trim())
    left.push(`/local/domain/0/device-model/${domid}`);
  return left;
}

/**
 * Best-effort cleanup for a test's finally: the QEMU of `uid` by pid (only if it still runs as
 * that uid), the QMP symlinks, the state directory.
 */
export async function cleanup({ qemuPid = null, uid = null, links = [], dirs = [] }) {
  if (
    qemuPid &&
    uid !== null &&
    new RegExp(`^Uid:\\t${uid}\\t`, 'm').test(readOr(`/proc/${qemuPid}/status`))
  ) {
    try {
      process.kill(qemuPid, 'SIGKILL');
    } catch {}
    await sleep(500);
  }
  for (const l of links) {
    try {
      if (lstatSync(l).isSymbolicLink()) rmSync(l);
    } catch {}
  }
  for (const d of dirs) {
    // A mount left in a jail would make rm fail (or worse, walk into it): leave the dir then.
    if (!readOr('/proc/mounts').includes(d)) rmSync(d, { recursive: true, force: true });
  }
}

/** The proxy's refusal log of domain `domid`, as objects with event "refused". */
export function proxyRefusals(stateDir, domid) {
  return readOr(join(stateDir, 'xs-proxy', `dm-${domid}.log`))
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return { event: 'unreadable', line: l };
      }
    })
    .filter((r) => r.event === 'refused');
}

/** The requests domain `domid`'s proxy let through, as logged at log level debug (`forwarded`). */
export function proxyForwarded(stateDir, domid) {
  return readOr(join(stateDir, 'xs-proxy', `dm-${domid}.log`))
    .split('\n')
    .filter((l) => l.includes('"event":"forwarded"'));
}

/** Reads a file as JSON, or returns null. */
export const readJson = (path) => {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
};

/**
 * The xl config of the lab's HVM guest (hvmloader, SeaBIOS, direct kernel boot of the lab's
 * guest kernel and busybox initrd) with qemu-xen and `dm_restrict = 1`; `override` is the
 * `device_model_override` (none: libxl's own QEMU, root-started, `-runas`/`-chroot`).
 * `vga = "none"` by default: the guest reaches userspace in about half the time stdvga takes
 * under TCG (stdvga also needs QEMU's VRAM populate hypercall; see docs/xen-lab.md).
 */
export function xlConfig({ name, override = null, vga = 'none' }) {
  const lab = readFileSync('/lab/guest/hvm.cfg', 'utf8')
    .split('\n')
    .filter((l) => !/^(name|vga|on_poweroff|cmdline)\s*=/.test(l));
  return [
    ...lab,
    `name = "${name}"`,
    // No console on ttyS0: every character the kernel prints there is several port I/O exits
    // handled by QEMU in dom0 (minutes under TCG); hvc0 is xenconsoled's ring, and `quiet`
    // leaves the init's marker line.
    'cmdline = "console=hvc0 rdinit=/init quiet"',
    `vga = "${vga}"`,
    ...(vga === 'stdvga' ? ['videoram = 16'] : []),
    'device_model_version = "qemu-xen"',
    ...(override ? [`device_model_override = "${override}"`] : []),
    // Kept after the guest's poweroff, so that the test's `xl destroy` is what tears it down.
    'on_poweroff = "preserve"',
    '',
  ].join('\n');
}

// Proxy refusals the catalogue plans for (deprivNeeds false): QEMU assumes backend domid 0
// (backend-domid), the service writes the backends list (dm-backends), and the legacy console
// backend's watch on the guest's console is not needed with xenconsoled.
export const plannedRefusals = (domid) => [
  /^read \/local\/domain\/0\/domid$/,
  new RegExp(`^mkdir /local/domain/0/device-model/${domid}/backends/[a-z0-9]+$`),
  new RegExp(`^watch /local/domain/${domid}/console$`),
];
export const unplanned = (refused, domid) =>
  refused
    .map((r) => `${r.rule?.replace(/^not-in-allowlist:/, '')} ${r.request?.path}`)
    .filter((x) => !plannedRefusals(domid).some((re) => re.test(x)));

/** dom0's uptime in seconds (/proc/uptime), the clock of `startedAt`. */
export const uptime = () => Number(readOr('/proc/uptime').split(' ')[0]);

/** When `pid` started (its fork; exec follows at once for a spawned program), in seconds of uptime (/proc/PID/stat field 22, 100 Hz). */
export const startedAt = (pid) => {
  const f = readOr(`/proc/${pid}/stat`).split(') ')[1]?.split(' ');
  return f ? Number(f[19]) / 100 : null;
};
