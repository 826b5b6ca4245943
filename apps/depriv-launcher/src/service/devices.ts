// Executes the device part of a plan as root before the DM starts: opens disk images, creates
// taps in dom0's network namespace, and keeps the bridges from dom0 to the DM's own sockets.
import { execFile } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { createServer, connect as netConnect, type Server } from 'node:net';
import { promisify } from 'node:util';
import type { LaunchPlan, PlannedBridge } from '@xen-depriv/qemu-launcher';
import { close, constants, ioctl, open } from '@xen-depriv/sys';

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

/** Listens for each bridge with a `listen` address and joins every client to its unix socket. */
export async function startBridges(
  bridges: readonly PlannedBridge[],
): Promise<() => Promise<void>> {
  const servers: Server[] = [];
  const stop = async () => {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  };
  try {
    for (const b of bridges) {
      if (b.listen === null) continue;
      const listen = b.listen;
      const server = createServer((client) => {
        const dm = netConnect(b.unix);
        client.pipe(dm);
        dm.pipe(client);
        const end = () => {
          client.destroy();
          dm.destroy();
        };
        client.on('error', end);
        dm.on('error', end);
        client.on('close', end);
        dm.on('close', end);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) =>
          reject(new Error(`bridge ${b.name}: listen ${listen.host}:${listen.port}: ${e.message}`)),
        );
        server.listen({ host: listen.host, port: listen.port }, () => resolve());
      });
      servers.push(server);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return stop;
}
