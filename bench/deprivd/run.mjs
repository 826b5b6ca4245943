#!/usr/bin/env node
// xen-deprivd benchmark (issue 17), every figure against a baseline measured in the same run:
//   1. per-DM dom0 memory added by the stack: the service's PSS growth per DM plus one C shim
//      (xen-depriv-dm against a fake service), vs today's per-DM process (a node that imports
//      the packages and sits idle with one RestrictingProxy listening), several of each;
//   2. launch to QMP-ready through the service (RPC `launch` round trip) vs a bare
//      `qemu-system-x86_64 -M none` started directly until greeting + qmp_capabilities +
//      query-status answer (interleaved rounds, median);
//   3. storms of 64 launches at concurrency 2, 4, 8 through the service vs bare, throughput.
// Run from the repository root as root, after `npx turbo run build` (or
// `cd apps/depriv-launcher && npm run build`):
//   node bench/deprivd/run.mjs [--dms 32] [--rounds 25] [--storm 64] [--storm-reps 3]
//     [--baseline-procs 6] [--shims 6]
// Uses the uid pool 3630000:256 (reaper 3630256) and a temp dir; it ends only the processes it
// started, by pid, and removes everything it made, also on failure or SIGINT.
import { execFileSync, spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  watch,
} from 'node:fs';
import { createConnection, createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const app = path.join(repo, 'apps/depriv-launcher');
const DEPRIVD = path.join(app, 'dist/deprivd.js');
const SHIM = path.join(app, 'dist/xen-depriv-dm');
const QEMU = '/usr/bin/qemu-system-x86_64';
const POOL_FIRST = 3_630_000;
const POOL_COUNT = 256;
const OUR_UIDS = [POOL_FIRST, POOL_FIRST + POOL_COUNT]; // inclusive: pool and its reaper

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const N_DMS = arg('dms', 32);
const ROUNDS = arg('rounds', 25);
const STORM = arg('storm', 64);
const STORM_REPS = arg('storm-reps', 3);
const BASELINE_PROCS = arg('baseline-procs', 6);
const SHIMS = arg('shims', 6);
const GC_PRELOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'gc-on-signal.cjs');
/** Where the temp dir (and so the service's state dir) goes: tmpfs like /run on a dom0. */
const TMP_BASE = (() => {
  const i = process.argv.indexOf('--tmp');
  return i > 0 ? process.argv[i + 1] : '/dev/shm';
})();
const CONCURRENCY = [2, 4, 8];
/** Hang guard for any one wait; never part of a figure. */
const GUARD_MS = 60_000;
/** A bare QEMU whose QMP has not answered in this long is a failure (QEMU 7.2, see qmpReady). */
const BARE_GUARD_MS = 10_000;

if (process.geteuid?.() !== 0) {
  console.error('needs root (the service changes uids, namespaces and mounts)');
  process.exit(2);
}
for (const f of [DEPRIVD, SHIM, QEMU]) {
  if (!existsSync(f)) {
    console.error(`missing ${f} (build first: cd apps/depriv-launcher && npm run build)`);
    process.exit(2);
  }
}

const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
const uptime = () => {
  try {
    return execFileSync('uptime', { encoding: 'utf8' }).trim();
  } catch {
    return `load average: ${load()}`;
  }
};
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const MiB = (kb) => kb / 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function within(p, what, ms = GUARD_MS) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

/** Pss and Rss of a process in kB (smaps_rollup). */
function memOf(pid) {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return {
    pss: Number(/^Pss:\s+(\d+) kB/m.exec(t)?.[1]),
    rss: Number(/^Rss:\s+(\d+) kB/m.exec(t)?.[1]),
  };
}

/** Processes holding a uid of the bench's pool (DMs, reaper children), by pid. */
function poolProcesses() {
  const found = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const m = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(
        readFileSync(`/proc/${name}/status`, 'utf8'),
      );
      if (m?.slice(1).some((u) => Number(u) >= OUR_UIDS[0] && Number(u) <= OUR_UIDS[1])) {
        found.push(Number(name));
      }
    } catch {
      // Gone.
    }
  }
  return found;
}

