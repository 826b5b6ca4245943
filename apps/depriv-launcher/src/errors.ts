/**
 * Exit codes of `xen-depriv`, the same for every command, stable for scripts (shown by
 * `xen-depriv --help` from this table).
 */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_UNSUPPORTED = 3;

export const EXIT_TABLE: readonly { exit: number; meaning: string }[] = [
  { exit: EXIT_OK, meaning: 'success' },
  {
    exit: EXIT_FAILED,
    meaning: 'the operation failed: a launch, a destroy, a check that found a problem',
  },
  {
    exit: EXIT_USAGE,
    meaning: 'bad usage or configuration, nothing was done (the error names the option or key)',
  },
  {
    exit: EXIT_UNSUPPORTED,
    meaning: 'this host or user cannot do it: not root, not a Xen dom0, no xen-deprivd running',
  },
];

/**
 * The stable `code` of a `--json` error. One cause, one code, whichever command met it.
 */
export type ErrorCode =
  | 'failed'
  | 'exists'
  | 'not-found'
  | 'not-confined'
  | 'usage'
  | 'config'
  | 'not-root'
  | 'not-dom0'
  | 'no-service';

const EXIT_OF: Readonly<Record<ErrorCode, number>> = {
  failed: EXIT_FAILED,
  exists: EXIT_FAILED,
  'not-found': EXIT_FAILED,
  'not-confined': EXIT_FAILED,
  usage: EXIT_USAGE,
  config: EXIT_USAGE,
  'not-root': EXIT_UNSUPPORTED,
  'not-dom0': EXIT_UNSUPPORTED,
  'no-service': EXIT_UNSUPPORTED,
};

const CODE_OF_EXIT: Readonly<Record<number, ErrorCode>> = {
  [EXIT_FAILED]: 'failed',
  [EXIT_USAGE]: 'usage',
  [EXIT_UNSUPPORTED]: 'not-dom0',
};

/** An error meant for the operator: one line, an optional hint, a stable code and exit code. */
export class CliError extends Error {
  readonly exitCode: number;
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(
    message: string,
    options: { code?: ErrorCode; exitCode?: number; hint?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CliError';
    this.code = options.code ?? CODE_OF_EXIT[options.exitCode ?? EXIT_FAILED] ?? 'failed';
    this.exitCode = options.exitCode ?? EXIT_OF[this.code];
    this.hint = options.hint;
  }
}

/** A configuration that cannot be used; names the key at fault. */
export class ConfigError extends CliError {
  readonly key: string;

  constructor(key: string, message: string, hint?: string) {
    super(
      `config: ${key}: ${message}`,
      hint === undefined ? { code: 'config' } : { code: 'config', hint },
    );
    this.name = 'ConfigError';
    this.key = key;
  }
}
