import { fail, int, str } from './check.js';
import { binding } from './native.js';

/**
 * A TCP connection to `host:port` made inside the network namespace of process `pid`
 * (`/proc/PID/ns/net`): a short-lived thread joins that namespace with setns(2), makes and
 * connects the socket, and ends; the socket stays in that namespace. Returns a blocking,
 * close-on-exec fd (wrap it: `new net.Socket({ fd })`). IPv4 only; meant for loopback, where
 * connect(2) completes at once. Needs CAP_SYS_ADMIN (root). SysError ECONNREFUSED when nothing
 * listens there, ENOENT/ESRCH when the process is gone.
 */
export function netnsConnect(pid: number, host: string, port: number): number {
  const p = int('netnsConnect pid', pid, 1, 2 ** 22);
  const h = str('netnsConnect host', host);
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(h)) fail('netnsConnect host', 'an IPv4 address', h);
  return binding().netnsConnect(p, h, int('netnsConnect port', port, 1, 65535));
}

/** A pseudo-terminal pair from `openPty`. */
export interface Pty {
  /** The master side (close-on-exec, blocking): what a relay reads and writes. */
  readonly master: number;
  /** An open slave fd (close-on-exec): holding it keeps the master from reading EIO. */
  readonly slave: number;
  /** The slave's path (`/dev/pts/N`), what a console client opens. */
  readonly path: string;
}

/**
 * A new pseudo-terminal (posix_openpt, grantpt, unlockpt), its slave opened and set raw
 * (cfmakeraw: no echo, no line editing). The caller owns both fds.
 */
export function openPty(): Pty {
  return binding().openPty();
}
