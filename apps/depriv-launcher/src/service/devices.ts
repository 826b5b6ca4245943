// Executes the device part of a plan as root before the DM starts: opens disk images, creates
// taps in dom0's network namespace, and keeps the bridges from dom0 to the DM's own sockets.
import { execFile } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, Socket } from 'node:net';
import tty from 'node:tty';
import { promisify } from 'node:util';
import type { LaunchPlan, PlannedBridge } from '@xen-depriv/qemu-launcher';
import { close, constants, ioctl, netnsConnect, open, openPty } from '@xen-depriv/sys';

const run = promisify(execFile);

/** TUNSETIFF: _IOW('T', 202, int) (linux/if_tun.h). */
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
/** struct ifreq: char ifr_name[IFNAMSIZ = 16], then the union (short ifr_flags first); 40 bytes. */
const IFREQ_SIZE = 40;

/**
 * A tap device `ifname` in this process's network namespace, up, on `bridge` when given;
 * returns its descriptor. The tap is not persistent: it goes when the last descriptor (the
 * DM's) closes.
 */
export async function createTap(ifname: string, bridge: string | null): Promise<number> {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(ifname)) {
    throw new Error(`tap: expected an interface name of at most 15 characters, saw "${ifname}"`);
  }
  const fd = open('/dev/net/tun', (constants.O_RDWR ?? 2) | (constants.O_CLOEXEC ?? 0o2000000));
  try {
    const ifr = new Uint8Array(IFREQ_SIZE);
    ifr.set(Buffer.from(ifname, 'ascii'), 0);
    new DataView(ifr.buffer).setUint16(16, IFF_TAP | IFF_NO_PI, true);
    ioctl(fd, TUNSETIFF, ifr);
    await run('ip', ['link', 'set', 'dev', ifname, 'up']);
    if (bridge !== null) await run('ip', ['link', 'set', 'dev', ifname, 'master', bridge]);
    return fd;
  } catch (e) {
    close(fd);
    throw new Error(
      `tap ${ifname}${bridge ? ` on ${bridge}` : ''}: ${(e as Error).message.trim()}`,
    );
  }
}

/** The descriptors a plan's `open`/`tap` fds name, by name; `close` gives them back. */
export async function openPlannedFds(
  p: LaunchPlan,
): Promise<{ fds: Record<string, number>; close: () => void }> {
  const fds: Record<string, number> = {};
  const mine: number[] = [];
  const done = () => {
    for (const fd of mine.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // Closed already.
      }
    }
  };
  try {
    for (const f of p.fds) {
      if (!f.source.startsWith('passed:')) continue;
      const name = f.source.slice('passed:'.length);
      if (f.open) {
        const fd = openSync(f.open.path, f.open.readOnly ? 'r' : 'r+');
        mine.push(fd);
        fds[name] = fd;
      } else if (f.tap) {
        const fd = await createTap(f.tap.ifname, f.tap.bridge);
        mine.push(fd);
        fds[name] = fd;
      }
    }
  } catch (e) {
    done();
    throw e;
  }
  return { fds, close: done };
}

/**
 * A TCP listener on `host:port`, or with `findUnused` on the first free port of
 * port..port+99 (QEMU's `-vnc ...,to=99`): bound before the DM's plan is made, since the DM
 * is told the port. Connections wait in the backlog until `startBridges` serves them.
 */
export async function reservePort(
  host: string,
  port: number,
  findUnused: boolean,
): Promise<{ server: Server; port: number }> {
  const last = findUnused ? Math.min(port + 99, 65535) : port;
  let error: Error | null = null;
  for (let p = port; p <= last; p++) {
    const server = createServer({ pauseOnConnect: true });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port: p, exclusive: true }, () => resolve());
      });
      return { server, port: p };
    } catch (e) {
      error = e as Error;
      server.close();
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') break;
    }
  }
  throw new Error(
    `listen ${host}:${port}${last > port ? `..${last}` : ''}: ${error?.message ?? 'no port'}`,
  );
}

