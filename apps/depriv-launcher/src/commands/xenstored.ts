import { XenstoreServer } from '@xen-depriv/xs-restrict';
import { CliError, EXIT_USAGE } from '../errors.js';
import { processOutput } from '../output.js';
import type { RegisterCommand } from './index.js';

export const registerXenstored: RegisterCommand = (program, globals) => {
  program
    .command('xenstored')
    .description('serve the embedded xenstored on a unix socket until SIGTERM')
    .requiredOption('--socket <path>', "dom0's socket (privileged)")
    .option(
      '--domain <N=PATH...>',
      "a socket whose every request acts as domain N (the ring page's stand-in)",
    )
    .action(async (opts: { socket: string; domain?: string[] }) => {
      const out = processOutput(Boolean(globals().json));
      const domains = (opts.domain ?? []).map((spec) => {
        const m = /^([0-9]+)=(.+)$/.exec(spec);
        const domid = Number(m?.[1]);
        if (!m?.[2] || domid < 1 || domid > 0x7fef) {
          throw new CliError(`--domain ${spec}: expected N=PATH with 1 <= N <= 32751`, {
            exitCode: EXIT_USAGE,
          });
        }
        return { domid, path: m[2] };
      });
      const server = new XenstoreServer();
      await server.listen(opts.socket);
      for (const d of domains) await server.listenDomain(d.domid, d.path);
      out.line(
        out.json
          ? JSON.stringify({ ok: true, socket: opts.socket, domains })
          : `xenstored: serving ${opts.socket}${domains.map((d) => `, dom${d.domid} on ${d.path}`).join('')}`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      await server.close();
    });
};
