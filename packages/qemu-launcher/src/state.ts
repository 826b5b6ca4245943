import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { posix } from 'node:path';
import { LauncherError } from './errors.js';
import type { LaunchPlan } from './plan.js';

export type LaunchPhase = 'launching' | 'running' | 'destroying';

/** What the launcher writes before each irreversible step, so `recover` can finish the job. */
export interface LaunchRecord {
  readonly version: 1;
  readonly domid: number;
  readonly phase: LaunchPhase;
  readonly plan: LaunchPlan;
  readonly lease: unknown;
  /** Pid and its start time (clock ticks since boot, /proc/PID/stat field 22): a reused pid differs. */
  readonly pid: number | null;
  readonly startTime: number | null;
  readonly root: { readonly dev: number; readonly ino: number } | null;
}

const planToJson = (p: LaunchPlan) => ({
  ...p,
  seccomp:
    p.seccomp === null
      ? null
      : { profile: p.seccomp.profile, program: Buffer.from(p.seccomp.program).toString('base64') },
});

export function writeRecord(r: LaunchRecord): void {
  const path = r.plan.paths.state;
  mkdirSync(posix.dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ ...r, plan: planToJson(r.plan) }, null, 2)}\n`, {
    mode: 0o600,
  });
  renameSync(tmp, path);
}

export function readRecord(path: string): LaunchRecord {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new LauncherError(
      'ESTATE',
      `${path}: expected a launch record, saw ${(e as Error).message}`,
      { cause: e },
    );
  }
  const r = raw as LaunchRecord & {
    plan: { seccomp: { profile: string; program: string } | null };
  };
  if (r?.version !== 1 || typeof r.domid !== 'number' || typeof r.plan !== 'object') {
    throw new LauncherError(
      'ESTATE',
      `${path}: expected a version 1 launch record, saw ${JSON.stringify(raw).slice(0, 80)}`,
    );
  }
  const s = r.plan.seccomp;
  return {
    ...r,
    plan: {
      ...r.plan,
      seccomp:
        s === null
          ? null
          : { profile: s.profile, program: new Uint8Array(Buffer.from(s.program, 'base64')) },
    } as LaunchPlan,
  };
}

export function listRecords(stateDir: string): string[] {
  const dir = posix.join(stateDir, 'state');
  try {
    return readdirSync(dir)
      .filter((n) => n.endsWith('.json'))
      .sort()
      .map((n) => posix.join(dir, n));
  } catch {
    return [];
  }
}

export function removeRecord(path: string): void {
  rmSync(path, { force: true });
  rmSync(`${path}.tmp`, { force: true });
}

/** Start time of `pid` in clock ticks, or null when it is gone or a zombie. */
export function processStartTime(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm may hold spaces and parentheses: fields resume after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (rest[0] === 'Z' || rest[0] === 'X') return null;
  const t = Number(rest[19]);
  return Number.isFinite(t) ? t : null;
}
