#!/usr/bin/env node
import { CommanderError } from 'commander';
import type { GlobalOptions } from './commands/index.js';
import { CliError, EXIT_FAILED, EXIT_OK, EXIT_USAGE } from './errors.js';
import { color, processOutput } from './output.js';
import { buildProgram } from './program.js';

// Known before commander parses: its own usage errors honour --json too.
const wantsJson = process.argv.slice(2).includes('--json');

// A reader that stops early (`| head`) is not an error of ours.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

const program = buildProgram(wantsJson);

try {
  await program.parseAsync(process.argv);
  process.exitCode ??= EXIT_OK;
} catch (err) {
  process.exitCode = report(err, program.opts<GlobalOptions>());
}

function report(err: unknown, opts: GlobalOptions): number {
  if (err instanceof CommanderError) {
    if (
      err.code === 'commander.helpDisplayed' ||
      err.code === 'commander.version' ||
      err.code === 'commander.help'
    )
      return EXIT_OK;
    if (opts.json || wantsJson) {
      processOutput(true).line(
        JSON.stringify({
          ok: false,
          error: err.message.replace(/^error: /, ''),
          code: 'usage',
          exitCode: EXIT_USAGE,
        }),
      );
    }
    return EXIT_USAGE; // without --json commander already printed the message
  }
  const out = processOutput(Boolean(opts.json));
  const code = err instanceof CliError ? err.exitCode : EXIT_FAILED;
  if (opts.json) {
    out.line(
      JSON.stringify({
        ok: false,
        error: err instanceof Error ? err.message : String(err),
        code: err instanceof CliError ? err.code : 'failed',
        hint: err instanceof CliError ? err.hint : undefined,
        exitCode: code,
      }),
    );
  } else {
    out.error(`${color.bad('error:')} ${err instanceof Error ? err.message : String(err)}`);
    if (err instanceof CliError && err.hint) out.error(`${color.dim('hint:')} ${err.hint}`);
  }
  if (opts.debug && err instanceof Error && err.stack) out.error(err.stack);
  return code;
}
