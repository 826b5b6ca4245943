import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dynamicPoolScheme } from '@xen-depriv/uid-allocator';
import { afterAll, describe, expect, it } from 'vitest';
import { launcherConfig } from '../src/commands/launch.js';
import { dmPaths, settingsFromEnv } from '../src/libxl-dm/run.js';
import {
  cleanDmLeftovers,
  dmLauncherConfig,
  LAUNCHER_FILE,
  saveLauncherConfig,
  writeDmLeftovers,
} from '../src/libxl-dm/state.js';
import { allocatorFor } from '../src/runtime.js';

const dir = mkdtempSync(join(tmpdir(), 'xen-depriv-dm-state-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const take = <T>(it: Iterable<T>, n: number): T[] => {
  const out: T[] = [];
  for (const x of it) {
    if (out.length === n) break;
    out.push(x);
  }
  return out;
};

describe("xen-depriv-dm's launcher config", () => {
  it('round-trips through launcherConfig() with the pool of the DM', () => {
    const stateDir = join(dir, 'cfg');
    const s = settingsFromEnv({
      XEN_DEPRIV_DM_STATE_DIR: stateDir,
      XEN_DEPRIV_DM_POOL_FIRST: '3240000',
      XEN_DEPRIV_DM_POOL_COUNT: '16',
    });
    saveLauncherConfig(dmLauncherConfig(s, 7));
    expect(readdirSync(stateDir)).toEqual([LAUNCHER_FILE]);
    const config = launcherConfig(stateDir);
    expect(config.user).toEqual({ scheme: 'pool', first: 3_240_000, count: 16 });
    expect(config.stateDir).toBe(stateDir);
    // The allocator `recover` builds hands out the uids the DM's own allocator does.
    const dm = dynamicPoolScheme({ first: 3_240_000, count: 16, reaperUid: 3_240_016 });
    const cli = allocatorFor(config).scheme;
    expect(cli.reaperUid).toBe(dm.reaperUid);
    expect(take(cli.candidates(7), 16)).toEqual(take(dm.candidates(7), 16));
    // A second DM overwrites it whole.
    saveLauncherConfig(dmLauncherConfig(s, 9));
    expect(readdirSync(stateDir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    expect(launcherConfig(stateDir).user).toEqual(config.user);
  });

  it('is valid with the default settings', () => {
    const stateDir = join(dir, 'default');
    const s = { ...settingsFromEnv({}), stateDir };
    saveLauncherConfig(dmLauncherConfig(s, 1));
    expect(launcherConfig(stateDir).user).toEqual({
      scheme: 'pool',
      first: 3_220_000,
      count: 1000,
    });
  });
});

describe("cleanDmLeftovers (xen-depriv recover's part for xen-depriv-dm)", () => {
  const stateDir = join(dir, 'state');
  const runXen = join(dir, 'run-xen');
  const servers: Server[] = [];
  afterAll(() => {
    for (const srv of servers) srv.close();
  });
  const listen = (path: string) =>
    new Promise<void>((resolve) => {
      const srv = createServer();
      servers.push(srv);
      srv.listen(path, resolve);
    });
  const leftovers = async (domid: number, alive: boolean) => {
    const s = { ...settingsFromEnv({}), stateDir };
    const socket = dmPaths(s, domid).proxySocket;
    const link = join(runXen, `qmp-libxenstat-${domid}`);
    writeDmLeftovers(stateDir, { domid, socket, links: [link] });
    if (!alive) {
      // Same file, but a launcher that is gone (its start time does not match).
      writeFileSync(
        join(stateDir, 'xs-proxy', `dm-${domid}.json`),
        JSON.stringify({
          domid,
          socket,
          links: [link],
          launcher: { pid: process.pid, startTime: 1 },
        }),
      );
    }
    await listen(socket);
    symlinkSync(join(stateDir, `dm-${domid}`, 'run', `qmp-libxenstat-${domid}`), link);
    return { socket, link };
  };

  it('removes the socket and symlink of a dead launcher, keeps running ones', async () => {
    mkdirSync(runXen, { recursive: true });
    const dead = await leftovers(7, false);
    const live = await leftovers(8, true);
    const kept = await leftovers(9, false);
    // Domain 10's launcher is gone, but libxl (or a newer DM) has since pointed the link elsewhere.
    const other = await leftovers(10, false);
    rmSync(other.link);
    symlinkSync('/elsewhere/qmp', other.link);

    const removed = cleanDmLeftovers(stateDir, new Set([9]));
    expect(removed).toEqual([
      { domid: 10, removed: [other.socket] },
      { domid: 7, removed: [dead.socket, dead.link] },
    ]);
    expect(existsSync(dead.socket) || existsSync(join(stateDir, 'xs-proxy', 'dm-7.json'))).toBe(
      false,
    );
    expect(() => lstatSync(dead.link)).toThrow();
    expect(lstatSync(other.link).isSymbolicLink()).toBe(true);
    for (const x of [live, kept]) {
      expect(lstatSync(x.socket).isSocket()).toBe(true);
      expect(lstatSync(x.link).isSymbolicLink()).toBe(true);
    }
    expect(readdirSync(join(stateDir, 'xs-proxy')).sort()).toEqual([
      'dm-8.json',
      'dm-8.sock',
      'dm-9.json',
      'dm-9.sock',
    ]);
    // Nothing more to do the second time.
    expect(cleanDmLeftovers(stateDir, new Set([9]))).toEqual([]);
  });

  it('is a no-op on a state directory without xen-depriv-dm', () => {
    expect(cleanDmLeftovers(join(dir, 'nothing'), new Set())).toEqual([]);
  });
});
