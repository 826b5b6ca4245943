#!/usr/bin/env node
// The xs-restrict bin: `serve` runs the embedded xenstored, `proxy` runs one restricting proxy
// for a device model. Arguments are parsed by node:util's parseArgs.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { RestrictingProxy } from './proxy/proxy.js';
import { XenstoreServer } from './server/server.js';

const USAGE = `usage: xs-restrict <command> [options]

commands:
  serve   the embedded xenstored: dom0 on --socket, each --domain N=PATH a socket whose
          every request acts as domain N (the stand-in for a guest's ring page)
            --socket PATH        dom0's socket (required)
            --domain N=PATH      a domain's socket (repeatable)
            --poll-us N          keep polling for N microseconds after a socket had data
                                 instead of blocking at once (default 0: block at once)
  proxy   a restricting proxy for the device model of domain N: only the xenstore requests
          QEMU makes (the catalogue's allowlist) reach the daemon, acting as domain N
            --domid N            the guest domain the DM serves (required)
            --listen PATH        the socket the DM connects to (required)
            --upstream PATH      the daemon's socket (default /run/xenstored/socket)
            --privileged         the upstream is the daemon's privileged dom0 socket: the proxy
                                 decides every request as xenstored 4.17 decides it for domain N
                                 (the default is a socket that already acts as domain N)
            --trace              also log every request let through (event "forwarded")
            --poll-us N          as serve's

options:
  -h, --help       this text (also after a command)
  -v, --version    the package version

Refusals (and with --trace every request) are logged as JSON lines (pino) on stderr. Exit codes: 0 stopped by SIGTERM/SIGINT, 1 failed,
2 bad usage.`;

function fail(msg: string): never {
  process.stderr.write(`xs-restrict: ${msg}\n(run xs-restrict --help for usage)\n`);
  process.exit(2);
}

function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === '@xen-depriv/xs-restrict' && pkg.version) return pkg.version;
    } catch {
      // The other layout (dist/ or src/).
    }
  }
  return '0.0.0';
}

function args(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        socket: { type: 'string' },
        domain: { type: 'string', multiple: true },
        domid: { type: 'string' },
        listen: { type: 'string' },
        upstream: { type: 'string' },
        privileged: { type: 'boolean' },
        trace: { type: 'boolean' },
        'poll-us': { type: 'string' },
      },
    });
  } catch (e) {
    return fail((e as Error).message);
  }
}

function domid(text: string, what: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 0x7fef)
    fail(`${what}: expected a domid 1..32751, got ${JSON.stringify(text)}`);
  return n;
}

function pollMicros(text = '0'): number {
  if (!/^\d+$/.test(text) || Number(text) > 1_000_000)
    fail(`--poll-us: expected microseconds 0..1000000, got ${JSON.stringify(text)}`);
  return Number(text);
}

function onStop(close: () => Promise<void>): void {
  const stop = (): void => {
    void close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function main(argv: string[]): Promise<void> {
  const { values: o, positionals } = args(argv);
  if (o.version) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  if (o.help || positionals.length === 0) {
    process.stdout.write(`${USAGE}\n`);
    if (!o.help) process.exitCode = 2;
    return;
  }
  const [command, ...extra] = positionals;
  if (extra.length > 0) fail(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (command === 'serve') {
    if (!o.socket) fail('serve: --socket PATH is required');
    const domains = (o.domain ?? []).map((spec) => {
      const m = /^(\d+)=(.+)$/.exec(spec);
      if (!m) fail(`--domain: expected N=PATH, got ${JSON.stringify(spec)}`);
      return [domid(m[1] as string, '--domain'), m[2] as string] as const;
    });
    const server = new XenstoreServer({ pollMicros: pollMicros(o['poll-us']) });
    await server.listen(o.socket);
    for (const [d, path] of domains) await server.listenDomain(d, path);
    onStop(() => server.close());
    process.stdout.write('ready\n');
    return;
  }
  if (command === 'proxy') {
    if (o.domid === undefined) fail('proxy: --domid N is required');
    if (!o.listen) fail('proxy: --listen PATH is required');
    const upstream = o.upstream ?? '/run/xenstored/socket';
    // No pino timestamp: each record has its own "time" (ISO 8601), and a line with the key
    // twice is JSON whose reading depends on the parser.
    const logger = pino(
      { name: 'xs-restrict-proxy', base: { pid: process.pid }, timestamp: false },
      pino.destination(2),
    );
    const proxy = new RestrictingProxy({
      domid: domid(o.domid, '--domid'),
      upstream: o.privileged ? { privileged: upstream } : upstream,
      // The proxy's records (ProxyLogRecord) through pino, one JSON line each on stderr.
      log: (line) => {
        const rec = JSON.parse(line) as { event: string };
        if (rec.event === 'forwarded') logger.info(rec, 'proxy');
        else logger.warn(rec, 'proxy');
      },
      trace: o.trace === true,
      pollMicros: pollMicros(o['poll-us']),
    });
    await proxy.listen(o.listen);
    onStop(() => proxy.close());
    process.stdout.write('ready\n');
    return;
  }
  fail(`unknown command ${JSON.stringify(command)} (serve or proxy)`);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`xs-restrict: ${(e as Error).message}\n`);
  process.exit(1);
});