// ── everything this run starts, for the cleanup ─────────────────────────────────────────────
const dir = mkdtempSync(path.join(TMP_BASE, 'xdb-'));
const children = new Set(); // ChildProcess objects we spawned (service, shims, baseline, bare QEMUs)
let service = null;
let cleaned = false;

function killChildren() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
  }
}

/** Last resort, synchronous: SIGKILL by pid whatever we started and the pool's processes. */
function hardCleanup() {
  if (cleaned) return;
  cleaned = true;
  killChildren();
  for (const pid of poolProcesses()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  rmSync(dir, { recursive: true, force: true });
}
process.on('exit', hardCleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

// ── a JSON-RPC client ───────────────────────────────────────────────────────────────────────
class Rpc {
  static connect(sock) {
    return new Promise((resolve, reject) => {
      const s = createConnection(sock);
      s.once('connect', () => resolve(new Rpc(s)));
      s.once('error', reject);
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.nextId = 1;
    this.pending = new Map();
    let buf = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
        if (!p) continue; // notifications (exited)
        this.pending.delete(msg.id);
        if (msg.error) p.reject(Object.assign(new Error(msg.error.message), msg.error));
        else p.resolve(msg.result);
      }
    });
    const fail = () => {
      for (const p of this.pending.values()) p.reject(new Error('connection closed'));
      this.pending.clear();
    };
    socket.on('close', fail);
    socket.on('error', fail);
  }

  call(method, params) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
    });
  }

  close() {
    this.socket.destroy();
  }
}

// ── the service ─────────────────────────────────────────────────────────────────────────────
const svcSock = path.join(dir, 'deprivd.sock');
const stateDir = path.join(dir, 'state');

async function startService() {
  const logFd = openSync(path.join(dir, 'deprivd.log'), 'a');
  const c = spawn(
    process.execPath,
    [
      '--expose-gc',
      '-r',
      GC_PRELOAD,
      DEPRIVD,
      '--socket',
      svcSock,
      '--state-dir',
      stateDir,
      '--pool',
      `${POOL_FIRST}:${POOL_COUNT}`,
    ],
    {
      stdio: ['ignore', 'ignore', logFd],
      env: { ...process.env, XDB_MEM_FILE: path.join(dir, 'service-mem.json') },
    },
  );
  children.add(c);
  await within(
    (async () => {
      while (!readFileSync(path.join(dir, 'deprivd.log'), 'utf8').includes('"listening"')) {
        if (c.exitCode !== null) {
          const log = readFileSync(path.join(dir, 'deprivd.log'), 'utf8').split('\n');
          throw new Error(`xen-deprivd exited ${c.exitCode}:\n${log.slice(-12).join('\n')}`);
        }
        await sleep(20);
      }
    })(),
    'xen-deprivd to listen',
  );
  service = c;
  return c;
}

async function stopService() {
  if (!service || service.exitCode !== null) return;
  try {
    const rpc = await Rpc.connect(svcSock);
    const { dms } = await within(rpc.call('list', {}), 'list');
    for (const d of dms) await within(rpc.call('destroy', { domid: d.domid }), 'destroy');
    rpc.close();
  } catch (e) {
    console.error(`destroying the DMs at the end: ${e.message}`);
  }
  const gone = new Promise((r) => service.once('exit', r));
  process.kill(service.pid, 'SIGTERM');
  await within(gone, 'xen-deprivd to exit', 30_000).catch(() => {
    process.kill(service.pid, 'SIGKILL');
  });
}

// ── 1. memory ───────────────────────────────────────────────────────────────────────────────
/** Today's per-DM process: the packages imported, one RestrictingProxy listening, idle. */
const BASELINE = `
await import('@xen-depriv/qemu-launcher');
await import('@xen-depriv/uid-allocator');
await import('@xen-depriv/privcmd-filter');
const { RestrictingProxy } = await import('@xen-depriv/xs-restrict');
const [sock, upstream] = process.argv.slice(1);
const proxy = new RestrictingProxy({ domid: 7, upstream: { privileged: upstream }, log: () => {} });
await proxy.listen(sock);
process.stdout.write('ready\\n');
setInterval(() => {}, 1 << 30);
`;

