import { getpwnam } from '@xen-depriv/sys';
import { MAX_UID, MIN_DM_UID, UidAllocatorError } from './errors.js';

/** The fields of a passwd entry the schemes read. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

/**
 * How schemes resolve users. The default is `sys.getpwnam` (NSS, as libxl does); tests inject
 * a table. `getpwuid`, when given, lets range-base and pool schemes refuse a uid that belongs
 * to another user, as libxl does for range-base.
 */
export interface UserLookup {
  getpwnam(name: string): PasswdEntry | null;
  getpwuid?(uid: number): PasswdEntry | null;
}

export const systemUserLookup: UserLookup = { getpwnam };

export type SchemeKind = 'range-base' | 'shared' | 'per-vm' | 'dynamic-pool';

/** A uid and gid a device model may run as. */
export interface UidCandidate {
  uid: number;
  gid: number;
}

/** A resolved way of choosing the uid of a domain's device model. */
export interface UidScheme {
  readonly kind: SchemeKind;
  /**
   * 'per-domain': one uid serves one domain at a time, so a compromised DM reaches no other.
   * 'shared': every DM runs as one uid; weaker (DMs can signal and ptrace each other) and
   * reported as such; its uid is never reaped on release since other DMs still run as it.
   */
  readonly isolation: 'per-domain' | 'shared';
  /** The reaper uid this scheme implies, when it implies one. */
  readonly reaperUid: number | undefined;
  /** Candidate uids for `domid`, in order of preference. */
  candidates(domid: number): Iterable<UidCandidate>;
  /** True when `uid` is one this scheme may hand out. */
  contains(uid: number): boolean;
  /** One line for logs and errors. */
  describe(): string;
}

/** DOMID_FIRST_RESERVED (xen/include/public/xen.h): domids 0x7FF0 and up are special. */
export const DOMID_FIRST_RESERVED = 0x7ff0;

/** libxl's names (tools/libs/light/libxl_internal.h). */
export const LIBXL_QEMU_USER_RANGE_BASE = 'xen-qemuuser-range-base';
export const LIBXL_QEMU_USER_SHARED = 'xen-qemuuser-shared';
export const LIBXL_QEMU_USER_REAPER = 'xen-qemuuser-reaper';

export function checkDomid(domid: unknown, min = 0): number {
  if (
    typeof domid !== 'number' ||
    !Number.isInteger(domid) ||
    domid < min ||
    domid >= DOMID_FIRST_RESERVED
  ) {
    throw new UidAllocatorError(
      'OUT_OF_RANGE',
      `domid: expected an integer ${min}..${DOMID_FIRST_RESERVED - 1} (below DOMID_FIRST_RESERVED), got ${String(domid)}`,
    );
  }
  return domid;
}

function userOf(lookup: UserLookup, name: string, role: string): PasswdEntry {
  const entry = lookup.getpwnam(name);
  if (entry === null)
    throw new UidAllocatorError('BAD_USER', `${role}: expected a passwd entry for '${name}', none`);
  if (entry.uid < MIN_DM_UID || entry.uid > MAX_UID) {
    throw new UidAllocatorError(
      'BAD_USER',
      `${role}: expected '${name}' to have a uid >= ${MIN_DM_UID}, it has ${entry.uid}`,
      entry.uid,
    );
  }
  return entry;
}

export interface ReaperOptions {
  /** An explicit reaper uid; wins over `reaperUser`. */
  reaperUid?: number;
  /** Looked up when `reaperUid` is absent; default `xen-qemuuser-reaper`. */
  reaperUser?: string;
  lookup?: UserLookup;
}

function reaperOf(opts: ReaperOptions, lookup: UserLookup): number | undefined {
  if (opts.reaperUid !== undefined) return opts.reaperUid;
  const entry = lookup.getpwnam(opts.reaperUser ?? LIBXL_QEMU_USER_REAPER);
  return entry === null ? undefined : entry.uid;
}

function checkReaperOutside(
  reaperUid: number | undefined,
  contains: (uid: number) => boolean,
  what: string,
): void {
  if (reaperUid !== undefined && contains(reaperUid)) {
    throw new UidAllocatorError(
      'BAD_CONFIG',
      `${what}: expected the reaper uid outside the DM uids, but ${reaperUid} is one of them`,
      reaperUid,
    );
  }
}

