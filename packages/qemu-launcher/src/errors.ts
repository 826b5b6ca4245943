/**
 * Why a launcher operation failed. `step` names the launch or destroy step (as in
 * `LaunchPlan.steps`) or the QMP phase, so a toolstack can log it and retry the right thing.
 */
export type LauncherErrorCode =
  | 'EPROBE'
  | 'EPLAN'
  | 'ESPAWN'
  | 'EREADY'
  | 'EQMP_TIMEOUT'
  | 'EQMP_OVERSIZE'
  | 'EQMP_PROTOCOL'
  | 'EQMP_CLOSED'
  | 'EQMP_ERROR'
  | 'EDESTROY'
  | 'ESTATE'
  | 'EUNSUPPORTED';

export class LauncherError extends Error {
  override readonly name = 'LauncherError';
  readonly code: LauncherErrorCode;
  readonly step: string | undefined;
  readonly errno: string | undefined;

  constructor(
    code: LauncherErrorCode,
    message: string,
    options: { step?: string | undefined; errno?: string | undefined; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.step = options.step;
    this.errno = options.errno;
  }
}
