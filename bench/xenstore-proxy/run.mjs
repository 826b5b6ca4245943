#!/usr/bin/env node
// RestrictingProxy throughput: write+read pairs per second of domain 5's device model
//   - directly on a domain-5 socket of XenstoreServer (baseline), in its own process,
//   - through RestrictingProxy attached to that server in the same process (`upstream: server`),
//   - through RestrictingProxy in a process of its own, in front of the server's domain-5
//     socket (`upstream: path`, the deployment in front of C xenstored: one more socket hop),
//   - through RestrictingProxy in privileged mode (`upstream: { privileged }`: the proxy talks to the
//     daemon as dom0 and decides every request as domain 5 itself), attached to the server as dom0 in
//     the same process, and in a process of its own in front of the server's dom0 socket (the
//     deployment in front of a real host's /run/xenstored/socket),
// with 1 and 4 clients, each keeping 16 pairs in flight and, separately, one at a time.
// Rounds alternate the targets, each round starting at the next one; the median of the rounds and
// the ratio proxy/direct are printed.
// Run from the repository root after `cd packages/xs-restrict && npx tsup`:
//   node bench/xenstore-proxy/run.mjs [--seconds 1] [--rounds 7] [--warmup 1000] [--early 50] [--only TEXT]
//     [--targets "privileged in-process,..."] [--sequence TRACE.jsonl | --catalogue] [--steps]
//     [--poll-us N]
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromTrace, replay } from './sequence.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
// XSR_DIST: another build to measure (a copy of an older dist, for a before/after in one session).
const dist = process.env.XSR_DIST ?? path.join(repo, 'packages/xs-restrict/dist');
if (!existsSync(path.join(dist, 'index.js'))) {
  console.error('build first: (cd packages/xs-restrict && npx tsup)');
  process.exit(2);
}
const { CATALOGUE, PLACEHOLDERS, XenstoreClient } = await import(path.join(dist, 'index.js'));
const secIdx = process.argv.indexOf('--seconds');
const SECONDS = secIdx > 0 ? Number(process.argv[secIdx + 1]) : 1;
const roundsIdx = process.argv.indexOf('--rounds');
// Other jobs share the machine: many short alternating rounds make the median robust to bursts.
const ROUNDS = roundsIdx > 0 ? Number(process.argv[roundsIdx + 1]) : 7;
// --only TEXT: the cases whose label contains TEXT ("start-up" for the QEMU sequence alone);
// --targets a,b: only those columns (always with direct), e.g. --targets "privileged in-process".
const onlyIdx = process.argv.indexOf('--only');
const ONLY = onlyIdx > 0 ? process.argv[onlyIdx + 1] : '';
const targetsIdx = process.argv.indexOf('--targets');
const TARGET_NAMES = targetsIdx > 0 ? process.argv[targetsIdx + 1].split(',') : undefined;
// --warmup N: untimed start-ups per target before the timed ones (the target's figure); --early N:
// also time them after only N (0: not), while V8 is still compiling the code they run.
const warmIdx = process.argv.indexOf('--warmup');
const STARTUP_WARMUP = warmIdx > 0 ? Number(process.argv[warmIdx + 1]) : 1000;
const earlyIdx = process.argv.indexOf('--early');
const STARTUP_EARLY = earlyIdx > 0 ? Number(process.argv[earlyIdx + 1]) : 50;
const DEPTH = 16;
// --poll-us N: the server and every proxy keep polling N µs after a client's data (pollMicros),
// direct and proxied alike. Default 0: they block at once, as xenstored does.
const pollIdx = process.argv.indexOf('--poll-us');
const POLL_US = pollIdx > 0 ? Number(process.argv[pollIdx + 1]) : 0;
const DOMID = 5;
const NODE = `/local/domain/0/device-model/${DOMID}/physmap/f0000000/size`;

const dir = mkdtempSync('/tmp/xspb-');
const children = [];
function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

function startReady(args) {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(c);
    c.stdout.on('data', (d) => {
      if (d.toString().includes('ready')) resolve(c);
    });
    c.once('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}`)));
  });
}

// The proxies format their log lines (refusals) and drop them: where those go is the embedder's
// choice (xen-deprivd appends them to a file), and a terminal is not one.
const SERVER = `
const { XenstoreServer, RestrictingProxy } = await import(process.argv[1]);
const dir = process.argv[2];
const s = new XenstoreServer({ pollMicros: ${POLL_US} });
await s.listen(dir + '/xs.sock');
await s.listenDomain(${DOMID}, dir + '/dom${DOMID}.sock');
const p = new RestrictingProxy({ domid: ${DOMID}, upstream: s, limits: { maxClients: 64 }, log: () => undefined, pollMicros: ${POLL_US} });
await p.listen(dir + '/inproc.sock');
const pp = new RestrictingProxy({ domid: ${DOMID}, upstream: { privileged: s }, limits: { maxClients: 64 }, log: () => undefined, pollMicros: ${POLL_US} });
await pp.listen(dir + '/inproc-priv.sock');
process.stdout.write('ready\\n');
process.on('SIGTERM', () => Promise.all([p.close(), pp.close()]).then(() => s.close()).then(() => process.exit(0)));`;

