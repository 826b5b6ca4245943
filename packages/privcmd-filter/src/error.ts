/** What kind of input was refused. */
export type PolicyErrorCode =
  | 'UNKNOWN_SYSCALL'
  | 'BAD_ACTION'
  | 'BAD_IOCTL'
  | 'PROGRAM_TOO_LONG'
  | 'BAD_PROGRAM'
  | 'BAD_PROFILE'
  | 'BAD_TRACE';

/** Invalid input to a compiler, profile validator or trace parser: says what was expected and what was seen. */
export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  readonly code: PolicyErrorCode;
  /** Where in the input, as a JSON-pointer-like path ("/ops/inject_msi/msiAddress") or an offset. */
  readonly where: string;
  constructor(code: PolicyErrorCode, where: string, message: string) {
    super(`${where}: ${message}`);
    this.code = code;
    this.where = where;
  }
}
