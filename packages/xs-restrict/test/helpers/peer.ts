import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
export const PEER_SH = path.resolve(repoRoot, '../shared/tools/xenstored-peer/peer.sh');

function has(cmd: string, args: string[]): boolean {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}

/** Why the real C xenstored cannot run here, or undefined when it can. */
export function peerMissing(): string | undefined {
  if (!existsSync(PEER_SH)) return `${PEER_SH} not found`;
  if (!has('dpkg', ['-s', 'xen-utils-4.17'])) return 'xen-utils-4.17 is not installed';
  if (!has('gcc', ['--version'])) return 'gcc is not installed';
  if (!has('python3', ['--version'])) return 'python3 is not installed';
  return undefined;
}

export interface Peer {
  dir: string;
  dom0: string;
  dom: (domid: number) => string;
  stop: () => void;
}

/** Start a fresh C xenstored (Xen 4.17) with `doms` bridged and introduced, in a short temp dir. */
export function startPeer(doms: readonly number[] = [1, 2]): Peer {
  const dir = mkdtempSync('/tmp/xsp-');
  const stop = (): void => {
    spawnSync(PEER_SH, ['stop', dir], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    execFileSync(PEER_SH, ['start', dir], {
      stdio: 'pipe',
      env: { ...process.env, XS_DOMS: doms.join(' ') },
    });
  } catch (e) {
    stop();
    throw e;
  }
  return { dir, dom0: `${dir}/socket`, dom: (d) => `${dir}/dom${d}.sock`, stop };
}

/** The dpkg path of a binary of xen-utils-4.17, or undefined. */
export function xenUtilsBinary(name: string): string | undefined {
  const r = spawnSync('dpkg', ['-L', 'xen-utils-4.17'], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return r.stdout.split('\n').find((l) => l.endsWith(`/bin/${name}`));
}
