export {
  type Lease,
  type ReleaseReport,
  type Skipped,
  UidAllocator,
  type UidAllocatorOptions,
} from './allocator.js';
export { MAX_UID, MIN_DM_UID, UidAllocatorError, type UidAllocatorErrorCode } from './errors.js';
export { type FlockLockOptions, flockLock, type LockHandle, type StateLock } from './lock.js';
export { PACKAGE_NAME } from './package-name.js';
export {
  bootId,
  identityOf,
  isAlive,
  type ProcessIdentity,
  processesOfUid,
  type UidProcess,
} from './proc.js';
export { type ReapOptions, type ReapReport, reap } from './reap.js';
export {
  DOMID_FIRST_RESERVED,
  type DynamicPoolOptions,
  dynamicPoolScheme,
  LIBXL_QEMU_USER_RANGE_BASE,
  LIBXL_QEMU_USER_REAPER,
  LIBXL_QEMU_USER_SHARED,
  type NamedUserOptions,
  type PasswdEntry,
  perVmUserScheme,
  type RangeBaseOptions,
  type ReaperOptions,
  rangeBaseScheme,
  type SchemeConfig,
  type SchemeKind,
  schemeFromConfig,
  schemes,
  sharedUserScheme,
  type UidCandidate,
  type UidScheme,
  type UserLookup,
} from './schemes.js';
export { type LeaseRecord, type LeaseState, parseRecord, type StepHook } from './state.js';
export {
  DEFAULT_SHARED_PLACES,
  type EmptinessReport,
  type SysvIpcObject,
  type VerifyEmptyOptions,
  verifyEmpty,
} from './verify.js';