const PROXY = `
const { RestrictingProxy } = await import(process.argv[1]);
const up = process.argv[4] === 'privileged' ? { privileged: process.argv[2] } : process.argv[2];
const p = new RestrictingProxy({ domid: ${DOMID}, upstream: up, limits: { maxClients: 64 }, log: () => undefined, pollMicros: ${POLL_US} });
await p.listen(process.argv[3]);
process.stdout.write('ready\\n');
process.on('SIGTERM', () => p.close().then(() => process.exit(0)));`;

/** Reads of NODE per second (the cached-perms path of the privileged mode). */
async function reads(sock, nClients, pipelined) {
  const clients = await Promise.all(
    Array.from({ length: nClients }, () => XenstoreClient.connect({ path: sock })),
  );
  const end = performance.now() + SECONDS * 1000;
  let count = 0;
  async function worker(c) {
    while (performance.now() < end) {
      if (pipelined) {
        await Promise.all(Array.from({ length: DEPTH }, () => c.read(NODE)));
        count += DEPTH;
      } else {
        await c.read(NODE);
        count++;
      }
    }
  }
  await Promise.all(clients.map((c) => worker(c)));
  for (const c of clients) c.close();
  return count / SECONDS;
}

// QEMU 7.2's start-up requests, from the catalogue (the keys QEMU's Xen code touches, with the
// source of each): every entry a deprivileged DM needs at start-up, each of its reads, watches
// and writes once, in catalogue order, one request at a time as libxenstore's calls are made.
const SAMPLE = { type: 'vkbd', devid: '0', n: '1', hex: 'f0000000' };
function instantiate(pattern) {
  const open = pattern.indexOf('{');
  if (open < 0) return [pattern];
  const close = pattern.indexOf('}', open);
  const inner = pattern.slice(open + 1, close);
  const choices =
    inner === 'domid'
      ? [String(DOMID)]
      : PLACEHOLDERS[inner] !== undefined
        ? [SAMPLE[inner]]
        : inner.split(',');
  return choices.flatMap((c) =>
    instantiate(`${pattern.slice(0, open)}${c}${pattern.slice(close + 1)}`),
  );
}
const FROM_CATALOGUE = CATALOGUE.filter(
  (e) => e.deprivNeeds && e.when.startsWith('startup'),
).flatMap((e) =>
  instantiate(e.pattern).flatMap((p) =>
    ['read', 'watch', 'write'].filter((op) => e.ops.includes(op)).map((op) => [op, p, 0]),
  ),
);

// --sequence FILE: a proxy's log with `trace: true` (xen-deprivd at log level debug, or
// `xs-restrict proxy --trace`: JSON lines, events "forwarded" and "refused") of a real QEMU
// starting, replayed in its order, each recorded client on a connection of its own opened at its
// first request, the recorded domid's path elements made DOMID's; requests in a transaction run
// in a live one. Default: bench/xenstore-proxy/qemu-7.2-startup.jsonl, recorded in the Xen lab
// (test/xen/qemu-launcher-xl.xen.mjs writes reports/xs-proxy-qemu-startup-all.jsonl); with
// --catalogue, the catalogue's start-up entries on one connection.
const seqIdx = process.argv.indexOf('--sequence');
const SEQUENCE_FILE = process.argv.includes('--catalogue')
  ? undefined
  : seqIdx > 0
    ? process.argv[seqIdx + 1]
    : path.join(here, 'qemu-7.2-startup.jsonl');
const STARTUP = SEQUENCE_FILE ? fromTrace(SEQUENCE_FILE, DOMID) : FROM_CATALOGUE;
const STARTUP_SOURCE = SEQUENCE_FILE ? `recorded, ${path.basename(SEQUENCE_FILE)}` : 'catalogue';

/**
 * Lets the previous start-up's teardown (its unwatches and closes, which the proxy and the daemon
 * handle after the client has gone) finish before the next is timed: DMs start seconds apart, not
 * within a millisecond of the last one's connections closing.
 */
const STARTUP_ROUNDS = 61;
const settle = () => new Promise((r) => setTimeout(r, 20));

