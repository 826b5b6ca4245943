// Reaper vs a `pkill -9 -u UID` loop until empty, on the same 1000-process fork bomb (setsid +
// double fork, bounded by RLIMIT_NPROC). Run as root from the repository root, after building
// packages/sys and packages/uid-allocator:
//   node bench/uid-allocator/reaper.mjs [trials=5] [nproc=1000]
// Each trial uses fresh uids from 3,102,000 (zombies of a killed bomb count against
// RLIMIT_NPROC until init reaps them) and alternates which method goes first.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnConfined, waitPid } from '../../packages/sys/dist/index.js';
import { processesOfUid, reap } from '../../packages/uid-allocator/dist/index.js';

const trials = Number(process.argv[2] ?? 5);
const nproc = Number(process.argv[3] ?? 1000);
const REAPER = 3_102_999;
const dir = mkdtempSync(join(tmpdir(), 'uid-allocator-bench-'));
chmodSync(dir, 0o755);
const bombPath = join(dir, 'bomb');
const source = new URL('../../packages/uid-allocator/test/fixtures/bomb.c', import.meta.url)
  .pathname;
execFileSync('gcc', ['-O2', '-o', bombPath, source]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function bomb(uid) {
  const child = spawnConfined({
    file: bombPath,
    argv: ['bomb', '50'],
    env: {},
    uid,
    gid: uid,
    rlimits: [{ resource: 'RLIMIT_NPROC', soft: nproc, hard: nproc }],
  });
  // Zombies of the bomb's exited middle processes count against RLIMIT_NPROC until init
  // reaps them, so the live count settles somewhat below nproc: wait until it stops growing.
  let n = 0;
  for (let i = 0, last = -1; i < 100 && n < nproc * 0.95; i++) {
    await sleep(50);
    last = n;
    n = processesOfUid(uid).length;
    if (n > nproc / 2 && n <= last) break;
  }
  return { child, n };
}

async function viaReaper(uid) {
  const t = process.hrtime.bigint();
  const r = await reap(uid, { reaperUid: REAPER, timeoutMs: 60_000, maxRounds: 10_000 });
  return { ms: Number(process.hrtime.bigint() - t) / 1e6, rounds: r.rounds };
}

/** pkill signals one process at a time while the bomb refills its slots, so it may never
 * finish: the loop stops after PKILL_BOUND_MS and reports what is left. */
const PKILL_BOUND_MS = Number(process.env.PKILL_BOUND_MS ?? 10_000);

async function viaPkill(uid) {
  const t = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - t) / 1e6;
  let rounds = 0;
  let left = processesOfUid(uid).length;
  while (left > 0 && elapsed() < PKILL_BOUND_MS) {
    spawnSync('pkill', ['-9', '-u', String(uid)]);
    rounds++;
    left = processesOfUid(uid).length;
  }
  const ms = elapsed();
  if (left > 0) await reap(uid, { reaperUid: REAPER, timeoutMs: 60_000, maxRounds: 10_000 });
  return { ms, rounds, left };
}

const used = new Set();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ratios = [];
const reaperMs = [];
const pkillMs = [];
try {
  for (let t = 0; t < trials; t++) {
    const order = t % 2 === 0 ? ['reaper', 'pkill'] : ['pkill', 'reaper'];
    const res = {};
    for (const [i, method] of order.entries()) {
      const uid = 3_102_000 + t * 2 + i;
      used.add(uid);
      const { child, n } = await bomb(uid);
      res[method] = { ...(method === 'reaper' ? await viaReaper(uid) : await viaPkill(uid)), n };
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {}
      waitPid(child.pid);
      if (processesOfUid(uid).length !== 0) throw new Error(`uid ${uid} not empty after ${method}`);
    }
    reaperMs.push(res.reaper.ms);
    pkillMs.push(res.pkill.ms);
    ratios.push(res.reaper.ms / res.pkill.ms);
    console.log(
      `trial ${t}: reaper ${res.reaper.ms.toFixed(1)} ms (${res.reaper.rounds} rounds, ${res.reaper.n} procs), pkill loop ${res.pkill.ms.toFixed(1)} ms (${res.pkill.rounds} rounds, ${res.pkill.n} procs${res.pkill.left > 0 ? `, ${res.pkill.left} STILL ALIVE at the bound` : ''}), ratio ${(res.reaper.ms / res.pkill.ms).toFixed(3)}`,
    );
  }
  console.log(
    `median: reaper ${median(reaperMs).toFixed(1)} ms, pkill loop ${median(pkillMs).toFixed(1)} ms, median per-trial ratio ${median(ratios).toFixed(3)} (target <= 0.5; a pkill time at the bound is a lower bound)`,
  );
} finally {
  // Whatever happened above, leave no process of a bench uid behind.
  for (const uid of used)
    await reap(uid, { reaperUid: REAPER, timeoutMs: 60_000, maxRounds: 10_000 });
  rmSync(dir, { recursive: true, force: true });
}