async function baselineProcesses(n) {
  const procs = [];
  for (let i = 0; i < n; i++) {
    const c = spawn(
      process.execPath,
      [
        '--expose-gc',
        '-r',
        GC_PRELOAD,
        '--input-type=module',
        '-e',
        BASELINE,
        path.join(dir, `baseline-${i}.sock`),
        path.join(dir, 'no-xenstored.sock'),
      ],
      { cwd: app, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.add(c);
    await within(
      new Promise((resolve, reject) => {
        c.stdout.on('data', (d) => d.toString().includes('ready') && resolve());
        c.once('exit', (code) => reject(new Error(`baseline process exited ${code}`)));
      }),
      'a baseline process',
    );
    procs.push(c);
  }
  // Idle, as a supervisor is between events; then read raw, collect, read again.
  await sleep(2000);
  const raw = procs.map((c) => memOf(c.pid));
  for (const c of procs) process.kill(c.pid, 'SIGUSR2');
  await sleep(500);
  const mem = procs.map((c, i) => ({ ...memOf(c.pid), rawPss: raw[i].pss }));
  for (const c of procs) {
    process.kill(c.pid, 'SIGTERM');
    children.delete(c);
  }
  return mem;
}

const SHIM_ARGV = [
  '-xen-domid',
  '7',
  '-no-shutdown',
  '-chardev',
  'socket,id=libxl-cmd,fd=3,server=on,wait=off',
  '-mon',
  'chardev=libxl-cmd,mode=control',
  '-machine',
  'xenfv',
];

/** n shims against a fake service that answers the launch and keeps the connection. */
async function shims(n) {
  const sock = path.join(dir, 'fake-deprivd.sock');
  const conns = [];
  const server = createServer((conn) => {
    conns.push(conn);
    conn.setEncoding('utf8');
    conn.on('error', () => {});
    conn.once('data', () =>
      conn.write(`${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { domid: 7, pid: 1 } })}\n`),
    );
  });
  await new Promise((r) => server.listen(sock, r));
  const qmpFd = openSync(path.join(dir, 'qmp-listener'), 'w');
  const procs = [];
  for (let i = 0; i < n; i++) {
    const c = spawn(SHIM, SHIM_ARGV, {
      stdio: ['ignore', 'inherit', 'inherit', qmpFd],
      env: { ...process.env, XEN_DEPRIVD_SOCKET: sock },
    });
    children.add(c);
    procs.push(c);
  }
  // The shim closes libxl's fd 3 once it has read the launch result: then it only waits.
  await within(
    (async () => {
      while (procs.some((c) => existsSync(`/proc/${c.pid}/fd/3`))) await sleep(10);
    })(),
    'the shims to take the launch result',
  );
  await sleep(200);
  const mem = procs.map((c) => memOf(c.pid));
  for (const c of procs) {
    process.kill(c.pid, 'SIGKILL');
    children.delete(c);
  }
  for (const c of conns) c.destroy();
  server.close();
  return mem;
}

/** The service's PSS, raw and after a full collection (SIGUSR2, see gc-on-signal.cjs). */
async function servicePss() {
  const raw = memOf(service.pid).pss;
  const memFile = path.join(dir, 'service-mem.json');
  rmSync(memFile, { force: true });
  process.kill(service.pid, 'SIGUSR2');
  await sleep(500);
  const pss = memOf(service.pid).pss;
  await within(
    (async () => {
      while (!existsSync(memFile)) await sleep(20);
    })(),
    'the service memory report',
  );
  const heap = JSON.parse(readFileSync(memFile, 'utf8'));
  return { raw, pss, heapKb: heap.heapUsed / 1024, extKb: heap.external / 1024 };
}

async function serviceMemory(rpc) {
  // Warm-up: the probe (cached on disk), the code paths, the host worker.
  await rpc.call('launch', { domid: 1 });
  await rpc.call('destroy', { domid: 1 });
  await sleep(500);
  const before = await servicePss();
  const steps = [];
  for (let d = 1; d <= N_DMS; d++) {
    await rpc.call('launch', { domid: 100 + d });
    if (d === N_DMS / 2 || d === N_DMS) steps.push({ dms: d, ...(await servicePss()) });
  }
  const { dms } = await rpc.call('list', {});
  if (dms.length !== N_DMS) throw new Error(`list shows ${dms.length} DMs, expected ${N_DMS}`);
  for (let d = 1; d <= N_DMS; d++) await rpc.call('destroy', { domid: 100 + d });
  const after = await servicePss();
  return { before, steps, after };
}

// ── 2. launch to QMP-ready ──────────────────────────────────────────────────────────────────
/** Minimal QMP: greeting, qmp_capabilities, query-status; returns the socket, open. */
/**
 * Minimal QMP: greeting, qmp_capabilities, query-status. QEMU 7.2 sometimes greets twice a
 * client that connected during its start-up (and then answers nothing sent before the second
 * greeting): a second greeting restarts the negotiation and is counted.
 */
function qmpReady(sockPath, onStage = () => {}) {
  return new Promise((resolve, reject) => {
    const s = createConnection(sockPath);
    s.once('connect', () => onStage('connected, waiting for the greeting'));
    let buf = '';
    let greetings = 0;
    s.setEncoding('utf8');
    s.on('error', reject);
    s.on('data', (d) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (msg.event) continue;
        if (msg.QMP) {
          greetings++;
          if (greetings > 1) qmpOddities.doubleGreetings++;
          onStage(`greeting ${greetings} read, qmp_capabilities sent`);
          s.write(`{"execute":"qmp_capabilities","id":"caps-${greetings}"}\n`);
        } else if (msg.id === `caps-${greetings}` && msg.return) {
          onStage('query-status sent');
          s.write('{"execute":"query-status","id":"status"}\n');
        } else if (msg.id === 'status' && msg.return) {
          s.removeAllListeners('data');
          resolve(s);
        } else if (msg.error) {
          reject(new Error(msg.error.desc));
        }
      }
    });
  });
}

