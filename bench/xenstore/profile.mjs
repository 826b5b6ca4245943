#!/usr/bin/env node
// CPU per request of each xenstore daemon under the same load, and where ours spends it:
//   - C xenstored 4.17 and (with XS_IMPL=ocaml support in the shared peer) oxenstored,
//   - `xs-restrict serve` in its own process, optionally under `node --cpu-prof`.
// The load is write+read pairs, 1 client with 16 pairs in flight, then 4 such clients, from
// load.c (a client in C, built with cc -O2 when there is a compiler), then from XenstoreClient.
// CPU time is the daemon's utime+stime from /proc/<pid>/stat over the run.
// Run from the repository root after `npx turbo run build --filter=@xen-depriv/xs-restrict`:
//   node bench/xenstore/profile.mjs [--seconds 3] [--cpu-prof DIR]
// With --cpu-prof, DIR receives ours' .cpuprofile (open it in Chrome DevTools or speedscope for
// the flame graph) and the top functions by self time are printed.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLoadC, runLoadC } from './load-c.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dist = process.env.XSR_DIST ?? path.join(repo, 'packages/xs-restrict/dist');
if (!existsSync(path.join(dist, 'index.js'))) {
  console.error('build first: npx turbo run build --filter=@xen-depriv/xs-restrict');
  process.exit(2);
}
const { XenstoreClient } = await import(path.join(dist, 'index.js'));
const peerSh = path.resolve(repo, '../shared/tools/xenstored-peer/peer.sh');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const SECONDS = Number(arg('--seconds', 3));
const PROF_DIR = arg('--cpu-prof', undefined);
const DEPTH = 16;
const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

const dir = mkdtempSync('/tmp/xsprof-');
const children = [];
const peers = [];
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  for (const p of peers) execFileSync(peerSh, ['stop', p], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true });
});
process.on('SIGINT', () => process.exit(130));

function cpuUs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_US;
}

async function load(sock, nClients) {
  const clients = await Promise.all(
    Array.from({ length: nClients }, () => XenstoreClient.connect({ path: sock })),
  );
  const end = performance.now() + SECONDS * 1000;
  let pairs = 0;
  const worker = async (c, w) => {
    let i = 0;
    while (performance.now() < end) {
      const key = `/bench/c${w}/k${i++ % 64}`;
      await c.write(key, 'value-0123456789');
      await c.read(key);
      pairs++;
    }
  };
  await Promise.all(
    clients.flatMap((c, k) => Array.from({ length: DEPTH }, (_, j) => worker(c, k * DEPTH + j))),
  );
  for (const c of clients) {
    await c.rm('/bench').catch(() => undefined);
    c.close();
  }
  return pairs;
}

let loadC;
try {
  loadC = buildLoadC(dir);
} catch (e) {
  console.log(`no C client (${e.message.split('\n')[0]}): the Node one only`);
}

/** load.c's run: the pairs it made (its rate times the seconds it ran). */
const cLoad = async (sock, nClients) =>
  (await runLoadC(loadC, sock, nClients, DEPTH, SECONDS, children)) * SECONDS;

async function measure(name, sock, pid) {
  for (const [client, run] of [...(loadC ? [['C', cLoad]] : []), ['Node', load]])
    for (const n of [1, 4]) {
      const before = cpuUs(pid);
      const t0 = performance.now();
      const pairs = await run(sock, n);
      const secs = (performance.now() - t0) / 1000;
      const us = (cpuUs(pid) - before) / (2 * pairs);
      console.log(
        `${name.padEnd(18)} ${n} client(s) x ${DEPTH} in flight, ${client} client: ${Math.round(pairs / secs)} pairs/s, ${us.toFixed(1)} us CPU per request`,
      );
    }
}

const load1 = () =>
  `load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`;
console.log(`# ${new Date().toISOString()} ${load1()}`);
for (const impl of ['c', 'ocaml']) {
  const pdir = `${dir}/peer-${impl}`;
  try {
    execFileSync(peerSh, ['start', pdir], {
      stdio: 'ignore',
      env: { ...process.env, XS_DOMS: '', XS_IMPL: impl },
    });
    peers.push(pdir);
    const pid = Number(readFileSync(`${pdir}/xenstored.pid`, 'utf8'));
    await measure(impl === 'c' ? 'C xenstored' : 'oxenstored', `${pdir}/socket`, pid);
  } catch (e) {
    console.log(`${impl} xenstored not available: ${e.message.split('\n')[0]}`);
  }
}

const nodeArgs = PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`] : [];
if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
const ours = spawn(
  process.execPath,
  [...nodeArgs, path.join(dist, 'cli.js'), 'serve', '--socket', `${dir}/xsr.sock`],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
children.push(ours);
await new Promise((resolve) => ours.stdout.on('data', (d) => d.includes('ready') && resolve()));
await measure('XenstoreServer', `${dir}/xsr.sock`, ours.pid);
console.log(`# ${load1()}`);
if (!PROF_DIR) process.exit(0);

ours.kill('SIGTERM');
await new Promise((resolve) => ours.once('exit', resolve));
const file = readdirSync(PROF_DIR)
  .filter((f) => f.endsWith('.cpuprofile'))
  .map((f) => path.join(PROF_DIR, f))
  .sort()
  .pop();
const prof = JSON.parse(readFileSync(file, 'utf8'));
const self = new Map();
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const dt = new Map();
prof.samples.forEach((id, i) => {
  dt.set(id, (dt.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
});
let total = 0;
for (const [id, us] of dt) {
  const n = byId.get(id);
  const f = n.callFrame;
  const key = `${f.functionName || '(anonymous)'} ${path.basename(f.url || '')}:${f.lineNumber + 1}`;
  self.set(key, (self.get(key) ?? 0) + us);
  total += us;
}
console.log(`\n${file}: top self time (of ${(total / 1000).toFixed(0)} ms sampled)`);
for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25))
  console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`);
process.exit(0);
