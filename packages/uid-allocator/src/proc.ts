import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';

/** A process seen in /proc whose real, effective, saved or fs uid is the one asked about. */
export interface UidProcess {
  pid: number;
  /** Real, effective, saved and fs uid, the `Uid:` line of /proc/PID/status. */
  uids: [number, number, number, number];
  /** The one-letter state of the `State:` line (R, S, D, T, t, ...). */
  state: string;
  name: string;
}

function parseStatus(pid: number, text: string): UidProcess | null {
  const uid = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$/m.exec(text);
  const state = /^State:\s+(\S)/m.exec(text);
  if (uid === null || state === null) return null;
  return {
    pid,
    uids: [Number(uid[1]), Number(uid[2]), Number(uid[3]), Number(uid[4])],
    state: state[1] ?? '?',
    name: /^Name:\s+(.*)$/m.exec(text)?.[1] ?? '',
  };
}

// The Uid: line sits in the first few hundred bytes of /proc/PID/status; one read gets it.
const statusBuffer = Buffer.alloc(4096);

/**
 * Live processes with `uid` as any of their four uids. Zombies (Z) and dead tasks (X) are left
 * out: they run nothing and hold no uid the kernel checks, only a pid until their parent waits.
 * A process that exits between readdir and read is skipped.
 */
export function processesOfUid(uid: number, procRoot = '/proc'): UidProcess[] {
  const out: UidProcess[] = [];
  for (const name of readdirSync(procRoot)) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    let text: string;
    try {
      const fd = openSync(`${procRoot}/${name}/status`, 'r');
      try {
        text = statusBuffer.toString(
          'latin1',
          0,
          readSync(fd, statusBuffer, 0, statusBuffer.length, 0),
        );
      } finally {
        closeSync(fd);
      }
    } catch {
      continue;
    }
    const p = parseStatus(Number(name), text);
    if (p === null || p.state === 'Z' || p.state === 'X') continue;
    if (p.uids.includes(uid)) out.push(p);
  }
  return out;
}

/**
 * Field 22 of /proc/PID/stat, the start time in clock ticks since boot. With the boot id it
 * names one process for the life of the host: a pid reused later has a later start time.
 * null when the process is gone.
 */
export function processStartTime(pid: number, procRoot = '/proc'): number | null {
  let text: string;
  try {
    text = readFileSync(`${procRoot}/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  if (state === 'Z' || state === 'X') return null;
  const start = rest[19];
  return start === undefined ? null : Number(start);
}

/** A process named by pid and start time, so that pid reuse is not mistaken for it. */
export interface ProcessIdentity {
  pid: number;
  startTime: number;
}

export function identityOf(pid: number, procRoot = '/proc'): ProcessIdentity | null {
  const startTime = processStartTime(pid, procRoot);
  return startTime === null ? null : { pid, startTime };
}

/** True while the very process `id` names still runs (not a zombie, not a reused pid). */
export function isAlive(id: ProcessIdentity, procRoot = '/proc'): boolean {
  return processStartTime(id.pid, procRoot) === id.startTime;
}

let cachedBootId: string | undefined;

/** /proc/sys/kernel/random/boot_id: a record from another boot describes no live process. */
export function bootId(procRoot = '/proc'): string {
  if (procRoot === '/proc' && cachedBootId !== undefined) return cachedBootId;
  const id = readFileSync(`${procRoot}/sys/kernel/random/boot_id`, 'latin1').trim();
  if (procRoot === '/proc') cachedBootId = id;
  return id;
}
