// spawnConfined of /bin/true vs child_process.spawn of the same, N runs each, interleaved,
// median of spawn-to-reaped wall time. Target: ratio <= 1.2.
//   (cd packages/sys && npm run build) && node bench/sys/spawn.mjs [N]
import { spawn } from 'node:child_process';
import { close, spawnConfined, waitPid } from '../../packages/sys/dist/index.js';

const N = Number(process.argv[2] ?? 200);

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function confined(spec) {
  const t0 = process.hrtime.bigint();
  const { pid, pidfd } = spawnConfined(spec);
  const status = waitPid(pid);
  const t1 = process.hrtime.bigint();
  close(pidfd);
  if (status?.exitCode !== 0) throw new Error(`/bin/true: ${JSON.stringify(status)}`);
  return Number(t1 - t0) / 1e3;
}

function nodeSpawn() {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn('/bin/true', [], { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => {
      const t1 = process.hrtime.bigint();
      if (code !== 0) reject(new Error(`/bin/true exited ${code}`));
      else resolve(Number(t1 - t0) / 1e3);
    });
  });
}

const plain = { file: '/bin/true', argv: ['true'], env: {} };
const isRoot = process.getuid() === 0;
const confinedSpec = {
  ...plain,
  uid: 3_970_900,
  gid: 3_970_900,
  rlimits: [{ resource: 'RLIMIT_NOFILE', soft: 64, hard: 64 }],
  namespaces: ['ipc', 'uts'],
};

// Warm-up: page cache, lazy binding, JIT.
for (let i = 0; i < 20; i++) {
  confined(plain);
  await nodeSpawn();
}
const a = [];
const b = [];
const c = [];
for (let i = 0; i < N; i++) {
  a.push(confined(plain));
  b.push(await nodeSpawn());
  if (isRoot) c.push(confined(confinedSpec));
}
const ma = median(a);
const mb = median(b);
console.log(`N=${N}, median spawn-to-reaped of /bin/true`);
console.log(`  child_process.spawn (baseline):  ${mb.toFixed(1)} us`);
console.log(
  `  spawnConfined (no confinement):  ${ma.toFixed(1)} us  ratio ${(ma / mb).toFixed(2)} (target <= 1.2)`,
);
if (isRoot) {
  const mc = median(c);
  console.log(
    `  spawnConfined (uid, rlimit, ipc+uts ns): ${mc.toFixed(1)} us  ratio ${(mc / mb).toFixed(2)}`,
  );
}
