import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { open as openAsync } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAvailable } from '../src/index.js';

export const isRoot = process.getuid?.() === 0;
export const canRun = isAvailable();
export const canRunAsRoot = canRun && isRoot;

/** Test uids: a private block (3,970,000+) in the 3,000,000+ range, apart from other packages' test uids. */
export const TEST_UID_BASE = 3_970_000;

export function tempDir(prefix: string): { path: string; [Symbol.dispose](): void } {
  const path = mkdtempSync(join(tmpdir(), `xen-depriv-sys-${prefix}-`));
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) };
}

export function statusField(pid: number, field: string): string | undefined {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith(`${field}:`));
  return line?.slice(field.length + 1).trim();
}

/** Live (not zombie) processes whose real uid is `uid`, read from /proc/<pid>/status. */
export function processesOfUid(uid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let text: string;
    try {
      text = readFileSync(`/proc/${name}/status`, 'utf8');
    } catch {
      continue; // exited while we scanned
    }
    const uidLine = text.match(/^Uid:\s+(\d+)/m);
    const state = text.match(/^State:\s+(\S)/m);
    if (uidLine?.[1] === String(uid) && state?.[1] !== 'Z') pids.push(Number(name));
  }
  return pids;
}

/** Polls `probe` up to `rounds` times, yielding to the event loop between tries. */
export async function pollUntil<T>(
  probe: () => T,
  done: (v: T) => boolean,
  rounds = 1000,
): Promise<T> {
  let v = probe();
  for (let i = 0; i < rounds && !done(v); i++) {
    await new Promise((r) => setTimeout(r, 5));
    v = probe();
  }
  return v;
}

/**
 * spawnConfined returns when the child's execve has replaced its memory; the kernel sets the
 * new comm a moment later. Tests that read /proc wait for it (bounded by rounds, not time).
 */
export async function execDone(pid: number, comm: string): Promise<void> {
  const read = () => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      return 'gone';
    }
  };
  const seenComm = await pollUntil(read, (c) => c === comm);
  if (seenComm !== comm)
    throw new Error(`pid ${pid}: expected comm ${comm} after execve, saw ${seenComm}`);
}

/** One turn of the event loop. */
export function immediate(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Occupies every libuv thread-pool thread with an open(2) of a FIFO that has no writer, so
 * that work queued after this call cannot start until `release()`: while held, a promise
 * that waits for the pool stays pending however many turns the loop makes, which proves
 * the loop was not blocked, with no clock involved. Always release (try/finally).
 */
export function holdThreadPool(dir: string): { release(): Promise<void> } {
  const fifo = join(dir, 'pool-gate');
  execFileSync('/usr/bin/mkfifo', [fifo]);
  // libuv reads the same variable; 4 when unset.
  const size = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const opens = Array.from({ length: size }, () => openAsync(fifo, 'r'));
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      // O_RDWR never blocks on a FIFO and counts as a writer: every blocked reader returns.
      const w = openSync(fifo, 'r+');
      try {
        for (const handle of await Promise.all(opens)) await handle.close();
      } finally {
        closeSync(w);
      }
    },
  };
}
