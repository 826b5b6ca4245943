import { Command, Option } from 'commander';
import { commands, type GlobalOptions } from './commands/index.js';
import { EXIT_TABLE } from './errors.js';
import { color } from './output.js';
import { packageVersion } from './service/rpc.js';

/**
 * The `xen-depriv` command tree, without parsing anything: the CLI runs it, and the man page
 * and shell completion are generated from it (one source for --help, man and completion).
 */
export function buildProgram(wantsJson = false): Command {
  const program = new Command('xen-depriv')
    .description('Run QEMU device models for Xen deprivileged: launch, verify, tear down, audit.')
    .version(packageVersion())
    .option('--json', 'machine-readable JSON on stdout')
    .option('--debug', 'show stack traces on errors')
    .option('--log-json', 'structured logs (JSON lines) on stderr')
    .addOption(new Option('--no-color', 'no colours (NO_COLOR is honoured too)'))
    .showHelpAfterError(wantsJson ? false : '(run with --help for usage)')
    .exitOverride()
    .configureOutput({
      // With --json the usage error is reported once, as JSON, below.
      outputError: (str, write) => {
        if (!wantsJson) write(color.bad(str));
      },
    })
    .addHelpText(
      'after',
      `
Exit codes (every command):
${EXIT_TABLE.map((e) => `  ${e.exit}  ${e.meaning}`).join('\n')}
With --json an error is one object on stdout: {"ok":false,"error","code","hint","exitCode"}.`,
    );
  for (const register of commands) register(program, () => program.opts<GlobalOptions>());
  return program;
}
