/**
 * Node names as xenstored 4.17 judges them (xenstored_core.c is_valid_nodename,
 * get_parent, canonicalize) and the tree relations built on them.
 */
import { XenstoreWireError } from '../wire/codec.js';
import { XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX } from '../wire/constants.js';

const LOCAL_DOMAIN_PREFIX = /^\/local\/domain\/(\d{1,5})\//;

export type PathProblem =
  | 'empty'
  | 'not-absolute'
  | 'trailing-slash'
  | 'double-slash'
  | 'bad-char'
  | 'too-long';

/**
 * Why `path` is not a valid canonical node name per xenstored's
 * is_valid_nodename (starts with `/`, no trailing or double slash, only
 * `[A-Za-z0-9-/_@]`, at most `maxRelLen` bytes after a `/local/domain/N/`
 * prefix, and at most XENSTORE_ABS_PATH_MAX bytes in all), or undefined when
 * it is valid.
 */
export function nodePathProblem(
  path: string,
  maxRelLen: number = XENSTORE_REL_PATH_MAX,
): PathProblem | undefined {
  const n = path.length;
  if (n === 0) return 'empty';
  if (path.charCodeAt(0) !== 0x2f) return 'not-absolute';
  if (n > 1 && path.charCodeAt(n - 1) === 0x2f) return 'trailing-slash';
  // One pass for the rest: every server request checks its path, so no regex and no copy here.
  let doubleSlash = false;
  let badChar = false;
  let prevSlash = false;
  for (let i = 0; i < n; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x2f) {
      if (prevSlash) doubleSlash = true;
      prevSlash = true;
      continue;
    }
    prevSlash = false;
    if (!validPathChar(c)) badChar = true;
  }
  if (doubleSlash) return 'double-slash';
  // Valid characters are ASCII: then a byte is a character.
  const bytes = badChar ? Buffer.byteLength(path, 'utf8') : n;
  if (bytes > maxRelLen || bytes > XENSTORE_ABS_PATH_MAX) {
    const m = LOCAL_DOMAIN_PREFIX.exec(path);
    const localOff = m ? m[0].length : 0;
    if (bytes > localOff + maxRelLen || bytes > XENSTORE_ABS_PATH_MAX) return 'too-long';
  }
  if (badChar) return 'bad-char';
  return undefined;
}

/** `[A-Za-z0-9-_@]` (and `/`, handled by the caller). */
function validPathChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2d ||
    c === 0x5f ||
    c === 0x40
  );
}

/** True for the special watch paths (`@introduceDomain`, `@releaseDomain`, any `@…`). */
export function isSpecialPath(path: string): boolean {
  return path.startsWith('@');
}

/** Check a path a client is about to send (absolute, relative or `@special`); throws XenstoreWireError. */
export function checkClientPath(path: string): void {
  if (isSpecialPath(path)) {
    if (Buffer.byteLength(path) > XENSTORE_REL_PATH_MAX) {
      throw new XenstoreWireError(
        'EPATH',
        `special path longer than ${XENSTORE_REL_PATH_MAX} bytes`,
      );
    }
    return;
  }
  const abs = path.startsWith('/') ? path : `/local/domain/0/${path}`;
  const problem = nodePathProblem(abs);
  if (problem)
    throw new XenstoreWireError(
      'EPATH',
      `invalid xenstore path ${JSON.stringify(path)}: ${problem}`,
    );
}

/** get_parent: "/" for top-level nodes. */
export function parentPath(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

/** The last element of a path: the name its parent lists it under. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** `child` is `parent` or below it (a watch on `parent` matches it; "/" contains every node). */
export function isChild(child: string, parent: string): boolean {
  if (parent === '/') return true;
  if (!child.startsWith(parent)) return false;
  const c = child.charCodeAt(parent.length);
  return Number.isNaN(c) || c === 0x2f;
}

/** The path of child `name` of `dir`. */
export function childPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** canonicalize: a relative name is under `home` (`/local/domain/N` for domain N); absolute and `@` names stay. */
export function canonicalPath(home: string, name: string): string {
  const c = name.charCodeAt(0);
  return c === 0x2f || c === 0x40 ? name : `${home}/${name}`;
}
