import { fail, fd } from './check.js';
import type { SysError } from './errors.js';
import { binding } from './native.js';

/** A running watchPidfd. */
export interface PidfdWatch {
  /** Stops watching; onExit is not called after this. Idempotent, safe inside onExit. */
  close(): void;
  /** Lets the event loop exit while this is the only thing left (like timer.unref()). */
  unref(): void;
  /** Undoes unref(); a new watch starts referenced. */
  ref(): void;
}

/**
 * Calls `onExit` once, from the event loop, when the process behind `pidfd` has exited
 * (a pidfd polls readable from then on), and then stops: one libuv poll handle, no thread,
 * no timer. Never calls it synchronously, even for a process that is already gone.
 * `onExit` gets a SysError only if libuv reports a poll error on the fd (not expected for a
 * pidfd); the process may then still run. The watch keeps the loop alive until it fires or
 * is closed, unless unref()'d. It does not reap: the exit status stays for waitPid.
 * Keep `pidfd` open while watching; the fd's O_NONBLOCK flag is left as it was. One watch
 * per fd number (a second is EEXIST): for two, watch a dup.
 */
export function watchPidfd(pidfd: number, onExit: (error?: SysError) => void): PidfdWatch {
  const fdn = fd('watchPidfd pidfd', pidfd);
  if (typeof onExit !== 'function') fail('watchPidfd onExit', 'a function', onExit);
  const handle = binding().pidfdWatch(fdn, onExit);
  return {
    close: () => binding().pidfdWatchClose(handle),
    unref: () => binding().pidfdWatchRef(handle, false),
    ref: () => binding().pidfdWatchRef(handle, true),
  };
}

/** Resolves once the process behind `pidfd` has exited (watchPidfd as a promise). */
export function pidfdExited(pidfd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    watchPidfd(pidfd, (error) => (error ? reject(error) : resolve()));
  });
}

/**
 * pidfd_getfd(2) (Linux 5.6): a new close-on-exec fd in this process for the open file
 * that fd `targetFd` is in the process behind `pidfd`. Needs ptrace access to it
 * (PTRACE_MODE_ATTACH_REALCREDS: root, or the same uid where Yama allows). SysError EBADF
 * when that process has no such fd, ESRCH when it has exited, EPERM without access.
 */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return binding().pidfdGetfd(fd('pidfdGetfd pidfd', pidfd), fd('pidfdGetfd targetFd', targetFd));
}
