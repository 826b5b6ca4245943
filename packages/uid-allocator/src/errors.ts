/** Why the allocator, the reaper or verifyEmpty refused or failed. */
export type UidAllocatorErrorCode =
  /** uid 0, a system uid (< 1000), a reaper uid equal to the target: refused before any fork. */
  | 'UNSAFE_UID'
  /** A uid or domid outside what the scheme or the configured range allows. */
  | 'OUT_OF_RANGE'
  /** A user a scheme names has no passwd entry, or its entry does not fit the scheme. */
  | 'BAD_USER'
  /** Scheme options that cannot work (range size, overlap with the reaper uid). */
  | 'BAD_CONFIG'
  /** Every candidate uid is held, quarantined or not empty. */
  | 'EXHAUSTED'
  /** The uid still has processes, IPC objects or files; it must not be reused. */
  | 'NOT_EMPTY'
  /** The reaper gave up (round or time bound) with processes of the uid still alive. */
  | 'REAP_INCOMPLETE'
  /** The lease is not (or no longer) the one recorded in the state directory. */
  | 'STALE_LEASE'
  /** The state directory lock was not obtained in time. */
  | 'LOCK_TIMEOUT'
  /** A lease record that does not parse or check; it is never trusted. */
  | 'BAD_RECORD';

/** A typed failure of this package; `code` says which rule, the message what was seen. */
export class UidAllocatorError extends Error {
  readonly code: UidAllocatorErrorCode;
  readonly uid: number | undefined;

  constructor(code: UidAllocatorErrorCode, message: string, uid?: number) {
    super(message);
    this.name = 'UidAllocatorError';
    this.code = code;
    this.uid = uid;
  }
}

/** The lowest uid a device model, or the reaper, may run as: below it live system accounts. */
export const MIN_DM_UID = 1000;

/** uid_t is 32 bits and (uid_t)-1 means "unchanged" to setresuid, so it is never a real uid. */
export const MAX_UID = 0xfffffffe;

export function checkDmUid(what: string, uid: unknown): number {
  if (typeof uid !== 'number' || !Number.isInteger(uid) || uid < 0 || uid > MAX_UID) {
    throw new UidAllocatorError(
      'UNSAFE_UID',
      `${what}: expected an integer uid 0..${MAX_UID}, got ${String(uid)}`,
    );
  }
  if (uid < MIN_DM_UID) {
    throw new UidAllocatorError(
      'UNSAFE_UID',
      `${what}: expected a uid >= ${MIN_DM_UID} (never root or a system account), got ${uid}`,
      uid,
    );
  }
  return uid;
}
