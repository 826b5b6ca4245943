import { existsSync } from 'node:fs';
import { posix } from 'node:path';
import type { SchemeConfig } from '@xen-depriv/uid-allocator';
import { XEN_QEMU_BINARY } from '../xen-qemu.js';
import type { Guest } from './guest.js';

/** Stable error codes of the engine; the RPC layer maps them onto JSON-RPC error codes. */
export type EngineErrorCode =
  | 'EXISTS'
  | 'NOT_FOUND'
  | 'HOST_CANNOT'
  | 'BAD_PARAMS'
  | 'LAUNCH_FAILED'
  | 'DESTROY_FAILED';

export class EngineError extends Error {
  readonly code: EngineErrorCode;
  readonly data: Record<string, unknown>;
  constructor(
    code: EngineErrorCode,
    message: string,
    data: Record<string, unknown> = {},
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'EngineError';
    this.code = code;
    this.data = data;
  }
}

export type Target = 'embedded' | 'dom0';

export interface EngineSettings {
  /** Root-only: leases, jails, records, proxy sockets, the probe cache. */
  readonly stateDir: string;
  /** `dom0` on a Xen host (the real xenstored, privcmd, Xen's QEMU); `embedded` elsewhere. */
  readonly target: Target;
  /** The QEMU a `{ domid }`-only request gets. */
  readonly qemu: string;
  /** The uid scheme a request that names none gets. */
  readonly user: SchemeConfig;
  /** dom0: the real xenstored's socket, the proxies' upstream. */
  readonly xenstoredSocket: string;
  /** dom0: how the proxy reaches xenstored (see xs-restrict's README, "Privileged upstream"). */
  readonly upstream: 'privileged' | 'dom0';
  /** Where probe results persist, one file per binary identity. */
  readonly probeCacheDir: string;
  /** Greeting plus query-status must arrive within this (Xen's QEMU under TCG is slow). */
  readonly readyTimeoutMs: number;
  /** Run host work on this thread (tests of the sources); default: the host worker thread. */
  readonly inlineHost?: boolean;
  /**
   * Each DM's proxy also logs every request it lets through (xs-restrict's `trace`) to the DM's
   * proxy log: its whole xenstore traffic. The service turns it on at log level `debug`.
   */
  readonly xenstoreTrace?: boolean;
}

export const DEFAULT_STATE_DIR = '/run/xen-depriv';
export const EMBEDDED_QEMU = '/usr/bin/qemu-system-x86_64';
export const DEFAULT_USER: SchemeConfig = { scheme: 'pool', first: 3_000_000, count: 1000 };

/** A Xen dom0 has privcmd and a xenstored; anything else gets the embedded defaults. */
export function detectTarget(): Target {
  return existsSync('/dev/xen/privcmd') &&
    (existsSync('/run/xenstored/socket') || existsSync('/dev/xen/xenbus'))
    ? 'dom0'
    : 'embedded';
}

export function defaultSettings(over: Partial<EngineSettings> = {}): EngineSettings {
  const target = over.target ?? detectTarget();
  const stateDir = over.stateDir ?? DEFAULT_STATE_DIR;
  return {
    stateDir,
    target,
    qemu: target === 'dom0' ? XEN_QEMU_BINARY : EMBEDDED_QEMU,
    user: DEFAULT_USER,
    xenstoredSocket: '/run/xenstored/socket',
    upstream: 'privileged',
    probeCacheDir: posix.join(stateDir, 'probe-cache'),
    readyTimeoutMs: target === 'dom0' ? 60_000 : 10_000,
    ...over,
  };
}

/** A launch as the engine takes it: a launcher config, or the argv libxl gave the shim. */
export type LaunchRequest =
  | {
      readonly kind: 'config';
      readonly domid: number;
      readonly name?: string | undefined;
      readonly mode: 'jail' | 'libxl-compat';
      readonly target: Target;
      readonly qemu: {
        readonly binary: string;
        readonly machine: string;
        readonly args: readonly string[];
      };
      readonly user: SchemeConfig;
      /** The guest's devices (disks, NICs, VNC, serial, memory, ...); none by default. */
      readonly guest?: Guest | undefined;
    }
  | {
      readonly kind: 'libxl';
      readonly libxlArgv: readonly string[];
      /** The shim's pid: libxl's pre-opened QMP listener is taken from it (pidfd_getfd). */
      readonly shimPid: number | null;
    };

export type DmState = 'launching' | 'running' | 'destroying';

export interface DmInfo {
  readonly domid: number;
  readonly pid: number | null;
  readonly uid: number | null;
  readonly mode: 'jail' | 'libxl-compat';
  readonly target: Target;
  readonly kind: 'config' | 'libxl';
  readonly state: DmState;
  /** ISO time the launch started (or the DM was adopted, for `adopted`). */
  readonly started: string;
  readonly ageSeconds: number;
  readonly adopted: boolean;
}

export interface LaunchResult {
  readonly domid: number;
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  readonly status: string;
  readonly qmpSocket: string;
  readonly log: string;
  readonly xenstoreSocket: string;
  readonly spawner: string;
  readonly limitations: readonly string[];
  readonly notes: readonly string[];
}

export interface ExitInfo {
  readonly domid: number;
  readonly pid: number | null;
  readonly uid: number | null;
  readonly reason: string;
  readonly errors: readonly string[];
}