export interface RangeBaseOptions extends ReaperOptions {
  /** Default `xen-qemuuser-range-base`. */
  user?: string;
  /**
   * 'offset' (default): gid = base gid + domid, so DMs share no group either.
   * 'base': every DM gets the base user's gid, as libxl does.
   */
  gid?: 'offset' | 'base';
}

/**
 * libxl's `xen-qemuuser-range-base`: uid = base uid + domid for domids 1..32751 (0x7FF0 - 1).
 * The base user's uid must leave room for the whole range below (uid_t)-1, and when the lookup
 * has `getpwuid`, a uid that is another user's is refused, as libxl refuses it. With no reaper
 * user, the base uid itself is the reaper, as in libxl (no DM runs as base + 0).
 */
export function rangeBaseScheme(opts: RangeBaseOptions = {}): UidScheme {
  const lookup = opts.lookup ?? systemUserLookup;
  const name = opts.user ?? LIBXL_QEMU_USER_RANGE_BASE;
  const base = userOf(lookup, name, 'range-base user');
  const last = base.uid + DOMID_FIRST_RESERVED - 1;
  if (last > MAX_UID) {
    throw new UidAllocatorError(
      'BAD_USER',
      `range-base user: expected '${name}' uid + ${DOMID_FIRST_RESERVED - 1} <= ${MAX_UID}, got ${base.uid} (range ends at ${last})`,
      base.uid,
    );
  }
  const gidMode = opts.gid ?? 'offset';
  if (gidMode === 'offset' && base.gid + DOMID_FIRST_RESERVED - 1 > MAX_UID) {
    throw new UidAllocatorError(
      'BAD_USER',
      `range-base user: expected '${name}' gid + ${DOMID_FIRST_RESERVED - 1} <= ${MAX_UID}, got ${base.gid}`,
    );
  }
  const contains = (uid: number) => uid > base.uid && uid <= last;
  const reaperUid = reaperOf(opts, lookup) ?? base.uid;
  checkReaperOutside(reaperUid, contains, 'range-base');
  return {
    kind: 'range-base',
    isolation: 'per-domain',
    reaperUid,
    contains,
    describe: () => `range-base '${name}' uids ${base.uid + 1}..${last}`,
    candidates(domid) {
      const d = checkDomid(domid, 1);
      const uid = base.uid + d;
      const clash = lookup.getpwuid?.(uid) ?? null;
      if (clash !== null) {
        throw new UidAllocatorError(
          'BAD_USER',
          `range-base: wanted uid ${uid} (${name} + ${d}) but that is user '${clash.name}'`,
          uid,
        );
      }
      return [{ uid, gid: gidMode === 'base' ? base.gid : base.gid + d }];
    },
  };
}

export interface NamedUserOptions extends ReaperOptions {
  user?: string;
}

/** libxl's `xen-qemuuser-shared`: every DM runs as one user. Isolation 'shared'. */
export function sharedUserScheme(opts: NamedUserOptions = {}): UidScheme {
  const lookup = opts.lookup ?? systemUserLookup;
  const name = opts.user ?? LIBXL_QEMU_USER_SHARED;
  const user = userOf(lookup, name, 'shared user');
  const contains = (uid: number) => uid === user.uid;
  const reaperUid = reaperOf(opts, lookup);
  checkReaperOutside(reaperUid, contains, 'shared');
  return {
    kind: 'shared',
    isolation: 'shared',
    reaperUid,
    contains,
    describe: () =>
      `shared user '${name}' uid ${user.uid} (weaker: DMs are not isolated from each other)`,
    candidates(domid) {
      checkDomid(domid);
      return [{ uid: user.uid, gid: user.gid }];
    },
  };
}

