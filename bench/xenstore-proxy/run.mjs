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
// Rounds alternate direct/proxy; the median of the rounds and the ratio proxy/direct are printed.
// Run from the repository root after `cd packages/xs-restrict && npx tsup`:
//   node bench/xenstore-proxy/run.mjs [--seconds 1] [--rounds 7]
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// XSR_DIST: another build to measure (a copy of an older dist, for a before/after in one session).
const dist = process.env.XSR_DIST ?? path.join(repo, 'packages/xs-restrict/dist');
if (!existsSync(path.join(dist, 'index.js'))) {
  console.error('build first: (cd packages/xs-restrict && npx tsup)');
  process.exit(2);
}
const { XenstoreClient } = await import(path.join(dist, 'index.js'));
const secIdx = process.argv.indexOf('--seconds');
const SECONDS = secIdx > 0 ? Number(process.argv[secIdx + 1]) : 1;
const roundsIdx = process.argv.indexOf('--rounds');
// Other jobs share the machine: many short alternating rounds make the median robust to bursts.
const ROUNDS = roundsIdx > 0 ? Number(process.argv[roundsIdx + 1]) : 7;
const DEPTH = 16;
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

const SERVER = `
const { XenstoreServer, RestrictingProxy } = await import(process.argv[1]);
const dir = process.argv[2];
const s = new XenstoreServer();
await s.listen(dir + '/xs.sock');
await s.listenDomain(${DOMID}, dir + '/dom${DOMID}.sock');
const p = new RestrictingProxy({ domid: ${DOMID}, upstream: s, limits: { maxClients: 64 } });
await p.listen(dir + '/inproc.sock');
const pp = new RestrictingProxy({ domid: ${DOMID}, upstream: { privileged: s }, limits: { maxClients: 64 } });
await pp.listen(dir + '/inproc-priv.sock');
process.stdout.write('ready\\n');
process.on('SIGTERM', () => Promise.all([p.close(), pp.close()]).then(() => s.close()).then(() => process.exit(0)));`;

const PROXY = `
const { RestrictingProxy } = await import(process.argv[1]);
const up = process.argv[4] === 'privileged' ? { privileged: process.argv[2] } : process.argv[2];
const p = new RestrictingProxy({ domid: ${DOMID}, upstream: up, limits: { maxClients: 64 } });
await p.listen(process.argv[3]);
process.stdout.write('ready\\n');
process.on('SIGTERM', () => p.close().then(() => process.exit(0)));`;

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
const cases = [
  ['1 client, sequential', 1, false],
  ['1 client, 16 in flight', 1, true],
  ['4 clients, sequential', 4, false],
  ['4 clients, 16 in flight', 4, true],
];
console.log(`pairs/s (write+read), ${SECONDS}s per run, median of ${ROUNDS} alternating rounds`);
for (const [label, n, pipe] of cases) {
  const runs = { direct: [], inproc: [], hop: [], privIn: [], privHop: [] };
  for (let r = 0; r < ROUNDS; r++) {
    runs.direct.push(await pairs(`${dir}/dom${DOMID}.sock`, n, pipe));
    runs.inproc.push(await pairs(`${dir}/inproc.sock`, n, pipe));
    runs.hop.push(await pairs(`${dir}/proxy.sock`, n, pipe));
    runs.privIn.push(await pairs(`${dir}/inproc-priv.sock`, n, pipe));
    runs.privHop.push(await pairs(`${dir}/proxy-priv.sock`, n, pipe));
  }
  const d = median(runs.direct);
  const f = (x) => x.toFixed(0).padStart(7);
  const col = (name, xs) => `${name} ${f(median(xs))} ${(median(xs) / d).toFixed(2)}x`;
  console.log(
    [
      `${label.padEnd(24)} direct ${f(d)}`,
      col('proxy in-process', runs.inproc),
      col('proxy own process', runs.hop),
      col('privileged in-process', runs.privIn),
      col('privileged own process', runs.privHop),
    ].join(' | '),
  );
}
process.exit(0);
