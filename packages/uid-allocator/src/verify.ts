import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkDmUid, UidAllocatorError } from './errors.js';
import { processesOfUid, type UidProcess } from './proc.js';

/** Where files of a uid may outlive its processes on a usual host. Missing ones are skipped. */
export const DEFAULT_SHARED_PLACES: readonly string[] = [
  '/dev/shm',
  '/tmp',
  '/var/tmp',
  '/dev/mqueue',
];

export interface VerifyEmptyOptions {
  /** Default '/proc' (processes and /proc/sysvipc). */
  procRoot?: string;
  /** Directories searched for entries the uid owns; default DEFAULT_SHARED_PLACES. */
  places?: readonly string[];
  /** The allocator's state directory, searched too. */
  stateDir?: string;
  /** Bound on entries examined per place, so a hostile tree cannot stall the check. */
  maxEntries?: number;
}

export interface SysvIpcObject {
  kind: 'shm' | 'msg' | 'sem';
  id: number;
  key: number;
  /** Owner and creator uid; either being the uid counts. */
  uid: number;
  cuid: number;
}

export interface EmptinessReport {
  uid: number;
  empty: boolean;
  processes: UidProcess[];
  /** Paths the uid owns in the shared places or the state directory. */
  files: string[];
  ipc: SysvIpcObject[];
  /** Places whose walk hit maxEntries: not proven empty, so `empty` is false. */
  truncated: string[];
}

const IPC_ID_COLUMN = { shm: 'shmid', msg: 'msqid', sem: 'semid' } as const;

/**
 * SysV IPC objects of the caller's IPC namespace whose owner or creator is `uid`, from
 * /proc/sysvipc/{shm,msg,sem} (columns found by their header names, as ipcs does).
 */
export function sysvIpcOfUid(uid: number, procRoot = '/proc'): SysvIpcObject[] {
  const out: SysvIpcObject[] = [];
  for (const kind of ['shm', 'msg', 'sem'] as const) {
    let text: string;
    try {
      text = readFileSync(`${procRoot}/sysvipc/${kind}`, 'latin1');
    } catch {
      continue;
    }
    const lines = text.split('\n');
    const header = (lines[0] ?? '').trim().split(/\s+/);
    const col = (name: string) => header.indexOf(name);
    const [iId, iKey, iUid, iCuid] = [
      col(IPC_ID_COLUMN[kind]),
      col('key'),
      col('uid'),
      col('cuid'),
    ];
    if (iId < 0 || iUid < 0 || iCuid < 0) {
      throw new UidAllocatorError(
        'BAD_RECORD',
        `${procRoot}/sysvipc/${kind}: expected columns ${IPC_ID_COLUMN[kind]}, uid and cuid, got header '${lines[0] ?? ''}'`,
      );
    }
    for (const line of lines.slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < header.length) continue;
      const o = Number(f[iUid]);
      const c = Number(f[iCuid]);
      if (o === uid || c === uid) {
        out.push({ kind, id: Number(f[iId]), key: Number(f[iKey] ?? 0), uid: o, cuid: c });
      }
    }
  }
  return out;
}

/**
 * Entries under `dir` owned by `uid`. A uid can only create entries in directories it may
 * write: its own (reported, not entered) or world-writable ones such as /tmp's sticky
 * subdirectories, so only those are entered. Symlinks are not followed.
 */
export function filesOfUid(
  uid: number,
  dir: string,
  maxEntries = 100_000,
): { files: string[]; truncated: boolean } {
  const files: string[] = [];
  const stack = [dir];
  let seen = 0;
  while (stack.length > 0) {
    const d = stack.pop() as string;
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const name of names) {
      if (++seen > maxEntries) return { files, truncated: true };
      const p = join(d, name);
      let st: ReturnType<typeof lstatSync>;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      if (st.uid === uid) files.push(p);
      else if (st.isDirectory() && (st.mode & 0o002) !== 0) stack.push(p);
    }
  }
  return { files, truncated: false };
}

/**
 * Whether `uid` is empty: no live process has it as real, effective, saved or fs uid, it owns
 * no SysV IPC object, and no entry in the shared places or the state directory. A uid that is
 * not empty must not serve another domain.
 */
export function verifyEmpty(uid: number, opts: VerifyEmptyOptions = {}): EmptinessReport {
  checkDmUid('verifyEmpty uid', uid);
  const procRoot = opts.procRoot ?? '/proc';
  const processes = processesOfUid(uid, procRoot);
  const ipc = sysvIpcOfUid(uid, procRoot);
  const files: string[] = [];
  const truncated: string[] = [];
  const places = [...(opts.places ?? DEFAULT_SHARED_PLACES)];
  if (opts.stateDir !== undefined) places.push(opts.stateDir);
  for (const place of places) {
    const r = filesOfUid(uid, place, opts.maxEntries);
    files.push(...r.files);
    if (r.truncated) truncated.push(place);
  }
  const empty =
    processes.length === 0 && ipc.length === 0 && files.length === 0 && truncated.length === 0;
  return { uid, empty, processes, files, ipc, truncated };
}

/** One line naming what keeps a uid from being empty. */
export function describeReport(r: EmptinessReport): string {
  const parts: string[] = [];
  if (r.processes.length > 0)
    parts.push(
      `${r.processes.length} process(es) (pids ${r.processes
        .slice(0, 5)
        .map((p) => p.pid)
        .join(', ')})`,
    );
  if (r.ipc.length > 0)
    parts.push(
      `${r.ipc.length} SysV IPC object(s) (${r.ipc.map((o) => `${o.kind} ${o.id}`).join(', ')})`,
    );
  if (r.files.length > 0)
    parts.push(`${r.files.length} file(s) (${r.files.slice(0, 3).join(', ')})`);
  if (r.truncated.length > 0) parts.push(`unfinished search of ${r.truncated.join(', ')}`);
  return parts.length === 0 ? 'empty' : parts.join('; ');
}
