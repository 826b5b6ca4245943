import { close, pidfdGetfd, pidfdOpen, watchPidfd } from '@xen-depriv/sys';

/**
 * A copy of descriptor `fd` of process `pid` (pidfd_getfd(2)): how the service takes libxl's
 * pre-opened QMP listener from the shim libxl exec'd, without a path or SCM_RIGHTS.
 */
export function takeFd(pid: number, fd: number): number {
  const pidfd = pidfdOpen(pid);
  try {
    return pidfdGetfd(pidfd, fd);
  } finally {
    close(pidfd);
  }
}

/**
 * Calls `onExit` once when process `pid` ends (its pidfd turns readable: libuv polls it with the
 * rest of the loop; no timer). `pidfd` is taken over when given. Returns a stop function.
 */
export function watchExit(pid: number, onExit: () => void, pidfd?: number): () => void {
  let fd: number;
  try {
    fd = pidfd ?? pidfdOpen(pid);
  } catch {
    // Gone already (ESRCH).
    queueMicrotask(onExit);
    return () => {};
  }
  let open = true;
  const stop = () => {
    if (!open) return;
    open = false;
    w.close();
    close(fd);
  };
  const w = watchPidfd(fd, () => {
    stop();
    onExit();
  });
  return stop;
}
