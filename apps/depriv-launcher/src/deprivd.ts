#!/usr/bin/env node
// xen-deprivd: the resident service that runs every device model of a host (see
// src/service/). Runs in the foreground; systemd's unit, tests and operators call it the same way.
import { mkdirSync } from 'node:fs';
import { posix } from 'node:path';
import { pino } from 'pino';
import {
  DEFAULT_CONFIG_FILE,
  engineSettings,
  loadServiceConfig,
  ServiceConfigError,
} from './service/config.js';
import { buildDeprivdProgram } from './service/deprivd-program.js';
import { DmEngine } from './service/engine.js';
import { packageVersion, RpcServer } from './service/rpc.js';
import { openrpcDocument } from './service/schema.js';

const program = buildDeprivdProgram();

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
