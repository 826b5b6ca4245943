/** Argument checks shared by every export: a wrong type or range is a TypeError naming both. */

function seen(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null) return 'null';
  if (typeof value === 'object') return value.constructor?.name ?? 'object';
  return String(value);
}

export function fail(what: string, expected: string, value: unknown): never {
  throw new TypeError(`${what}: expected ${expected}, got ${seen(value)}`);
}

export function int(what: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(what, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

export const INT32_MAX = 0x7fff_ffff;
export const UINT32_MAX = 0xffff_ffff;

export function fd(what: string, value: unknown): number {
  return int(what, value, 0, INT32_MAX);
}

/** uid_t/gid_t, excluding (uid_t)-1 which the set*id calls read as "unchanged". */
export function id(what: string, value: unknown): number {
  return int(what, value, 0, UINT32_MAX - 1);
}

export function str(what: string, value: unknown): string {
  if (typeof value !== 'string') fail(what, 'a string', value);
  if (value.includes('\0')) fail(what, 'a string without NUL characters', value);
  return value;
}

export function path(what: string, value: unknown): string {
  const p = str(what, value);
  if (!p.startsWith('/')) fail(what, 'an absolute path', value);
  return p;
}

export function bytes(what: string, value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) fail(what, 'a Uint8Array', value);
  return value;
}

export function array(what: string, value: unknown): readonly unknown[] {
  if (!Array.isArray(value)) fail(what, 'an array', value);
  return value;
}

export function record(what: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail(what, 'an object', value);
  return value as Record<string, unknown>;
}
