export { constants } from './constants.js';
export { SpawnError, SysError } from './errors.js';
export { close, flock, type IoctlPointer, ioctl, memfdCreate, mmap, munmap, open } from './io.js';
export { isAvailable } from './native.js';
export { netnsConnect, openPty, type Pty } from './net.js';
export { PACKAGE_NAME } from './package-name.js';
export { type PidfdWatch, pidfdExited, pidfdGetfd, watchPidfd } from './pidfd.js';
export {
  getgrnam,
  getpwnam,
  peerCredentials,
  pidfdOpen,
  pidfdSendSignal,
  REAPER_MIN_UID,
  reaperKill,
  reaperKillAsync,
  waitPid,
} from './process.js';
export {
  type BindMount,
  type MknodMount,
  type MountSpec,
  type Namespace,
  type RlimitSpec,
  type SpawnSpec,
  spawnConfined,
  spawnConfinedAsync,
  type TmpfsMount,
} from './spawn.js';
