import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SpawnError, SysError } from './errors.js';

/** The normalized spawn spec src/spawn.ts hands to native/spawn.c. */
export interface NativeSpawnSpec {
  file: string;
  argv: string[];
  env: string[];
  cwd: string | undefined;
  fds: number[];
  unshareFlags: number;
  loopbackUp: boolean;
  mounts: NativeMount[];
  root: string | undefined;
  rootMode: number;
  rlimits: number[];
  uid: number;
  gid: number;
  groups: number[] | undefined;
  noNewPrivs: boolean;
  /** Highest capability to drop from the bounding set, or -1 to leave it. */
  capLast: number;
  seccomp: Uint8Array | undefined;
}

export interface NativeMount {
  kind: number;
  source: string | undefined;
  target: string;
  data: string | undefined;
  flags: number;
  remountFlags: number;
  mode: number;
  major: number;
  minor: number;
  uid: number;
  gid: number;
}

/** The opaque handle native/pidfd.c returns for one watched pidfd. */
export interface NativePidfdWatch {
  readonly __pidfdWatch: unique symbol;
}

export interface Binding {
  setErrorClasses(sysError: typeof SysError, spawnError: typeof SpawnError): void;
  constants: Record<string, number>;
  ioctl(
    fd: number,
    request: number,
    arg: Uint8Array,
    pointers?: readonly { offset: number; buffer: Uint8Array }[],
  ): number | undefined;
  open(path: string, flags: number, mode: number): number;
  close(fd: number): void;
  mmap(fd: number, length: number, prot: number, flags: number, offset: number): ArrayBuffer;
  munmap(mapping: ArrayBuffer): void;
  memfdCreate(name: string, flags: number): number;
  flock(fd: number, operation: number): void;
  getpwnam(
    name: string,
  ): { name: string; uid: number; gid: number; dir: string; shell: string } | null;
  getgrnam(name: string): { name: string; gid: number; members: string[] } | null;
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
  pidfdOpen(pid: number): number;
  pidfdSendSignal(pidfd: number, signal: number): void;
  waitPid(
    pid: number,
    noHang: boolean,
  ): { pid: number; exitCode: number | null; signal: number | null } | null;
  spawnConfined(spec: NativeSpawnSpec, pidNamespace: boolean): { pid: number; pidfd: number };
  spawnConfinedAsync(
    spec: NativeSpawnSpec,
    pidNamespace: boolean,
  ): Promise<{ pid: number; pidfd: number }>;
  reaperKill(targetUid: number, reaperUid: number): void;
  reaperKillAsync(targetUid: number, reaperUid: number): Promise<void>;
  pidfdGetfd(pidfd: number, targetFd: number): number;
  pidfdWatch(pidfd: number, onExit: (error?: SysError) => void): NativePidfdWatch;
  pidfdWatchClose(watch: NativePidfdWatch): void;
  pidfdWatchRef(watch: NativePidfdWatch, ref: boolean): void;
  netnsConnect(pid: number, host: string, port: number): number;
  openPty(): { master: number; slave: number; path: string };
}

// dist/index.{js,cjs} and src/native.ts both sit one level below the package root, where
// node-gyp-build looks for build/Release and prebuilds/<platform>-<arch>.
const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

let loaded: Binding | undefined;
let loadError: unknown;
try {
  const require = createRequire(import.meta.url);
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
  loaded = nodeGypBuild(packageRoot) as Binding;
  loaded.setErrorClasses(SysError, SpawnError);
} catch (err) {
  loaded = undefined;
  loadError = err;
}

/** Whether the native addon loaded on this machine. */
export function isAvailable(): boolean {
  return loaded !== undefined;
}

export function binding(): Binding {
  if (loaded) return loaded;
  const reason = loadError instanceof Error ? loadError.message : String(loadError);
  throw new Error(
    `@xen-depriv/sys: the native addon is not available (expected a prebuild for ${process.platform}-${process.arch} or a node-gyp build): ${reason}`,
  );
}
