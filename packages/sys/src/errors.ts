import { constants as osConstants } from 'node:os';
import { getSystemErrorMap } from 'node:util';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(osConstants.errno)) {
  // EWOULDBLOCK and EAGAIN share 11 on Linux: keep the first name, EAGAIN, as libuv does.
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

function describe(errno: number): { code: string; text: string } {
  // libuv keys its map by the negated errno.
  const entry = getSystemErrorMap().get(-errno);
  if (entry) return { code: entry[0], text: entry[1] };
  return { code: errnoNames.get(errno) ?? `E${errno}`, text: `errno ${errno}` };
}

/** A failed system call: `errno` as the kernel returned it, `code` its C name. */
export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;

  constructor(syscall: string, errno: number, detail?: string) {
    const { code, text } = describe(errno);
    super(`${syscall} failed with ${code} (${text})${detail ? `: ${detail}` : ''}`);
    this.name = 'SysError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

/** A step of `spawnConfined` failed in the child; the binary was not executed. */
export class SpawnError extends SysError {
  readonly step: string;

  constructor(step: string, errno: number, detail?: string) {
    super(step, errno, detail);
    this.name = 'SpawnError';
    this.step = step;
    this.message = `spawnConfined: step '${step}' failed with ${this.code}${detail ? ` (${detail})` : ''}`;
  }
}