/** QEMU's QMP misbehaving on a bare launch (see qmpReady). */
const qmpOddities = { doubleGreetings: 0 };

let bareSeq = 0;
/** A bare QEMU, as root, unconfined: spawned until QMP-ready; returns { ms, stop }. */
async function bareLaunch(extra = []) {
  const d = path.join(dir, `bare-${bareSeq++}`);
  mkdirSync(d);
  const sock = path.join(d, 'qmp.sock');
  // inotify tells when QEMU has bound its socket (no polling interval in the figure).
  let bound;
  const appeared = new Promise((r) => {
    bound = r;
  });
  const watcher = watch(d, (_event, name) => name === 'qmp.sock' && bound());
  const t0 = performance.now();
  const c = spawn(
    QEMU,
    [
      '-M',
      'none',
      '-display',
      'none',
      '-nodefaults',
      '-no-user-config',
      '-qmp',
      `unix:${sock},server=on,wait=off`,
      ...extra,
    ],
    { stdio: 'ignore' },
  );
  children.add(c);
  const exited = new Promise((r) => c.once('exit', r));
  let qmp;
  let stage = 'waiting for the socket';
  await within(
    (async () => {
      // inotify, and a slow poll in case an event is ever missed.
      while (!existsSync(sock) && c.exitCode === null) {
        await Promise.race([appeared, exited, sleep(20)]);
      }
      stage = 'connecting';
      for (;;) {
        if (c.exitCode !== null) throw new Error(`bare QEMU exited ${c.exitCode}`);
        try {
          qmp = await qmpReady(sock, (x) => {
            stage = x;
          });
          return;
        } catch (e) {
          // Bound but not yet listening: try again at once.
          if (e.code !== 'ENOENT' && e.code !== 'ECONNREFUSED') throw e;
          await new Promise((r) => setImmediate(r));
        }
      }
    })(),
    'a bare QEMU',
    BARE_GUARD_MS,
  )
    .catch((e) => {
      // A QEMU whose QMP never answers is a failed launch; it goes now.
      if (c.exitCode === null) process.kill(c.pid, 'SIGKILL');
      throw new Error(
        `${e.message} (${stage}, QEMU pid ${c.pid} ${c.exitCode === null ? 'alive' : `exited ${c.exitCode}`})`,
      );
    })
    .finally(() => watcher.close());
  const ms = performance.now() - t0;
  return {
    ms,
    stop: async () => {
      qmp.write('{"execute":"quit"}\n');
      await within(exited, 'a bare QEMU to quit');
      qmp.destroy();
      children.delete(c);
      rmSync(d, { recursive: true, force: true });
    },
  };
}

