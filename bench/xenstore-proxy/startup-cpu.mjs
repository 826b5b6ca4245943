#!/usr/bin/env node
// Where QEMU's start-up time goes through the privileged proxy: the recorded sequence
// (qemu-7.2-startup.jsonl, as run.mjs replays it) against a server in a child process, direct
// and through the privileged proxy in that process, one target at a time; prints the mean wall
// time per start-up and the server process's CPU per start-up (utime, stime from /proc).
//   node bench/xenstore-proxy/startup-cpu.mjs [--runs 1500] [--gap 5] [--pin same|apart]
// --gap: ms of quiet before each start-up; --pin: server and client on one core, or on two
// (taskset), to separate the CPU both spend from the scheduler's hand-offs between them.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromTrace, replay } from './sequence.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, '../../packages/xs-restrict/dist/index.js');
const { XenstoreClient } = await import(dist);
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const RUNS = Number(arg('--runs', 1500));
const GAP = Number(arg('--gap', 5));
const PIN = arg('--pin', undefined);
const TICK_MS = 1000 / 100; // USER_HZ
Error.stackTraceLimit = 0;

const ops = fromTrace(path.join(here, 'qemu-7.2-startup.jsonl'), 5);

async function measure(target) {
  const dir = mkdtempSync('/tmp/xspc-cpu-');
  const server = `
    const { XenstoreServer, RestrictingProxy } = await import(${JSON.stringify(dist)});
    const s = new XenstoreServer();
    await s.listen('${dir}/xs.sock');
    await s.listenDomain(5, '${dir}/dom5.sock');
    const p = new RestrictingProxy({ domid: 5, upstream: { privileged: s }, log: () => undefined });
    await p.listen('${dir}/priv.sock');
    process.stdout.write('ready\\n');`;
  const node = [process.execPath, '--input-type=module', '-e', server];
  const cmd = PIN ? ['taskset', '-c', PIN === 'same' ? '0' : '1', ...node] : node;
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise((r) => child.stdout.on('data', (d) => d.toString().includes('ready') && r()));
    const dom0 = await XenstoreClient.connect({ path: `${dir}/xs.sock` });
    await dom0.mkdir('/local/domain/5');
    await dom0.setPerms('/local/domain/5', [{ domid: 5, perm: 'n' }]);
    for (const [, p] of ops.filter(([, , , , refused]) => !refused)) {
      await dom0.write(p, 'v');
      await dom0.setPerms(p, [
        { domid: 0, perm: 'n' },
        { domid: 5, perm: 'b' },
      ]);
    }
    dom0.close();
    const sock = target === 'direct' ? `${dir}/dom5.sock` : `${dir}/priv.sock`;
    const cpu = () => {
      const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return [Number(f[11]), Number(f[12])];
    };
    let wall = 0;
    let u0 = 0;
    let s0 = 0;
    for (let r = 0; r < 2 * RUNS; r++) {
      if (r === RUNS) [u0, s0] = cpu(); // the first half warms up
      if (GAP > 0) await new Promise((res) => setTimeout(res, GAP));
      const ms = await replay(XenstoreClient, sock, ops);
      if (r >= RUNS) wall += ms;
    }
    const [u1, s1] = cpu();
    return {
      wall: wall / RUNS,
      user: ((u1 - u0) * TICK_MS) / RUNS,
      sys: ((s1 - s0) * TICK_MS) / RUNS,
    };
  } finally {
    child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (PIN) {
  // The client (this process) on core 0; the server on core 0 (same) or 1 (apart).
  spawn('taskset', ['-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 100));
}
const f = (x) => x.toFixed(3);
const rows = {};
for (const t of ['direct', 'privileged in-process']) rows[t] = await measure(t);
for (const [t, m] of Object.entries(rows))
  console.log(
    `${t.padEnd(22)} wall ${f(m.wall)} ms, server cpu ${f(m.user + m.sys)} ms (user ${f(m.user)}, sys ${f(m.sys)}) per start-up`,
  );
const d = rows.direct;
const p = rows['privileged in-process'];
console.log(
  `privileged / direct: wall ${(p.wall / d.wall).toFixed(2)}x, server cpu ${((p.user + p.sys) / (d.user + d.sys)).toFixed(2)}x (${RUNS} start-ups each after as many untimed, gap ${GAP} ms, pin ${PIN ?? 'none'}; load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')})`,
);
process.exit(0);
