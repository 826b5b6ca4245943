#!/usr/bin/env node
// xen-deprivd: the resident service that runs every device model of a host (see
// src/service/). Runs in the foreground; systemd's unit, tests and operators call it the same way.
import { mkdirSync } from 'node:fs';
import { posix } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import {
  DEFAULT_STATE_DIR,
  DmEngine,
  defaultSettings,
  type EngineSettings,
} from './service/engine.js';
import { DEFAULT_SOCKET } from './service/paths.js';
import { packageVersion, RpcServer } from './service/rpc.js';
import { openrpcDocument } from './service/schema.js';

const program = new Command('xen-deprivd')
  .description(
    'The xen-depriv service: one process per host that launches, supervises and tears down every deprivileged device model, for the CLI, the libxl shim (xen-depriv-dm) and toolstacks over JSON-RPC.',
  )
  .version(packageVersion())
  .option('--socket <path>', 'the JSON-RPC socket (root-only)', DEFAULT_SOCKET)
  .option(
    '--state-dir <dir>',
    'leases, jails, records, proxy sockets, probe cache',
    DEFAULT_STATE_DIR,
  )
  .option(
    '--target <target>',
    'auto (dom0 where /dev/xen/privcmd exists), embedded or dom0',
    'auto',
  )
  .option('--qemu <path>', 'the QEMU a request that names none gets (default per target)')
  .option(
    '--pool <first:count>',
    'the uid pool of requests that name no user scheme (reaper uid = first + count)',
    '3000000:1000',
  )
  .option(
    '--upstream <mode>',
    'dom0: how proxies reach xenstored: privileged or dom0',
    'privileged',
  )
  .option('--openrpc', 'print the OpenRPC description of the API and exit')
  .addHelpText(
    'after',
    `
Defaults: socket ${DEFAULT_SOCKET}, state directory ${DEFAULT_STATE_DIR}.
On a host without Xen it serves the embedded defaults (qemu-system-x86_64 -M none behind the
embedded xenstored), so {"method":"launch","params":{"domid":N}} works there.
The DMs outlive the service: a restart adopts them (the systemd unit uses KillMode=process).
Logs are JSON lines on stderr.`,
  );
program.parse();
const o = program.opts<{
  socket: string;
  stateDir: string;
  target: string;
  qemu?: string;
  pool: string;
  upstream: string;
  openrpc?: boolean;
}>();

if (o.openrpc) {
  process.stdout.write(`${JSON.stringify(openrpcDocument(packageVersion()), null, 2)}\n`);
  process.exit(0);
}

const log = (event: Record<string, unknown>) =>
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);

function settings(): EngineSettings {
  if (!['auto', 'embedded', 'dom0'].includes(o.target)) {
    throw new InvalidArgumentError(`--target: expected auto, embedded or dom0, saw "${o.target}"`);
  }
  if (o.upstream !== 'privileged' && o.upstream !== 'dom0') {
    throw new InvalidArgumentError(`--upstream: expected privileged or dom0, saw "${o.upstream}"`);
  }
  const m = /^(\d+):(\d+)$/.exec(o.pool);
  const first = Number(m?.[1]);
  const count = Number(m?.[2]);
  if (!m || first < 1000 || count < 1 || count > 65536) {
    throw new InvalidArgumentError(
      `--pool: expected FIRST:COUNT with FIRST >= 1000, saw "${o.pool}"`,
    );
  }
  if (!posix.isAbsolute(o.stateDir) || !posix.isAbsolute(o.socket)) {
    throw new InvalidArgumentError('--state-dir and --socket: expected absolute paths');
  }
  return defaultSettings({
    stateDir: o.stateDir,
    ...(o.target === 'auto' ? {} : { target: o.target as 'embedded' | 'dom0' }),
    ...(o.qemu ? { qemu: o.qemu } : {}),
    user: { scheme: 'pool', first, count },
    upstream: o.upstream,
  });
}

try {
  if (process.geteuid?.() !== 0) {
    throw new Error('xen-deprivd needs root (it changes uids, namespaces and mounts)');
  }
  const s = settings();
  mkdirSync(posix.dirname(o.socket), { recursive: true, mode: 0o700 });
  const engine = await DmEngine.open(s, { recover: false });
  const recovered = await engine.recover();
  log({ event: 'recovered', ...recovered });
  const rpc = new RpcServer({ engine, socket: o.socket, log });
  await rpc.listen();
  log({
    event: 'listening',
    socket: o.socket,
    stateDir: s.stateDir,
    target: s.target,
    qemu: s.qemu,
    pid: process.pid,
    hostWorkOffLoop: engine.offLoop,
  });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log({ event: 'stopping', signal, dms: engine.list().length });
    await rpc.close();
    // The DMs run on; the next service adopts them.
    await engine.close();
    process.exit(0);
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => void stop(sig));
} catch (e) {
  process.stderr.write(`xen-deprivd: ${(e as Error).message}\n`);
  process.exit(e instanceof InvalidArgumentError ? 2 : 1);
}