/** libxl's `device_model_user`: a user named for one VM. One domain at a time holds it. */
export function perVmUserScheme(opts: NamedUserOptions & { user: string }): UidScheme {
  const lookup = opts.lookup ?? systemUserLookup;
  const user = userOf(lookup, opts.user, 'per-vm user');
  const contains = (uid: number) => uid === user.uid;
  const reaperUid = reaperOf(opts, lookup);
  checkReaperOutside(reaperUid, contains, 'per-vm');
  return {
    kind: 'per-vm',
    isolation: 'per-domain',
    reaperUid,
    contains,
    describe: () => `per-vm user '${opts.user}' uid ${user.uid}`,
    candidates(domid) {
      checkDomid(domid);
      return [{ uid: user.uid, gid: user.gid }];
    },
  };
}

export interface DynamicPoolOptions extends ReaperOptions {
  /** First uid of the pool (>= 1000). */
  first: number;
  /** Number of uids, 1..1048576. */
  count: number;
}

const MAX_POOL = 1 << 20;

/**
 * A configured uid range with no passwd entries, as systemd's DynamicUser: gid = uid. A domain
 * starts looking at first + domid % count and wraps, so a host needs no 32752 users. When the
 * lookup has `getpwuid`, a uid that has a passwd entry is skipped.
 */
export function dynamicPoolScheme(opts: DynamicPoolOptions): UidScheme {
  const { first, count } = opts;
  if (!Number.isInteger(first) || first < MIN_DM_UID || first > MAX_UID) {
    throw new UidAllocatorError(
      'UNSAFE_UID',
      `dynamic pool first: expected an integer uid ${MIN_DM_UID}..${MAX_UID}, got ${String(first)}`,
    );
  }
  if (!Number.isInteger(count) || count < 1 || count > MAX_POOL || first + count - 1 > MAX_UID) {
    throw new UidAllocatorError(
      'BAD_CONFIG',
      `dynamic pool count: expected 1..${MAX_POOL} uids ending at most at ${MAX_UID}, got ${String(count)} from ${first}`,
    );
  }
  const lookup = opts.lookup ?? systemUserLookup;
  const contains = (uid: number) => Number.isInteger(uid) && uid >= first && uid < first + count;
  const reaperUid = reaperOf(opts, lookup);
  checkReaperOutside(reaperUid, contains, 'dynamic pool');
  return {
    kind: 'dynamic-pool',
    isolation: 'per-domain',
    reaperUid,
    contains,
    describe: () => `dynamic pool uids ${first}..${first + count - 1}`,
    *candidates(domid) {
      const start = checkDomid(domid) % count;
      for (let i = 0; i < count; i++) {
        const uid = first + ((start + i) % count);
        if ((lookup.getpwuid?.(uid) ?? null) !== null) continue;
        yield { uid, gid: uid };
      }
    },
  };
}

/** The user settings of `xen-depriv` configs, as one value. */
export type SchemeConfig =
  | { scheme: 'range-base'; user?: string }
  | { scheme: 'shared'; user?: string }
  | { scheme: 'per-vm'; user: string }
  | { scheme: 'pool'; first: number; count: number };

/** Builds a scheme from a config value; `extra` carries the lookup and reaper settings. */
export function schemeFromConfig(config: SchemeConfig, extra: ReaperOptions = {}): UidScheme {
  switch (config.scheme) {
    case 'range-base':
      return rangeBaseScheme({
        ...extra,
        ...(config.user === undefined ? {} : { user: config.user }),
      });
    case 'shared':
      return sharedUserScheme({
        ...extra,
        ...(config.user === undefined ? {} : { user: config.user }),
      });
    case 'per-vm':
      return perVmUserScheme({ ...extra, user: config.user });
    case 'pool':
      return dynamicPoolScheme({ ...extra, first: config.first, count: config.count });
    default: {
      const seen: unknown = (config as { scheme: unknown }).scheme;
      throw new UidAllocatorError(
        'BAD_CONFIG',
        `scheme: expected 'range-base', 'shared', 'per-vm' or 'pool', got ${String(seen)}`,
      );
    }
  }
}

/** The scheme constructors under one name. */
export const schemes = {
  rangeBase: rangeBaseScheme,
  shared: sharedUserScheme,
  perVm: perVmUserScheme,
  dynamicPool: dynamicPoolScheme,
  fromConfig: schemeFromConfig,
} as const;
