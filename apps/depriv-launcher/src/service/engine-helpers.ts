import { lstatSync, readdirSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { type Lease, type SchemeConfig, schemeFromConfig } from '@xen-depriv/uid-allocator';
import type { AllocatorRef } from './host-worker.js';
import { EngineError } from './types.js';

export const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** The uid the scheme would try first: what a plan shows before the lease gives the real one. */
export function firstCandidate(user: SchemeConfig, domid: number): { uid: number; gid: number } {
  try {
    const extra = user.scheme === 'pool' ? { reaperUid: user.first + user.count } : {};
    for (const c of schemeFromConfig(user, extra).candidates(domid)) return c;
  } catch (e) {
    throw new EngineError(
      'BAD_PARAMS',
      `user: ${errorText(e)}`,
      { key: 'user', detail: errorText(e) },
      e,
    );
  }
  throw new EngineError('BAD_PARAMS', `user: the scheme has no uid for domain ${domid}`, {
    key: 'user',
  });
}

export const isLease = (x: unknown): x is Lease =>
  typeof x === 'object' &&
  x !== null &&
  typeof (x as Lease).leaseId === 'string' &&
  typeof (x as Lease).uid === 'number' &&
  typeof (x as Lease).scheme === 'string';

export function allocOf(
  lease: unknown,
  byDomid: Map<number, AllocatorRef>,
  fallback: AllocatorRef,
) {
  return (isLease(lease) ? byDomid.get(lease.domid) : undefined) ?? fallback;
}

export function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export function rmLinkInto(link: string, jailBase: string): void {
  try {
    if (lstatSync(link).isSymbolicLink() && readlinkSync(link).startsWith(`${jailBase}/`)) {
      unlinkSync(link);
    }
  } catch {
    // Gone.
  }
}

/** The proxy's refusal log of one DM, capped (a hostile DM cannot fill the disk). */
const LOG_CAP = 256 * 1024;
const logSizes = new Map<string, number>();
export function appendCapped(path: string, line: string): void {
  const size = logSizes.get(path) ?? 0;
  if (size > LOG_CAP) return;
  const b = `${line}\n`;
  logSizes.set(path, size + b.length);
  try {
    writeFileSync(path, b, { flag: 'a', mode: 0o600 });
  } catch {
    // Logging never fails a DM.
  }
}

/** Removes a DM's capped log and forgets its size (the next DM of that domid starts afresh). */
export function removeCappedLog(path: string): void {
  logSizes.delete(path);
  rmSync(path, { force: true });
}
