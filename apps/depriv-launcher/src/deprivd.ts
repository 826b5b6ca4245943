#!/usr/bin/env node
// xen-deprivd: the resident service that runs every device model of a host (see
// src/service/). Runs in the foreground; systemd's unit, tests and operators call it the same way.
import { mkdirSync } from 'node:fs';
import { posix } from 'node:path';
import { Command } from 'commander';
import { pino } from 'pino';
import {
  DEFAULT_CONFIG_FILE,
  ENV_KEYS,
  engineSettings,
  loadServiceConfig,
  ServiceConfigError,
} from './service/config.js';
import { DEFAULT_STATE_DIR, DmEngine } from './service/engine.js';
import { DEFAULT_SOCKET } from './service/paths.js';
import { packageVersion, RpcServer } from './service/rpc.js';
import { openrpcDocument } from './service/schema.js';

export const program = new Command('xen-deprivd')
  .description(
    'The xen-depriv service: one process per host that launches, supervises and tears down every deprivileged device model, for the CLI, the libxl shim (xen-depriv-dm) and toolstacks over JSON-RPC.',
  )
  .version(packageVersion())
  .option('--config <file>', `settings file (JSON; default ${DEFAULT_CONFIG_FILE}, optional)`)
  .option('--socket <path>', `the JSON-RPC socket, root-only (default ${DEFAULT_SOCKET})`)
  .option(
    '--state-dir <dir>',
    `leases, jails, records, proxy sockets, probe cache (default ${DEFAULT_STATE_DIR})`,
  )
  .option(
    '--target <target>',
    'auto (dom0 where /dev/xen/privcmd exists), embedded or dom0 (default auto)',
  )
  .option('--qemu <path>', 'the QEMU a request that names none gets (default per target)')
  .option(
    '--pool <first:count>',
    'uid pool of requests that name no scheme; reaper = first + count (default 3000000:1000)',
  )
  .option(
    '--upstream <mode>',
    'dom0: how proxies reach xenstored: privileged or dom0 (default privileged)',
  )
  .option('--log-level <level>', 'debug, info, warn or error (default info)')
  .option('--openrpc', 'print the OpenRPC description of the API and exit')
  .addHelpText(
    'after',
    `
Settings: ${DEFAULT_CONFIG_FILE} (JSON: socket, stateDir, target, qemu, pool {first,count},
upstream, logLevel), overridden by the environment (${Object.keys(ENV_KEYS).join(', ')};
XEN_DEPRIVD_POOL is FIRST:COUNT), overridden by the options above.
On a host without Xen it serves the embedded defaults (qemu-system-x86_64 -M none behind the
embedded xenstored), so {"method":"launch","params":{"domid":N}} works there.
The DMs outlive the service: a restart adopts them (the systemd unit uses KillMode=process).
Logs are JSON lines (pino) on stderr.
Exit codes: 0 stopped by a signal, 1 failed to start, 2 bad settings.`,
  );

type Flags = {
  config?: string;
  socket?: string;
  stateDir?: string;
  target?: string;
  qemu?: string;
  pool?: string;
  upstream?: string;
  logLevel?: string;
  openrpc?: boolean;
};

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<Flags>();
  if (o.openrpc) {
    process.stdout.write(`${JSON.stringify(openrpcDocument(packageVersion()), null, 2)}\n`);
    return;
  }
  let config: ReturnType<typeof loadServiceConfig>;
  try {
    config = loadServiceConfig({
      file: o.config ?? DEFAULT_CONFIG_FILE,
      required: o.config !== undefined,
      env: process.env,
      flags: {
        socket: o.socket,
        stateDir: o.stateDir,
        target: o.target,
        qemu: o.qemu,
        pool: o.pool,
        upstream: o.upstream,
        logLevel: o.logLevel,
      },
    });
  } catch (e) {
    if (!(e instanceof ServiceConfigError)) throw e;
    process.stderr.write(`xen-deprivd: ${e.message}\n`);
    process.exit(2);
  }
  const log = pino({ name: 'xen-deprivd', level: config.logLevel }, pino.destination(2));
  if (process.geteuid?.() !== 0) {
    process.stderr.write('xen-deprivd: needs root (it changes uids, namespaces and mounts)\n');
    process.exit(1);
  }
  const s = engineSettings(config);
  mkdirSync(posix.dirname(config.socket), { recursive: true, mode: 0o700 });
  const engine = await DmEngine.open(s, { recover: false });
  const recovered = await engine.recover();
  log.info(recovered, 'recovered');
  const rpc = new RpcServer({
    engine,
    socket: config.socket,
    log: ({ event, ...rest }) => log.warn(rest, String(event)),
  });
  await rpc.listen();
  log.info(
    {
      event: 'listening',
      socket: config.socket,
      stateDir: s.stateDir,
      target: s.target,
      qemu: s.qemu,
      hostWorkOffLoop: engine.offLoop,
    },
    'listening',
  );
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, dms: engine.list().length }, 'stopping');
    await rpc.close();
    // The DMs run on; the next service adopts them.
    await engine.close();
    log.flush();
    process.exit(0);
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => void stop(sig));
}

await main().catch((e: unknown) => {
  process.stderr.write(`xen-deprivd: ${(e as Error).message}\n`);
  process.exit(1);
});
