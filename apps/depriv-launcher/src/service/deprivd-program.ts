import { Command } from 'commander';
import { DEFAULT_CONFIG_FILE, ENV_KEYS } from './config.js';
import { DEFAULT_STATE_DIR } from './engine.js';
import { DEFAULT_SOCKET } from './paths.js';
import { packageVersion } from './rpc.js';

/** The `xen-deprivd` options, without parsing: the bin runs it, the man page is made from it. */
export function buildDeprivdProgram(): Command {
  return new Command('xen-deprivd')
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
}