/** Joins two byte streams until either ends. */
function join(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const end = () => {
    a.destroy();
    b.destroy();
  };
  for (const s of [a, b]) {
    s.on('error', end);
    s.on('close', end);
  }
}

/** The running bridges of a DM: `ptys` names the host pty of each console bridge. */
export interface Bridges {
  readonly ptys: Readonly<Record<string, string>>;
  stop(): Promise<void>;
}

/** Bytes a console keeps for a reader that is not there; more are dropped, as a UART would. */
const CONSOLE_BACKLOG = 64 * 1024;

/**
 * Serves each bridge once the DM runs (`pid`): a TCP listener (`reserved` by name, or bound
 * here) whose clients are joined to the DM's unix socket or to its loopback port (a socket made
 * in its network namespace); a console: a pty made here, in dom0, relayed to the DM's socket.
 */
export async function startBridges(
  bridges: readonly PlannedBridge[],
  options: { pid: number; reserved?: ReadonlyMap<string, Server> },
): Promise<Bridges> {
  const servers: Server[] = [];
  const closers: (() => void)[] = [];
  const ptys: Record<string, string> = {};
  const stop = async () => {
    for (const c of closers.splice(0)) c();
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  };
  const toDm = (b: PlannedBridge): Socket => {
    if (b.loopback) {
      const fd = netnsConnect(options.pid, b.loopback.host, b.loopback.port);
      return new Socket({ fd, readable: true, writable: true });
    }
    return netConnect(b.unix as string);
  };
  try {
    for (const b of bridges) {
      if (b.console === 'pty') {
        const pty = openPty();
        const master = new tty.ReadStream(pty.master);
        const dm = toDm(b);
        // Guest output flows whether or not a console is attached: past the backlog, dropped.
        dm.on('data', (chunk: Buffer) => {
          if (master.writableLength < CONSOLE_BACKLOG) master.write(chunk);
        });
        master.on('data', (chunk: Buffer) => dm.write(chunk));
        const end = () => {
          dm.destroy();
          master.destroy();
          try {
            closeSync(pty.slave);
          } catch {
            // Closed already.
          }
        };
        dm.on('error', end);
        dm.on('close', end);
        master.on('error', () => {});
        closers.push(end);
        ptys[b.name] = pty.path;
        continue;
      }
      if (b.listen === null) continue;
      const listen = b.listen;
      let server = options.reserved?.get(b.name);
      if (!server) {
        server = createServer({ pauseOnConnect: true });
        const s = server;
        await new Promise<void>((resolve, reject) => {
          s.once('error', (e) =>
            reject(
              new Error(`bridge ${b.name}: listen ${listen.host}:${listen.port}: ${e.message}`),
            ),
          );
          s.listen({ host: listen.host, port: listen.port }, () => resolve());
        });
      }
      server.on('connection', (client: Socket) => {
        let dm: Socket;
        try {
          dm = toDm(b);
        } catch {
          client.destroy();
          return;
        }
        join(client, dm);
        client.resume();
      });
      servers.push(server);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { ptys, stop };
}

/**
 * Refuses a qcow2 image with a backing file: QEMU would open the backing file by its path,
 * which it cannot reach (and must not) from its root. Reads the header from the descriptor the
 * launcher opened; other formats are single files.
 */
export function checkImage(image: { path: string; format: string }, fd: number): void {
  if (image.format !== 'qcow2') return;
  const h = Buffer.alloc(20);
  const n = readSync(fd, h, 0, 20, 0);
  if (n < 20 || h.readUInt32BE(0) !== 0x514649fb) {
    throw new Error(`disk ${image.path}: format qcow2, but it has no qcow2 header`);
  }
  const offset = h.readBigUInt64BE(8);
  const size = h.readUInt32BE(16);
  if (offset === 0n) return;
  const name = Buffer.alloc(Math.min(size, 1023));
  readSync(fd, name, 0, name.length, Number(offset));
  throw new Error(
    `disk ${image.path}: a qcow2 image with a backing file ("${name.toString('utf8')}") is refused: QEMU would open it by path; flatten it (qemu-img convert) or give the chain as separate disks`,
  );
}
