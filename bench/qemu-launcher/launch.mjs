// Confined launch to QMP-ready vs a bare `qemu-system-x86_64 -M none` to QMP-ready (same binary,
// same QMP readiness: greeting, qmp_capabilities, query-status), and vs the libxl way
// (-runas/-chroot/-sandbox). Then a storm of 64 launches at concurrency 2, 4, 8, confined vs bare.
//   node bench/qemu-launcher/launch.mjs [rounds] [storm-size]
// Needs root and the built package (npx turbo run build, or cd packages/qemu-launcher && npx tsup).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  destroy,
  launch,
  plan,
  probeQemu,
  QmpClient,
  sysSpawner,
  utilLinuxSpawner,
} from '../../packages/qemu-launcher/dist/index.js';

const X86 = '/usr/bin/qemu-system-x86_64';
// The jail has no /dev/kvm: pin TCG everywhere so every variant starts the same accelerator.
const ACCEL = ['-accel', 'tcg'];
const rounds = Number(process.argv[2] ?? 15);
const stormSize = Number(process.argv[3] ?? 64);
const stateDir = mkdtempSync(join(tmpdir(), 'ql-bench-'));
const caps = await probeQemu(X86);
let nextUid = 3_012_000;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

async function listener(path) {
  const server = createServer();
  await new Promise((r) => server.listen({ path: `${path}.tmp`, backlog: 4 }, r));
  renameSync(`${path}.tmp`, path);
  return server;
}

/** Bare: QEMU as root, no confinement; QMP listener passed as fd 3 like the launcher does. */
async function bare(extraArgs = [], tag = 'bare') {
  const dir = join(stateDir, `${tag}-${nextUid++}`);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'qmp.sock');
  const t0 = performance.now();
  const server = await listener(path);
  const fd = server._handle.fd;
  const child = spawn(
    X86,
    [
      '-chardev',
      `socket,id=qmp,fd=3,server=on,wait=off`,
      '-mon',
      'chardev=qmp,mode=control',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-machine',
      'none',
      ...ACCEL,
      ...extraArgs,
    ],
    { stdio: ['ignore', 'ignore', 'ignore', fd] },
  );
  server.close();
  const qmp = await QmpClient.connect(path);
  await qmp.execute('query-status');
  const ms = performance.now() - t0;
  const gone = new Promise((r) => child.once('exit', r));
  await qmp.execute('quit').catch(() => undefined);
  qmp.close();
  await gone;
  rmSync(dir, { recursive: true, force: true });
  return ms;
}

/** The libxl way: QEMU starts as root and drops itself; its own -sandbox (no elevateprivileges=deny). */
async function libxlWay() {
  const uid = nextUid++;
  const chroot = join(stateDir, `chroot-${uid}`);
  mkdirSync(chroot, { mode: 0 });
  const ms = await bare(
    [
      '-runas',
      `${uid}:${uid}`,
      '-chroot',
      chroot,
      '-sandbox',
      'on,obsolete=deny,spawn=deny,resourcecontrol=deny',
    ],
    'libxl',
  );
  rmSync(chroot, { recursive: true, force: true });
  return ms;
}

async function confined(mode, spawner) {
  const uid = nextUid++;
  const p = plan({ domid: uid % 30000, binary: X86, stateDir, mode, args: ACCEL }, caps, {
    uid,
    gid: uid,
  });
  const t0 = performance.now();
  const h = await launch(p, { spawner });
  const ms = performance.now() - t0;
  await destroy(h);
  return ms;
}

const variants = {
  bare: () => bare(),
  'libxl way (-runas -chroot -sandbox)': libxlWay,
  'jail (sys spawnConfined)': () => confined('jail', sysSpawner),
  'jail (util-linux)': () => confined('jail', utilLinuxSpawner),
  'libxl-compat (sys spawnConfined)': () => confined('libxl-compat', sysSpawner),
};
const names = Object.keys(variants);
const times = Object.fromEntries(names.map((n) => [n, []]));
const ratios = Object.fromEntries(names.map((n) => [n, []]));
for (const v of names) await variants[v](); // warm-up
for (let r = 0; r < rounds; r++) {
  const order = names.map((_, i) => names[(i + r) % names.length]);
  const t = {};
  for (const v of order) t[v] = await variants[v]();
  for (const v of names) {
    times[v].push(t[v]);
    ratios[v].push(t[v] / t.bare);
  }
}
console.log(
  `launch to QMP-ready, ${rounds} paired rounds (median ms, median ratio vs bare of the same round)`,
);
for (const v of names) {
  console.log(
    `  ${v.padEnd(38)} ${median(times[v]).toFixed(1).padStart(7)} ms   ${median(ratios[v]).toFixed(3)}x`,
  );
}

async function storm(concurrency, one) {
  const lat = [];
  let failures = 0;
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < stormSize) {
        next++;
        try {
          lat.push(await one());
        } catch (e) {
          failures++;
          console.error(e.message);
        }
      }
    }),
  );
  const wall = performance.now() - t0;
  return { throughput: (stormSize * 1000) / wall, p50: pct(lat, 50), p99: pct(lat, 99), failures };
}

/** One storm item = launch to ready, then destroy (the storm measures sustained launches). */
console.log(`\nstorm: ${stormSize} launches (launch+ready+destroy each) per run`);
for (const c of [2, 4, 8]) {
  const b = await storm(c, () => bare());
  const j = await storm(c, () => confined('jail', sysSpawner));
  console.log(
    `  concurrency ${c}: bare ${b.throughput.toFixed(1)}/s p50 ${b.p50.toFixed(0)} ms p99 ${b.p99.toFixed(0)} ms | ` +
      `jail(sys) ${j.throughput.toFixed(1)}/s p50 ${j.p50.toFixed(0)} ms p99 ${j.p99.toFixed(0)} ms | ` +
      `throughput ratio ${(j.throughput / b.throughput).toFixed(3)}x, failures ${b.failures}+${j.failures}`,
  );
}
rmSync(stateDir, { recursive: true, force: true });
