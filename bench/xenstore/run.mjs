#!/usr/bin/env node
// xenstore benchmark: the same clients (XenstoreClient, and load.c, a client in C that costs a
// fraction of any daemon's CPU per request) against
//   - the real C xenstored of Xen 4.17 and oxenstored (../shared/tools/xenstored-peer, dom0 socket),
//   - XenstoreServer in a separate process (`xs-restrict serve`),
//   - raw unix-socket echo servers in Node and in C (echo.c, built with cc if there is one): the
//     round-trip baseline, and the most any server can reach with the same client (`ceiling`
//     lines: where an echo server is not 1.5x a daemon, no server can be).
// Run from the repository root after `cd packages/xs-restrict && npx tsup`:
//   node bench/xenstore/run.mjs [--seconds 2] [--poll-us 100] [--client both|c|node]
// (--poll-us 0: no polling server or echo; our server runs both ways otherwise). The targets are
// read on the C client's figures: pipelined, the Node client is the bound (a whole core against C
// xenstored at 1 client), so its figures measure the client as much as the daemon; they are
// printed too (`Node client …` lines), without a target; with --client node (or no C compiler),
// the targets are read on the Node client's.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLoadC, runLoadC } from './load-c.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// XSR_DIST: another build to measure (a copy of an older dist, for a before/after in one session).
const dist = process.env.XSR_DIST ?? path.join(repo, 'packages/xs-restrict/dist');
if (!existsSync(path.join(dist, 'index.js'))) {
  console.error('build first: (cd packages/xs-restrict && npx tsup)');
  process.exit(2);
}
const { XenstoreClient, XS_READ } = await import(path.join(dist, 'index.js'));
const peerSh = path.resolve(repo, '../shared/tools/xenstored-peer/peer.sh');
const secIdx = process.argv.indexOf('--seconds');
const SECONDS = secIdx > 0 ? Number(process.argv[secIdx + 1]) : 2;
const DEPTH = 16;
// Our server also runs with --poll-us (src/poll.ts), and so does a Node echo, its ceiling.
const pollIdx = process.argv.indexOf('--poll-us');
const POLL_US = pollIdx > 0 ? Number(process.argv[pollIdx + 1]) : 100;
const clientIdx = process.argv.indexOf('--client');
const CLIENT = clientIdx > 0 ? process.argv[clientIdx + 1] : 'both';
if (!['both', 'c', 'node'].includes(CLIENT)) {
  console.error(`--client: expected both, c or node, got ${CLIENT}`);
  process.exit(2);
}

const dir = mkdtempSync('/tmp/xsb-');
const children = [];
const peers = [];