async function serviceLaunch(rpc, domid) {
  const t0 = performance.now();
  const r = await rpc.call('launch', { domid });
  return { ms: performance.now() - t0, result: r };
}

// ── 3. storms ───────────────────────────────────────────────────────────────────────────────
async function storm(concurrency, kind) {
  const rpcs =
    kind === 'service'
      ? await Promise.all(Array.from({ length: concurrency }, () => Rpc.connect(svcSock)))
      : [];
  let next = 0;
  let failures = 0;
  const stops = [];
  const domids = [];
  const errors = new Set();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      while (next < STORM) {
        const i = next++;
        try {
          if (kind === 'service') {
            await within(rpcs[w].call('launch', { domid: 1000 + i }), 'a storm launch');
            domids.push(1000 + i);
            launches.count++;
          } else {
            stops.push((await bareLaunch()).stop);
          }
        } catch (e) {
          failures++;
          errors.add(e.message);
        }
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const driverCpuMs = (cpu.user + cpu.system) / 1000;
  // Not timed: take them all down.
  if (kind === 'service') {
    await Promise.all(
      rpcs.map(async (rpc, w) => {
        for (let j = w; j < domids.length; j += concurrency) {
          await within(rpc.call('destroy', { domid: domids[j] }), 'a storm destroy');
        }
      }),
    );
    for (const rpc of rpcs) rpc.close();
  } else {
    await Promise.all(stops.map((s) => s()));
  }
  return { perSec: (STORM - failures) / secs, secs, failures, errors: [...errors], driverCpuMs };
}

// ── 4. where a launch's time goes (the engine in this process, with its step hook) ──────────
async function profile(rounds) {
  // The engine's chunk, as the service's entry point names it.
  const entry = readFileSync(DEPRIVD, 'utf8');
  const chunk = /import \{[^}]*\bDmEngine\b[^}]*\} from "(\.\/chunk-[\w-]+\.js)"/.exec(entry)?.[1];
  if (!chunk) throw new Error('cannot find the DmEngine chunk of dist/deprivd.js');
  const { DmEngine, defaultSettings } = await import(path.join(app, 'dist', chunk));
  const user = { scheme: 'pool', first: POOL_FIRST, count: POOL_COUNT };
  const engine = await DmEngine.open(
    defaultSettings({ stateDir: path.join(dir, 'profile-state'), target: 'embedded', user }),
    { recover: false },
  );
  const req = (domid) => ({
    kind: 'config',
    domid,
    mode: 'jail',
    target: 'embedded',
    qemu: { binary: '', machine: 'none', args: [] },
    user,
  });
  const spans = new Map();
  const add = (k, ms) => spans.set(k, [...(spans.get(k) ?? []), ms]);
  let sandbox = null;
  try {
    sandbox = (await engine.plan(req(399))).qemuSandbox;
    for (let r = -1; r < rounds; r++) {
      const domid = 300 + r + 1;
      let t = performance.now();
      await engine.plan(req(domid));
      if (r >= 0)
        add(
          'plan alone (probe cache, plan, seccomp; also inside "before launch()")',
          performance.now() - t,
        );
      let last = 'before launch(): lease (host worker), proxy, plan, service record';
      const t0 = performance.now();
      t = t0;
      await engine.launch(req(domid), {
        beforeStep: (step) => {
          const now = performance.now();
          if (r >= 0) add(last, now - t);
          last =
            {
              'record-state': 'record-state: launch record',
              'prepare-dirs': 'prepare-dirs: jail skeleton',
              'qmp-listen': 'qmp-listen',
              spawn: 'spawn: confined spawn (async)',
              'qmp-connect': 'qmp-connect: QEMU start to greeting + qmp_capabilities',
              'qmp-ready': 'qmp-ready: query-status',
              'seal-jail': 'seal-jail',
              running: 'after launch(): record, attachDm, service record, 2nd query-status',
            }[step] ?? step;
          t = now;
        },
      });
      const end = performance.now();
      if (r >= 0) {
        add(last, end - t);
        add('total engine.launch', end - t0);
      }
      t = performance.now();
      await engine.destroy(domid);
      if (r >= 0) add('destroy (not in the launch figure)', performance.now() - t);
    }
  } finally {
    for (const d of engine.list()) await engine.destroy(d.domid).catch(() => undefined);
    await engine.close();
  }
  // QEMU's own share: a bare QEMU with and without the plan's -sandbox (QEMU installs its own
  // seccomp filter at start), interleaved.
  for (let r = 0; r < rounds; r++) {
    for (const withSandbox of r % 2 ? [true, false] : [false, true]) {
      const b = await bareLaunch(withSandbox && sandbox ? ['-sandbox', sandbox] : []);
      add(withSandbox ? `  bare QEMU with the plan's -sandbox ${sandbox}` : '  bare QEMU', b.ms);
      await b.stop();
    }
  }
  // The pieces of "before launch()" and "after launch()", each alone in this process.
  const ua = await import(path.join(repo, 'packages/uid-allocator/dist/index.js'));
  const xs = await import(path.join(repo, 'packages/xs-restrict/dist/index.js'));
  const alloc = new ua.UidAllocator({
    scheme: ua.schemeFromConfig(user, { reaperUid: POOL_FIRST + POOL_COUNT }),
    stateDir: path.join(dir, 'alloc-state'),
  });
  const upstream = new xs.XenstoreServer();
  for (let r = -1; r < rounds; r++) {
    let t = performance.now();
    const lease = await alloc.acquire(400 + r + 1);
    if (r >= 0) add('  uid-allocator acquire alone', performance.now() - t);
    t = performance.now();
    const sock = path.join(dir, `proxy-${r + 1}.sock`);
    const proxy = new xs.RestrictingProxy({ domid: 400 + r + 1, upstream, log: () => {} });
    await proxy.listen(sock);
    if (r >= 0) add('  RestrictingProxy listen alone', performance.now() - t);
    t = performance.now();
    const held = await alloc.attachDm(lease, process.pid);
    if (r >= 0) add('  uid-allocator attachDm alone', performance.now() - t);
    await proxy.close();
    t = performance.now();
    await alloc.release(held, { reap: false });
    if (r >= 0)
      add(
        '  uid-allocator release (verify empty: /proc, IPC, shared dirs) alone',
        performance.now() - t,
      );
  }
  const procs = readdirSync('/proc').filter((n) => /^\d+$/.test(n)).length;
  spans.procs = procs;
  return spans;
}

