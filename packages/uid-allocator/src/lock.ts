import { setTimeout as sleep } from 'node:timers/promises';
import { close, constants, flock, open, SysError } from '@xen-depriv/sys';
import { UidAllocatorError } from './errors.js';

/** A held lock; `release` is idempotent. */
export interface LockHandle {
  release(): void;
}

/**
 * What the allocator needs to serialize its reads and writes of the state directory across
 * launcher processes. The default is `flockLock`; tests may put a model behind it.
 */
export interface StateLock {
  acquire(): Promise<LockHandle>;
}

export interface FlockLockOptions {
  /** Give up with LOCK_TIMEOUT after this long; default 30 s. */
  timeoutMs?: number;
}

const yieldOnce = () => new Promise<void>((r) => setImmediate(r));

/**
 * flock(2) LOCK_EX on `path`, taken with LOCK_NB and retried so the event loop keeps running.
 * The lock belongs to the open file description: the kernel drops it when its holder dies,
 * so a lock file left behind by a crash holds nothing and is simply reused. Each acquire opens
 * its own description, so two acquires in one process exclude each other too.
 */
export function flockLock(path: string, opts: FlockLockOptions = {}): StateLock {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return {
    async acquire() {
      const fd = open(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
      const deadline = Date.now() + timeoutMs;
      for (let attempt = 0; ; attempt++) {
        try {
          flock(fd, constants.LOCK_EX | constants.LOCK_NB);
          break;
        } catch (e) {
          if (!(e instanceof SysError) || e.code !== 'EAGAIN') {
            close(fd);
            throw e;
          }
        }
        if (Date.now() > deadline) {
          close(fd);
          throw new UidAllocatorError(
            'LOCK_TIMEOUT',
            `flock ${path}: expected the lock within ${timeoutMs} ms, it stayed held`,
          );
        }
        if (attempt < 8) await yieldOnce();
        else await sleep(1 + (attempt % 3));
      }
      let held = true;
      return {
        release() {
          if (!held) return;
          held = false;
          close(fd);
        },
      };
    },
  };
}