// --steps: also each request's wall time (and each connect's), median per step and target.
const STEPS = process.argv.includes('--steps');

/** Wall time of the start-up sequence (sequence.mjs replay), in ms; `steps` as replay's. */
const startup = (sock, steps) => replay(XenstoreClient, sock, STARTUP, steps);

async function pairs(sock, nClients, pipelined) {
  const clients = await Promise.all(
    Array.from({ length: nClients }, () => XenstoreClient.connect({ path: sock })),
  );
  const end = performance.now() + SECONDS * 1000;
  let count = 0;
  async function worker(c, i) {
    while (performance.now() < end) {
      if (pipelined) {
        const batch = [];
        for (let k = 0; k < DEPTH; k++) {
          batch.push(c.write(NODE, String(i * 1000 + k)).then(() => c.read(NODE)));
        }
        await Promise.all(batch);
        count += DEPTH;
      } else {
        await c.write(NODE, String(i));
        await c.read(NODE);
        count++;
      }
    }
  }
  await Promise.all(clients.map((c, i) => worker(c, i)));
  for (const c of clients) c.close();
  return count / SECONDS;
}

await startReady(['--input-type=module', '-e', SERVER, path.join(dist, 'index.js'), dir]);
const dom0 = await XenstoreClient.connect({ path: `${dir}/xs.sock` });
await dom0.write(NODE, '0');
for (const p of [`/local/domain/0/device-model/${DOMID}`, NODE]) {
  await dom0.setPerms(p, [
    { domid: 0, perm: 'n' },
    { domid: DOMID, perm: 'b' },
  ]);
}
await dom0.mkdir(`/local/domain/${DOMID}`);
await dom0.setPerms(`/local/domain/${DOMID}`, [{ domid: DOMID, perm: 'n' }]);
// The nodes the start-up requests let through name exist, readable and writable by DOMID as its
// device-model directory is; those the proxy refused are left alone.
const granted = STARTUP.filter(([, p, , , refused]) => p !== undefined && !refused);
for (const p of new Set(granted.map(([, p]) => p))) {
  await dom0.write(p, 'v');
  await dom0.setPerms(
    p,
    p.startsWith('/local/domain/0/')
      ? [
          { domid: 0, perm: 'n' },
          { domid: DOMID, perm: 'b' },
        ]
      : [{ domid: DOMID, perm: 'n' }],
  );
}
dom0.close();
await startReady([
  '--input-type=module',
  '-e',
  PROXY,
  path.join(dist, 'index.js'),
  `${dir}/dom${DOMID}.sock`,
  `${dir}/proxy.sock`,
]);
await startReady([
  '--input-type=module',
  '-e',
  PROXY,
  path.join(dist, 'index.js'),
  `${dir}/xs.sock`,
  `${dir}/proxy-priv.sock`,
  'privileged',
]);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const TARGETS = [
  ['direct', `${dir}/dom${DOMID}.sock`],
  ['proxy in-process', `${dir}/inproc.sock`],
  ['proxy own process', `${dir}/proxy.sock`],
  ['privileged in-process', `${dir}/inproc-priv.sock`],
  ['privileged own process', `${dir}/proxy-priv.sock`],
].filter(([name]) => name === 'direct' || !TARGET_NAMES || TARGET_NAMES.includes(name));
// Round r starts at target r: each target follows each other one as often (a target measured
// right after a proxy in its own process would otherwise always share the cores with its drain).
const rotated = (r) => TARGETS.map((_, i) => TARGETS[(i + r) % TARGETS.length]);
const cases = [
  ['pairs, 1 client, sequential', (s) => pairs(s, 1, false)],
  ['pairs, 1 client, 16 in flight', (s) => pairs(s, 1, true)],
  ['pairs, 4 clients, sequential', (s) => pairs(s, 4, false)],
  ['pairs, 4 clients, 16 in flight', (s) => pairs(s, 4, true)],
  ['reads, 1 client, sequential', (s) => reads(s, 1, false)],
  ['reads, 1 client, 16 in flight', (s) => reads(s, 1, true)],
  ['reads, 4 clients, 16 in flight', (s) => reads(s, 4, true)],
];
console.log(
  `per second (write+read pairs, or reads), ${SECONDS}s per run, median of ${ROUNDS} alternating rounds, poll ${POLL_US} µs; load ${load()}`,
);
const ratios = [];
const f = (x) => x.toFixed(0).padStart(7);
for (const [label, run] of cases.filter(([l]) => l.includes(ONLY))) {
  const runs = new Map(TARGETS.map(([name]) => [name, []]));
  for (let r = 0; r < ROUNDS; r++)
    for (const [name, sock] of rotated(r)) runs.get(name).push(await run(sock));
  const d = median(runs.get('direct'));
  const cols = TARGETS.slice(1).map(([name]) => {
    const m = median(runs.get(name));
    return `${name} ${f(m)} ${(m / d).toFixed(2)}x`;
  });
  console.log([`${label.padEnd(31)} direct ${f(d)}`, ...cols].join(' | '));
  const priv = median(runs.get('privileged in-process')) / d;
  ratios.push(
    `ratio privileged in-process / direct, ${label}: ${priv.toFixed(2)}x (target >= ${label.startsWith('reads') ? '0.85' : '0.6'}x)`,
  );
}
// The start-up sequence: wall time, so the ratio is proxy over direct (lower is better).
if (ONLY && !'QEMU start-up'.includes(ONLY)) {
  for (const line of ratios) console.log(line);
  console.log(`load ${load()}`);
  process.exit(0);
}
// The proxy refuses what the catalogue does not grant (5 of QEMU's 14 requests) where the daemon
// may say OK: the client then builds a JavaScript error, whose stack trace alone costs tens of µs
// in this process. QEMU's libxenstore gets an errno; so does this client, without the stack.
Error.stackTraceLimit = 0;
// Each target first runs the sequence untimed: a proxy serves DM after DM for as long as the host
// runs, so its code is compiled by the time a QEMU starts; so is the daemon's (direct). After 50
// start-ups V8 is not done: with --trace-opt, the server's process (the daemon and the proxies in
// it) still optimized 30 to 32 functions during the 61 timed runs, the proxy's among them
// (fromClient, forward, drainInbox, fromUpstream); after 1000, 10 to 14 in all three processes.
// The compiles run on a thread of their own, beside client and server on the machine's cores.
// So the target's figure is taken after 1000 start-ups a target (--warmup), and the one after 50
// (--early) printed before it: what a service that has started few DMs yet sees.
const TIMED_STARTUPS = Math.max(ROUNDS, STARTUP_ROUNDS);
let warmed = 0;
async function timeStartups(warmup) {
  for (; warmed < warmup; warmed++) for (const [, sock] of TARGETS) await startup(sock);
  const ms = new Map(TARGETS.map(([name]) => [name, []]));
  const stepRuns = new Map(TARGETS.map(([name]) => [name, []]));
  for (let r = 0; r < TIMED_STARTUPS; r++)
    for (const [name, sock] of rotated(r)) {
      await settle();
      const steps = STEPS ? [] : undefined;
      ms.get(name).push(await startup(sock, steps));
      if (steps) stepRuns.get(name).push(steps);
    }
  warmed += TIMED_STARTUPS;
  return { ms, stepRuns };
}
function printStartups(title, ms) {
  const d0 = median(ms.get('direct'));
  console.log(
    [
      `${title} direct ${d0.toFixed(1)} ms`,
      ...TARGETS.slice(1).map(([name]) => {
        const m = median(ms.get(name));
        return `${name} ${m.toFixed(1)} ms ${(m / d0).toFixed(2)}x`;
      }),
    ].join(' | '),
  );
  return median(ms.get('privileged in-process')) / d0;
}
const what = `QEMU start-up (${STARTUP.length} requests, ${STARTUP_SOURCE})`;
if (STARTUP_EARLY > 0 && STARTUP_EARLY < STARTUP_WARMUP) {
  const early = await timeStartups(STARTUP_EARLY);
  printStartups(`${what} after ${STARTUP_EARLY} start-ups (V8 still compiling):`, early.ms);
}
const { ms, stepRuns } = await timeStartups(STARTUP_WARMUP);
if (STEPS) {
  // One row per connect or request, in the sequence's order: median µs per target.
  const labels = [];
  const seen = new Set();
  for (const [op, p, , client = 0] of STARTUP) {
    if (!seen.has(client)) {
      seen.add(client);
      labels.push(`connect (client ${client})`);
    }
    labels.push(`${op} ${p}`);
  }
  console.log(`start-up steps, median µs: ${TARGETS.map(([name]) => name).join(' | ')}`);
  labels.forEach((label, i) => {
    const cells = TARGETS.map(([name]) =>
      (median(stepRuns.get(name).map((st) => st[i])) * 1000).toFixed(0).padStart(6),
    );
    console.log(`${cells.join(' ')}  ${label}`);
  });
}
const startupRatio = printStartups(`${what} after ${STARTUP_WARMUP} start-ups:`, ms);
ratios.push(
  `ratio privileged in-process / direct, QEMU start-up wall time: ${startupRatio.toFixed(2)}x (target <= 1.2x)`,
);
for (const line of ratios) console.log(line);
console.log(`load ${load()}`);
process.exit(0);
