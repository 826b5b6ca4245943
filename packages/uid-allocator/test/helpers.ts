import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isAvailable } from '@xen-depriv/sys';

/**
 * uids of this package's tests: 3,100,000 and up, away from sys (3,000,xxx) and
 * qemu-launcher (3,011,xxx). Each test file takes its own block of 100, so files running in
 * parallel never share a uid, and each file has its own reaper uid.
 */
export const UID_BASE = 3_100_000;

export const isRoot = process.getuid?.() === 0;
export const canRunAsRoot = isRoot && isAvailable();

/** A state directory on tmpfs, so fsync costs what it costs under /run. */
export function tempStateDir(tag: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join('/dev/shm', `uid-allocator-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export const tick = () => new Promise<void>((r) => setTimeout(r, 5));

/** Polls `f` until it returns true or `tries` polls of 5 ms pass; returns the last value. */
export async function pollUntil(f: () => boolean, tries = 2000): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (f()) return true;
    await tick();
  }
  return f();
}
