import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { UidAllocatorError } from './errors.js';
import type { ProcessIdentity } from './proc.js';
import type { SchemeKind } from './schemes.js';

export const RECORD_FORMAT = 'xen-depriv-uid-lease';
export const RECORD_VERSION = 1;

/**
 * 'held': the uid serves `domid`. 'releasing': its holder began to release it (a crash here
 * leaves it for the next launcher to verify and reclaim). 'quarantined': released, not to be
 * handed out before releasedAt + the quarantine time.
 */
export type LeaseState = 'held' | 'releasing' | 'quarantined';

/** One lease, as stored in `<stateDir>/leases/<uid>.json` (or `<uid>.d<domid>.json` if shared). */
export interface LeaseRecord {
  format: typeof RECORD_FORMAT;
  version: typeof RECORD_VERSION;
  /** Random; a lease whose id no longer matches its record has been released. */
  leaseId: string;
  uid: number;
  gid: number;
  domid: number;
  scheme: SchemeKind;
  exclusive: boolean;
  state: LeaseState;
  /** The process that took the lease. */
  launcher: ProcessIdentity;
  /** The device model, once attached; pid and start time identify it across pid reuse. */
  dm: ProcessIdentity | null;
  /** ISO 8601. */
  createdAt: string;
  releasedAt: string | null;
  /** /proc/sys/kernel/random/boot_id when written: pids and start times mean nothing after a reboot. */
  bootId: string;
}

const SCHEMES: readonly SchemeKind[] = ['range-base', 'shared', 'per-vm', 'dynamic-pool'];
const STATES: readonly LeaseState[] = ['held', 'releasing', 'quarantined'];

function bad(what: string, expected: string, seen: unknown): never {
  throw new UidAllocatorError(
    'BAD_RECORD',
    `lease record ${what}: expected ${expected}, got ${JSON.stringify(seen) ?? String(seen)}`,
  );
}

function u32(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
    bad(key, 'an integer 0..4294967295', v);
  return v;
}

function identity(o: Record<string, unknown>, key: string): ProcessIdentity {
  const v = o[key];
  if (typeof v !== 'object' || v === null) bad(key, 'an object {pid, startTime}', v);
  const r = v as Record<string, unknown>;
  const pid = r.pid;
  const startTime = r.startTime;
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid < 1)
    bad(`${key}.pid`, 'a pid >= 1', pid);
  if (typeof startTime !== 'number' || !Number.isInteger(startTime) || startTime < 0)
    bad(`${key}.startTime`, 'clock ticks >= 0', startTime);
  return { pid, startTime };
}

function isoDate(v: unknown, what: string): string {
  if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) bad(what, 'an ISO 8601 date', v);
  return v;
}

/** Parses and checks a record; anything off (a half-written file included) throws BAD_RECORD. */
export function parseRecord(text: string): LeaseRecord {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    bad('text', 'complete JSON', text.length > 60 ? `${text.slice(0, 60)}...` : text);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('', 'a JSON object', raw);
  const o = raw as Record<string, unknown>;
  if (o.format !== RECORD_FORMAT) bad('format', `'${RECORD_FORMAT}'`, o.format);
  if (o.version !== RECORD_VERSION) bad('version', String(RECORD_VERSION), o.version);
  if (typeof o.leaseId !== 'string' || !/^[0-9a-f]{32}$/.test(o.leaseId))
    bad('leaseId', '32 hex digits', o.leaseId);
  const scheme = o.scheme as SchemeKind;
  if (!SCHEMES.includes(scheme)) bad('scheme', SCHEMES.join(' | '), o.scheme);
  const state = o.state as LeaseState;
  if (!STATES.includes(state)) bad('state', STATES.join(' | '), o.state);
  if (typeof o.exclusive !== 'boolean') bad('exclusive', 'a boolean', o.exclusive);
  if (typeof o.bootId !== 'string' || o.bootId === '') bad('bootId', 'a boot id', o.bootId);
  const releasedAt = o.releasedAt === null ? null : isoDate(o.releasedAt, 'releasedAt');
  if (state === 'quarantined' && releasedAt === null)
    bad('releasedAt', 'a date in a quarantined record', null);
  return {
    format: RECORD_FORMAT,
    version: RECORD_VERSION,
    leaseId: o.leaseId,
    uid: u32(o, 'uid'),
    gid: u32(o, 'gid'),
    domid: u32(o, 'domid'),
    scheme,
    exclusive: o.exclusive,
    state,
    launcher: identity(o, 'launcher'),
    dm: o.dm === null ? null : identity(o, 'dm'),
    createdAt: isoDate(o.createdAt, 'createdAt'),
    releasedAt,
    bootId: o.bootId,
  };
}

export function newLeaseId(): string {
  return randomBytes(16).toString('hex');
}

export function recordName(uid: number, domid: number, exclusive: boolean): string {
  return exclusive ? `${uid}.json` : `${uid}.d${domid}.json`;
}

const TMP_PREFIX = '.tmp-';

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A step hook: tests SIGKILL the process at each named point to prove recovery. */
export type StepHook = (step: string) => void;

/**
 * Replaces `dir/name` with `text` so that a reader, or a crash at any point, sees the old
 * content or the new, never a mix: write a temp file, fsync it, rename over, fsync the dir.
 */
export function writeAtomic(dir: string, name: string, text: string, step: StepHook): void {
  const tmp = join(dir, `${TMP_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    const bytes = Buffer.from(text);
    // Two writes, so a crash test can stop between them and leave a half-written temp file.
    const half = bytes.length >> 1;
    writeSync(fd, bytes, 0, half);
    step('tmp-half-written');
    writeSync(fd, bytes, half, bytes.length - half);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  step('tmp-written');
  renameSync(tmp, join(dir, name));
  step('renamed');
  fsyncDir(dir);
}

export function removeDurably(dir: string, name: string): void {
  try {
    unlinkSync(join(dir, name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  fsyncDir(dir);
}

/** Temp files are only written under the lock, so any found by a lock holder are a crash's. */
export function removeTempFiles(dir: string): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(TMP_PREFIX)) continue;
    unlinkSync(join(dir, name));
    removed.push(name);
  }
  return removed;
}

export type ReadResult =
  | { kind: 'absent' }
  | { kind: 'record'; record: LeaseRecord }
  | { kind: 'unreadable'; error: UidAllocatorError };

export function readRecord(dir: string, name: string): ReadResult {
  let text: string;
  try {
    text = readFileSync(join(dir, name), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    throw e;
  }
  try {
    return { kind: 'record', record: parseRecord(text) };
  } catch (e) {
    if (e instanceof UidAllocatorError) return { kind: 'unreadable', error: e };
    throw e;
  }
}

export function listRecordNames(dir: string): string[] {
  return readdirSync(dir).filter((n) => !n.startsWith('.') && n.endsWith('.json'));
}
