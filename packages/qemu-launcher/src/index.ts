export { LauncherError, type LauncherErrorCode } from './errors.js';
export {
  chooseSpawner,
  type DestroyStep,
  type DestroyTarget,
  type DmHandle,
  destroy,
  type LauncherDeps,
  type LaunchManyItem,
  type LaunchManyResult,
  type LaunchProgress,
  type LaunchStep,
  launch,
  launchMany,
  type RecoverResult,
  recover,
} from './launch.js';
export { PACKAGE_NAME } from './package-name.js';
export {
  BASE_DEVICES,
  DEFAULT_NAMESPACES,
  DEFAULT_RLIMITS,
  type DeviceNode,
  type FdSource,
  formatPlan,
  type JailEntry,
  type JailMount,
  type LaunchConfig,
  type LaunchMode,
  type LaunchPlan,
  type LaunchPolicy,
  type LeaseLike,
  type Namespace,
  type PassedFd,
  type PlannedBridge,
  type PlannedFd,
  type PlannedRlimit,
  plan,
  type RlimitName,
  type SeccompProgram,
  xenDevices,
} from './plan.js';
export {
  type BinaryIdentity,
  type HostRootEntry,
  type ProbeOptions,
  probeQemu,
  type QemuCaps,
} from './probe.js';
export {
  DEFAULT_QMP_LIMITS,
  type FailureListener,
  QmpClient,
  type QmpEvent,
  type QmpGreeting,
  type QmpLimits,
  type QmpStats,
} from './qmp.js';
export { deviceModelSeccomp } from './seccomp.js';
export {
  type DmExitStatus,
  type SpawnedDm,
  type Spawner,
  type SpawnFds,
  sourceFd,
  utilLinuxScript,
  utilLinuxSpawner,
} from './spawner.js';
export { type LaunchPhase, type LaunchRecord, processStartTime } from './state.js';
export {
  createSysSpawner,
  hostRootIsRamfs,
  type SysSpawnerOptions,
  sysSpawner,
  sysSpawnSpec,
} from './sys-spawner.js';
export { allocatorUidOps, pidsOfUid, procUidOps, type UidOps } from './uids.js';
export {
  type ConfinementCheck,
  type ConfinementReport,
  FRESH_HANDLE_PATHS,
  type VerifyOptions,
  verifyConfinement,
} from './verify.js';