function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  for (const p of peers) execFileSync(peerSh, ['stop', p], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

function startReady(args, exe = process.execPath) {
  return new Promise((resolve, reject) => {
    const c = spawn(exe, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(c);
    c.stdout.on('data', (d) => {
      if (d.toString().includes('ready')) resolve(c);
    });
    c.once('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}`)));
  });
}

// argv: socket path, then microseconds to keep polling after data (as --poll-us: 0 blocks at once).
const ECHO = `
const net = require('node:net');
const windowMs = Number(process.argv[2] ?? 0) / 1000;
let last = 0, polling = false;
const turn = () => { if (performance.now() - last < windowMs) setImmediate(turn); else polling = false; };
const s = net.createServer((c) => {
  c.setNoDelay(true);
  c.on('data', (d) => {
    if (windowMs > 0) { last = performance.now(); if (!polling) { polling = true; setImmediate(turn); } }
    c.write(d);
  });
  c.on('error', () => {});
});
s.listen(process.argv[1], () => process.stdout.write('ready\\n'));
process.on('SIGTERM', () => process.exit(0));`;

async function pairs(sock, nClients, pipelined) {
  const clients = await Promise.all(
    Array.from({ length: nClients }, () => XenstoreClient.connect({ path: sock })),
  );
  const end = performance.now() + SECONDS * 1000;
  let count = 0;
  const worker = async (c, w) => {
    let i = 0;
    while (performance.now() < end) {
      const key = `/bench/c${w}/k${i++ % 64}`;
      await c.write(key, 'value-0123456789');
      await c.read(key);
      count++;
    }
  };
  const t0 = performance.now();
  await Promise.all(
    clients.flatMap((c, k) =>
      Array.from({ length: pipelined ? DEPTH : 1 }, (_, j) => worker(c, k * DEPTH + j)),
    ),
  );
  const secs = (performance.now() - t0) / 1000;
  for (const c of clients) {
    await c.rm('/bench').catch(() => undefined);
    c.close();
  }
  return count / secs;
}

/** The same load from load.c (its pairs per second); loadC is unset without a C compiler. */
let loadC;
const cPairs = (sock, nClients, pipelined) =>
  runLoadC(loadC, sock, nClients, pipelined ? DEPTH : 1, SECONDS, children);

async function rtt(sock) {
  const c = await XenstoreClient.connect({ path: sock });
  // warm-up, then one outstanding request at a time; the echo server returns the request itself
  for (let i = 0; i < 2000; i++) await c.request(XS_READ, '/tool\0');
  const end = performance.now() + SECONDS * 1000;
  let n = 0;
  const t0 = performance.now();
  while (performance.now() < end) {
    await c.request(XS_READ, '/tool\0');
    n++;
  }
  const us = ((performance.now() - t0) * 1000) / n;
  c.close();
  return us;
}

const targets = [];
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
console.log(`load ${load()}`);
for (const [impl, name] of [
  ['c', 'C xenstored 4.17'],
  ['ocaml', 'oxenstored 4.17'],
]) {
  try {
    execFileSync(peerSh, ['start', `${dir}/peer-${impl}`], {
      stdio: 'ignore',
      env: { ...process.env, XS_DOMS: '', XS_IMPL: impl },
    });
    peers.push(`${dir}/peer-${impl}`);
    targets.push([name, `${dir}/peer-${impl}/socket`]);
  } catch (e) {
    console.error(`${name} not available (${e.message.split('\n')[0]}); comparing without it`);
  }
}
await startReady([path.join(dist, 'cli.js'), 'serve', '--socket', `${dir}/xsr.sock`]);
targets.push(['XenstoreServer', `${dir}/xsr.sock`]);
const OURS_POLL = `XenstoreServer --poll-us ${POLL_US}`;
if (POLL_US > 0) {
  await startReady([
    path.join(dist, 'cli.js'),
    'serve',
    '--socket',
    `${dir}/xsr-poll.sock`,
    '--poll-us',
    String(POLL_US),
  ]);
  targets.push([OURS_POLL, `${dir}/xsr-poll.sock`]);
}
await startReady(['-e', ECHO, `${dir}/echo.sock`, '0']);
// The echo server in C, if a compiler is here: the bound for any server, not only one in Node.
const echoes = [['unix echo', `${dir}/echo.sock`]];
if (POLL_US > 0) {
  await startReady(['-e', ECHO, `${dir}/echo-poll.sock`, String(POLL_US)]);
  echoes.push([`unix echo, poll ${POLL_US} us`, `${dir}/echo-poll.sock`]);
}
try {
  execFileSync('cc', ['-O2', '-o', `${dir}/echo-c`, path.join(repo, 'bench/xenstore/echo.c')]);
  await startReady([`${dir}/echo-c.sock`], `${dir}/echo-c`);
  echoes.push(['unix echo (C)', `${dir}/echo-c.sock`]);
} catch (e) {
  console.error(`no C echo server (${e.message.split('\n')[0]}); the Node one only`);
}
const clients = [];
if (CLIENT !== 'node') {
  try {
    loadC = buildLoadC(dir);
    clients.push(['C', cPairs]);
  } catch (e) {
    console.error(`no C client (${e.message.split('\n')[0]}); the Node one only`);
  }
}
if (CLIENT !== 'c' || !loadC) clients.push(['Node', pairs]);

// Alternate the servers round by round and keep the median, so a burst of load from
// elsewhere on the machine does not land on one server only.
const ROUNDS = 3;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const samples = new Map([...targets, ...echoes].map(([name]) => [name, {}]));
const add = (name, key, v) => {
  const r = samples.get(name);
  r[key] ??= [];
  r[key].push(v);
};
for (let round = 0; round < ROUNDS; round++) {
  for (const [client, run] of clients)
    for (const n of [1, 4]) {
      for (const pipelined of [false, true]) {
        const key = `${client} ${n} ${pipelined ? 'pipe' : 'seq'}`;
        for (const [name, sock] of targets) add(name, key, await run(sock, n, pipelined));
        // The same client against a server that does no work: the most any server can reach over
        // this transport (a WRITE or READ comes back as its own reply, which the client takes).
        for (const [name, sock] of echoes) add(name, key, await run(sock, n, pipelined));
      }
    }
  for (const [name, sock] of targets) add(name, 'rtt', await rtt(sock));
  for (const [name, sock] of echoes) add(name, 'rtt', await rtt(sock));
}
const medians = (name) =>
  Object.fromEntries(Object.entries(samples.get(name)).map(([k, v]) => [k, median(v)]));
const rows = targets.map(([name]) => ({ name, ...medians(name) }));
const echoRtt = medians('unix echo').rtt;

const cols = ['1 seq', '1 pipe', '4 seq', '4 pipe'];
const fmt = (v) => Math.round(v).toString().padStart(10);
console.log(
  `write+read pairs per second (median of ${ROUNDS} rounds of ${SECONDS} s; pipe = ${DEPTH} pairs in flight per client), and 1-client RTT (Node client)`,
);
for (const [client] of clients) {
  console.log(
    `${`${client} client: server`.padEnd(30)}${cols.map((c) => c.padStart(10)).join('')}   RTT (us)`,
  );
  for (const r of [...rows, ...echoes.map(([name]) => ({ name, ...medians(name) }))])
    console.log(
      `${r.name.padEnd(30)}${cols.map((c) => fmt(r[`${client} ${c}`])).join('')}   ${r.rtt.toFixed(1)}`,
    );
}
// What no server can beat: a target of 1.5x over X is out of reach where an echo server (no work
// per request, the same client and socket) is itself less than 1.5x X. The C one bounds any
// server; the Node one, a server in Node.
const daemons = rows.filter((r) => !r.name.startsWith('XenstoreServer'));
const short = (name) => name.replace(/ 4\.17$/, '');
for (const [client] of clients)
  for (const [name] of echoes) {
    const e = medians(name);
    for (const other of daemons)
      for (const col of cols)
        console.log(
          `ceiling ${client} client, ${name} / ${short(other.name)}, ${col}: ${(e[`${client} ${col}`] / other[`${client} ${col}`]).toFixed(2)}x`,
        );
  }
for (const [name] of echoes)
  for (const other of daemons)
    console.log(
      `ceiling ${short(other.name)} RTT / ${name} RTT: ${(other.rtt / medians(name).rtt).toFixed(2)}x`,
    );
// The targets on the C client's figures (the daemon's, not the client's); the Node client's too.
for (const [client] of clients) {
  const measured = client === clients[0][0];
  for (const ours of rows.filter((r) => r.name.startsWith('XenstoreServer')))
    for (const other of daemons)
      for (const col of cols) {
        const x = (ours[`${client} ${col}`] / other[`${client} ${col}`]).toFixed(2);
        console.log(
          measured
            ? `ratio ${ours.name} / ${short(other.name)}, ${col}: ${x}x (target >= 1.5x)`
            : `${client} client ${ours.name} / ${short(other.name)}, ${col}: ${x}x`,
        );
      }
}
// The round trip against the echo that works as the server does: blocking, or polling.
const ours = rows.find((r) => r.name === 'XenstoreServer');
console.log(
  `ratio XenstoreServer RTT / echo RTT: ${(ours.rtt / echoRtt).toFixed(2)}x (target <= 1.3x)`,
);
const polled = rows.find((r) => r.name === OURS_POLL);
if (polled) {
  const echoPollRtt = medians(`unix echo, poll ${POLL_US} us`).rtt;
  console.log(
    `ratio ${OURS_POLL} RTT / polling echo RTT: ${(polled.rtt / echoPollRtt).toFixed(2)}x (target <= 1.3x)`,
  );
}
console.log(`load ${load()}`);
process.exit(0);
