/**
 * Exit codes of `xen-depriv`, stable for scripts:
 * 0 success, 1 the operation failed (a launch, a check that found a problem),
 * 2 bad usage or configuration (nothing was done), 3 the host cannot do it (not root, no Xen).
 */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_UNSUPPORTED = 3;

/** An error meant for the operator: one line, an optional hint, an exit code. */
export class CliError extends Error {
  readonly exitCode: number;
  readonly hint: string | undefined;

  constructor(
    message: string,
    options: { exitCode?: number; hint?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CliError';
    this.exitCode = options.exitCode ?? EXIT_FAILED;
    this.hint = options.hint;
  }
}

/** A configuration that cannot be used; names the key at fault. */
export class ConfigError extends CliError {
  readonly key: string;

  constructor(key: string, message: string, hint?: string) {
    super(
      `config: ${key}: ${message}`,
      hint === undefined ? { exitCode: EXIT_USAGE } : { exitCode: EXIT_USAGE, hint },
    );
    this.name = 'ConfigError';
    this.key = key;
  }
}