// ── main ────────────────────────────────────────────────────────────────────────────────────
let exitCode = 0;
/** Launch+destroy cycles through the service after the memory figure. */
const launches = { count: 0 };
try {
  console.log(`start: ${uptime()}`);
  console.log(
    `state dir on ${execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim()} (${dir}); host: ${os.cpus().length} cores, node ${process.version}, ${execFileSync(QEMU, ['--version'], { encoding: 'utf8' }).split('\n')[0]}`,
  );
  await startService();
  const rpc = await Rpc.connect(svcSock);

  // 1. memory
  const svc = await serviceMemory(rpc);
  const shimMem = await shims(SHIMS);
  const base = await baselineProcesses(BASELINE_PROCS);
  const growthKb = (svc.steps.at(-1).pss - svc.before.pss) / N_DMS;
  const rawGrowthKb = (svc.steps.at(-1).raw - svc.before.raw) / N_DMS;
  const shimPss = median(shimMem.map((m) => m.pss));
  const shimRss = median(shimMem.map((m) => m.rss));
  const basePss = median(base.map((m) => m.pss));
  const baseRawPss = median(base.map((m) => m.rawPss));
  const baseRss = median(base.map((m) => m.rss));
  const perDm = growthKb + shimPss;
  const fmt = (x) =>
    `${MiB(x.pss).toFixed(1)} MiB (raw ${MiB(x.raw).toFixed(1)}, JS heap ${MiB(x.heapKb).toFixed(1)})`;
  console.log(`\nper-DM dom0 memory (load ${load()}; PSS after a full GC, raw = before it)`);
  console.log(
    `  service PSS: ${fmt(svc.before)} before (after a warm-up launch+destroy), ${svc.steps.map((s) => `${fmt(s)} with ${s.dms} DMs`).join(', ')}, ${fmt(svc.after)} after destroying them`,
  );
  console.log(
    `  service PSS growth per DM: ${MiB(growthKb).toFixed(3)} MiB (${N_DMS} DMs; raw, GC wherever it was: ${MiB(rawGrowthKb).toFixed(3)} MiB; JS heap growth ${((svc.steps.at(-1).heapKb - svc.before.heapKb) / N_DMS).toFixed(1)} kB per DM)`,
  );
  console.log(
    `  C shim per instance (${SHIMS} running): PSS ${MiB(shimPss).toFixed(3)} MiB, RSS ${MiB(shimRss).toFixed(3)} MiB`,
  );
  console.log(
    `  per-DM process (${BASELINE_PROCS} idle, packages + one RestrictingProxy): PSS ${MiB(basePss).toFixed(1)} MiB (raw ${MiB(baseRawPss).toFixed(1)}), RSS ${MiB(baseRss).toFixed(1)} MiB (median)`,
  );
  console.log(`per-DM MiB: ${MiB(perDm).toFixed(3)} (target <= 1 MiB)`);
  console.log(
    `ratio per-DM memory, service+shim vs per-DM process: ${(perDm / basePss).toFixed(3)}x (target <= ${(1024 / basePss).toFixed(3)}x, i.e. 1 MiB / the per-DM process)`,
  );

  // 2. launch to QMP-ready, interleaved rounds (order alternating), after one warm-up each
  await (await bareLaunch()).stop();
  await rpc.call('launch', { domid: 2 });
  await rpc.call('destroy', { domid: 2 });
  const bareMs = [];
  const svcMs = [];
  const ratios = [];
  for (let r = 0; r < ROUNDS; r++) {
    const one = {};
    for (const kind of r % 2 ? ['bare', 'service'] : ['service', 'bare']) {
      if (kind === 'bare') {
        const b = await bareLaunch();
        one.bare = b.ms;
        await b.stop();
      } else {
        const s = await serviceLaunch(rpc, 200 + r);
        launches.count++;
        if (s.result.status !== 'running') throw new Error(`launch: status ${s.result.status}`);
        one.service = s.ms;
        await rpc.call('destroy', { domid: 200 + r });
      }
    }
    bareMs.push(one.bare);
    svcMs.push(one.service);
    ratios.push(one.service / one.bare);
  }
  console.log(`\nlaunch to QMP-ready, ${ROUNDS} interleaved rounds (load ${load()})`);
  console.log(
    `  bare qemu -M none (-qmp unix:...,server=on,wait=off): median ${median(bareMs).toFixed(1)} ms`,
  );
  console.log(`  xen-deprivd RPC launch (confined):        median ${median(svcMs).toFixed(1)} ms`);
  console.log(
    `ratio launch to QMP-ready, service vs bare: ${median(ratios).toFixed(3)}x (target <= 1.10x) (median of per-round ratios; ratio of medians ${(median(svcMs) / median(bareMs)).toFixed(3)}x)`,
  );

  // 3. storms
  console.log(`\nstorm of ${STORM} launches (time to all ready; destroy after, not timed)`);
  for (const c of CONCURRENCY) {
    const pairs = [];
    for (let rep = 0; rep < STORM_REPS; rep++) {
      const res = {};
      // Alternate which side goes first, so a load burst does not always hit the same one.
      for (const kind of (rep + c) % 2 ? ['bare', 'service'] : ['service', 'bare']) {
        res[kind] = await storm(c, kind);
      }
      const s = res.service;
      const b = res.bare;
      pairs.push(res);
      console.log(
        `  concurrency ${c} #${rep + 1} (load ${load()}): service ${s.perSec.toFixed(2)}/s (${s.secs.toFixed(2)} s, ${s.failures} failures, driver CPU ${s.driverCpuMs.toFixed(0)} ms), bare ${b.perSec.toFixed(2)}/s (${b.secs.toFixed(2)} s, ${b.failures} failures, driver CPU ${b.driverCpuMs.toFixed(0)} ms), ratio ${(s.perSec / b.perSec).toFixed(3)}x${[...s.errors, ...b.errors].length ? ` errors: ${[...s.errors, ...b.errors].join('; ')}` : ''}`,
      );
    }
    const fs = pairs.reduce((n, p) => n + p.service.failures, 0);
    const fb = pairs.reduce((n, p) => n + p.bare.failures, 0);
    const ratio = median(pairs.map((p) => p.service.perSec / p.bare.perSec));
    console.log(
      `ratio storm throughput at concurrency ${c}, service vs bare: ${ratio.toFixed(3)}x (target >= 0.9x) (median of ${STORM_REPS} pairs), failures ${fs}+${fb} (target 0)`,
    );
  }
  if (qmpOddities.doubleGreetings > 0) {
    console.log(
      `  bare QEMU greeted twice ${qmpOddities.doubleGreetings} time(s) (negotiated again; see qmpReady)`,
    );
  }
  // Churn: does the service give back what launch+destroy cycles took? (all DMs are gone now)
  const churned = await servicePss();
  const cycles = launches.count;
  console.log(
    `\nservice PSS after every storm (${cycles} launch+destroy cycles since the memory figure, no DM running): ${MiB(churned.pss).toFixed(1)} MiB after a full GC (raw ${MiB(churned.raw).toFixed(1)}, JS heap ${MiB(churned.heapKb).toFixed(1)}, external ${MiB(churned.extKb).toFixed(1)}), vs ${MiB(svc.after.pss).toFixed(1)} MiB (JS heap ${MiB(svc.after.heapKb).toFixed(1)}, external ${MiB(svc.after.extKb).toFixed(1)}) then: PSS ${((churned.pss - svc.after.pss) / cycles).toFixed(2)} kB, JS heap ${((churned.heapKb - svc.after.heapKb) / cycles).toFixed(2)} kB per cycle (load ${load()})`,
  );
  rpc.close();

  // 4. profile, in this process, with the service stopped (same pool, nothing else on it)
  await stopService();
  const spans = await profile(ROUNDS);
  console.log(
    `\nwhere a launch's time goes: the engine in process, ${ROUNDS} launches (median ms, load ${load()})`,
  );
  for (const [k, v] of spans) console.log(`  ${median(v).toFixed(1).padStart(7)} ms  ${k}`);
  console.log(`  (${spans.procs} processes on the host: every /proc scan reads them all)`);
} catch (e) {
  console.error(`bench failed: ${e.stack ?? e.message}`);
  exitCode = 1;
} finally {
  await stopService().catch((e) => console.error(`stopping the service: ${e.message}`));
  killChildren();
  const left = poolProcesses();
  if (left.length > 0) {
    console.error(`left behind by the pool (SIGKILL): ${left.join(' ')}`);
    exitCode = 1;
  }
  const leases = existsSync(path.join(stateDir, 'leases'))
    ? readdirSync(path.join(stateDir, 'leases')).filter((n) => n.endsWith('.json'))
    : [];
  if (leases.length > 0) {
    console.error(`leases left: ${leases.join(' ')}`);
    exitCode = 1;
  }
  const jails = existsSync(stateDir)
    ? readdirSync(stateDir).filter((n) => n.startsWith('dm-') && statSync(path.join(stateDir, n)))
    : [];
  if (jails.length > 0) {
    console.error(`jails left: ${jails.join(' ')}`);
    exitCode = 1;
  }
  hardCleanup();
  console.log(`\nend: ${uptime()}`);
}
process.exit(exitCode);
