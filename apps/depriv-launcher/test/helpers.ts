import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const cliPath = join(import.meta.dirname, '..', 'dist', 'cli.js');

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `xen-depriv` as a subprocess, colours off, fixed 80 columns. */
export function runCli(args: readonly string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', COLUMNS: '80', ...env },
    maxBuffer: 16 << 20,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs the built `xen-depriv` as another (non-root) uid from wherever this checkout is, even
 * under a directory that uid cannot traverse (a clone in /root, or in a `mktemp -d`): in a
 * private mount namespace, a fresh 0755 tmpfs gets the checkout's `apps`, `packages` and
 * `node_modules` bound into it, and the CLI runs from there after setpriv drops to the uid.
 * Needs root (unshare, mount, setpriv from util-linux).
 */
export function runCliAs(
  uid: number,
  args: readonly string[],
  env: Record<string, string> = {},
): CliResult {
  const repo = join(import.meta.dirname, '..', '..', '..');
  const script = [
    'set -e',
    'mount -t tmpfs -o mode=0755,size=1m xd-checkout "$2"',
    'for d in apps packages node_modules; do mkdir "$2/$d"; mount --bind "$1/$d" "$2/$d"; done',
    'touch "$2/package.json"; mount --bind "$1/package.json" "$2/package.json"',
    'uid=$3; node=$4; shift 4',
    'exec setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$node" "$MNT/apps/depriv-launcher/dist/cli.js" "$@"',
  ].join('\n');
  const mnt = mkdtempSync(join('/tmp', 'xd-checkout-'));
  try {
    const r = spawnSync(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        '/bin/sh',
        '-c',
        script,
        'xd',
        repo,
        mnt,
        String(uid),
        process.execPath,
        ...args,
      ],
      {
        encoding: 'utf8',
        env: {
          PATH: process.env.PATH ?? '',
          NO_COLOR: '1',
          COLUMNS: '80',
          MNT: mnt,
          ...env,
        },
        cwd: '/',
        maxBuffer: 16 << 20,
      },
    );
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  } finally {
    rmSync(mnt, { recursive: true, force: true });
  }
}
