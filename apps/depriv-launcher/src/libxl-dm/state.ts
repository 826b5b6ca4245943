// What a state directory holds beside qemu-launcher's records and the uid leases: the launcher
// config (`xen-depriv.json`, read back by `destroy`/`check`/`recover`) and, for xen-depriv-dm,
// the files of its own that no launch record knows (proxy socket, QMP symlinks). No zod here:
// xen-depriv-dm imports this at start-up.
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { posix } from 'node:path';
import { identityOf, isAlive, type ProcessIdentity } from '@xen-depriv/uid-allocator';
import type { LaunchConfig } from '../config.js';

export const LAUNCHER_FILE = 'xen-depriv.json';

/**
 * The config a state directory was launched with, saved beside its records: `destroy`, `check`
 * and `recover` need the uid scheme again (the allocator checks a lease against it). Written
 * whole or not at all (temp file, rename): several xen-depriv-dm may start at once.
 */
export function saveLauncherConfig(config: LaunchConfig): void {
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  const path = posix.join(config.stateDir, LAUNCHER_FILE);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(config)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

/**
 * The launcher config of xen-depriv-dm's state directory: its uid pool as a `pool` scheme (the
 * reaper uid is first + count on both sides), so `xen-depriv recover --state-dir DIR` checks
 * and reclaims its leases. `domid` is the last DM started from it; recover ignores it.
 */
export function dmLauncherConfig(
  s: { stateDir: string; qemu: string; poolFirst: number; poolCount: number },
  domid: number,
): LaunchConfig {
  return {
    domid,
    mode: 'jail',
    target: 'dom0',
    qemu: { binary: s.qemu, machine: 'none', args: [] },
    user: { scheme: 'pool', first: s.poolFirst, count: s.poolCount },
    stateDir: s.stateDir,
  };
}

/**
 * What a xen-depriv-dm creates that qemu-launcher's records do not cover: the proxy socket and
 * the QMP symlinks (`/var/run/xen/qmp-libxenstat-N`). Written before either exists, removed by
 * its own teardown; left behind only by a launcher that died (SIGKILL, OOM).
 */
export interface DmLeftovers {
  readonly domid: number;
  readonly launcher: ProcessIdentity;
  readonly socket: string;
  readonly links: readonly string[];
}

const leftoversDir = (stateDir: string) => posix.join(stateDir, 'xs-proxy');
const leftoversPath = (stateDir: string, domid: number) =>
  posix.join(leftoversDir(stateDir), `dm-${domid}.json`);

export function writeDmLeftovers(
  stateDir: string,
  d: { domid: number; socket: string; links: readonly string[] },
): void {
  const launcher = identityOf(process.pid);
  if (!launcher) throw new Error(`no /proc entry for the launcher (pid ${process.pid})`);
  mkdirSync(leftoversDir(stateDir), { recursive: true, mode: 0o711 });
  const path = leftoversPath(stateDir, d.domid);
  writeFileSync(`${path}.tmp`, `${JSON.stringify({ ...d, launcher })}\n`, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

export function removeDmLeftoversFile(stateDir: string, domid: number): void {
  rmSync(leftoversPath(stateDir, domid), { force: true });
}

/**
 * Part of `xen-depriv recover`: removes what dead xen-depriv-dm launchers left, except for the
 * domains in `keep` (their QEMU still runs: libxl may still use the QMP symlink). A launcher
 * that still runs is never touched. Removes only the proxy socket under `stateDir/xs-proxy` and
 * symlinks that point into that domain's jail (`stateDir/dm-N/`), so a link libxl or a newer
 * DM made since stays. Returns what was removed, by domain.
 */
export function cleanDmLeftovers(
  stateDir: string,
  keep: ReadonlySet<number>,
): { domid: number; removed: string[] }[] {
  let names: string[];
  try {
    names = readdirSync(leftoversDir(stateDir));
  } catch {
    return [];
  }
  const out: { domid: number; removed: string[] }[] = [];
  for (const name of names.filter((n) => /^dm-[0-9]+\.json$/.test(n)).sort()) {
    const file = posix.join(leftoversDir(stateDir), name);
    let d: DmLeftovers;
    try {
      d = JSON.parse(readFileSync(file, 'utf8')) as DmLeftovers;
    } catch {
      continue;
    }
    if (keep.has(d.domid) || isAlive(d.launcher)) continue;
    const removed: string[] = [];
    const rmIf = (path: string, ok: () => boolean) => {
      try {
        if (!ok()) return;
        unlinkSync(path);
        removed.push(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    };
    const socket = posix.join(leftoversDir(stateDir), `dm-${d.domid}.sock`);
    if (d.socket === socket) rmIf(socket, () => lstatSync(socket).isSocket());
    const jail = `${posix.join(stateDir, `dm-${d.domid}`)}/`;
    for (const link of d.links) {
      rmIf(link, () => lstatSync(link).isSymbolicLink() && readlinkSync(link).startsWith(jail));
    }
    rmSync(file, { force: true });
    out.push({ domid: d.domid, removed });
  }
  return out;
}
