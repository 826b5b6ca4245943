#!/usr/bin/env node
import { XenstoreServer } from './server/server.js';

const USAGE = 'usage: xs-restrict serve --socket PATH [--domain N=PATH ...]';

function fail(msg: string): never {
  process.stderr.write(`xs-restrict: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] !== 'serve')
    fail(`expected the command "serve", got ${JSON.stringify(argv[0] ?? '')}`);
  let socket: string | undefined;
  const domains: [number, string][] = [];
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--socket' && v !== undefined) {
      socket = v;
      i++;
    } else if (a === '--domain' && v !== undefined) {
      const m = /^(\d+)=(.+)$/.exec(v);
      if (!m) fail(`--domain: expected N=PATH, got ${JSON.stringify(v)}`);
      domains.push([Number(m[1]), m[2] as string]);
      i++;
    } else fail(`unexpected argument ${JSON.stringify(a)}`);
  }
  if (!socket) fail('--socket PATH is required');
  const server = new XenstoreServer();
  await server.listen(socket);
  for (const [domid, path] of domains) await server.listenDomain(domid, path);
  const stop = (): void => {
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write('ready\n');
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`xs-restrict: ${(e as Error).message}\n`);
  process.exit(1);
});
