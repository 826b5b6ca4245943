import { execFile, spawnSync } from 'node:child_process';
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packWorkspaces, workspaceClosure, workspacePackages } from './workspace.js';

// What an operator does: `npm install -g` of the reference app. Its package and the
// workspace packages it needs are packed, then installed globally into an empty prefix
// (`npm install -g --prefix`), @xen-depriv/* from these tarballs (not the registry), the
// rest from npm's cache or the registry. The bins run from the prefix, out of the checkout.
const run = promisify(execFile);
const APP = '@xen-depriv/depriv-launcher';
const all = workspacePackages();
const app = all.find((p) => p.name === APP);
const closure = workspaceClosure(APP, all);
const QEMU = '/usr/bin/qemu-system-x86_64';

let work: string;
let prefix: string;
let tarballs = new Map<string, string>();
/** The environment of the installed bins: nothing of the checkout or of other runs leaks in. */
let env: NodeJS.ProcessEnv;

const bin = (name: string) => join(prefix, 'bin', name);
const installed = (...parts: string[]) => join(prefix, 'lib', 'node_modules', ...parts);
const has = (tool: string) => spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'xen-depriv-global-'));
  prefix = join(work, 'prefix');
  mkdirSync(join(work, 'tarballs'));
  mkdirSync(join(work, 'cwd'));
  tarballs = await packWorkspaces(
    all.filter((p) => closure.includes(p.name)),
    join(work, 'tarballs'),
  );
  const sys = tarballs.get('@xen-depriv/sys');
  await run(
    'npm',
    [
      'install',
      '--global',
      '--prefix',
      prefix,
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      '--loglevel=error',
      // The addon's install script (it finds the prebuild); a tarball is allowed by its path.
      ...(sys ? [`--allow-scripts=${sys}`] : []),
      ...closure.map((n) => tarballs.get(n) as string),
    ],
    { cwd: join(work, 'cwd'), maxBuffer: 64 << 20 },
  );
  env = { ...process.env, NO_COLOR: '1' };
  for (const key of Object.keys(env)) {
    if (key.startsWith('XEN_DEPRIV') || key === 'NODE_PATH' || key === 'NODE_OPTIONS') {
      delete env[key];
    }
  }
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe(`${APP}: npm install -g into an empty prefix`, () => {
  it('is published (not private) with its workspace dependencies, each from its tarball', () => {
    expect(app?.private).toBe(false);
    expect([...tarballs.keys()].sort()).toEqual(closure);
    // Side by side in the global tree, the app resolving them there: none came from elsewhere.
    for (const name of closure) {
      const manifest = JSON.parse(
        readFileSync(installed(...name.split('/'), 'package.json'), 'utf8'),
      ) as { version: string };
      expect(manifest.version, name).toBe(all.find((p) => p.name === name)?.version);
    }
    expect(existsSync(installed(...APP.split('/'), 'node_modules', '@xen-depriv'))).toBe(false);
  });

  it('the tarball holds dist (with the C shim binary and the host worker), man pages, completion, systemd units, logrotate, openrpc.json, README and LICENSE', async () => {
    const tarball = tarballs.get(APP) as string;
    const { stdout } = await run('tar', ['-tzf', tarball], { maxBuffer: 16 << 20 });
    const entries = stdout.split('\n').filter(Boolean);
    expect(entries).toEqual(
      expect.arrayContaining([
        'package/package.json',
        'package/README.md',
        'package/LICENSE',
        'package/openrpc.json',
        'package/dist/cli.js',
        'package/dist/deprivd.js',
        'package/dist/host-worker.js',
        'package/dist/xen-depriv-dm',
        'package/shim/xen-depriv-dm.c',
        'package/man/xen-depriv.1',
        'package/man/xen-deprivd.8',
        'package/man/xen-depriv-dm.8',
        'package/completion/xen-depriv.bash',
        'package/systemd/xen-deprivd.service',
        'package/logrotate/xen-depriv',
      ]),
    );
    expect(entries.filter((e) => /^package\/(src|test)\//.test(e))).toEqual([]);
  });

  it('gives the bins xen-depriv, xen-deprivd and xen-depriv-dm, the man pages and the addon prebuild', () => {
    for (const name of ['xen-depriv', 'xen-deprivd', 'xen-depriv-dm']) {
      accessSync(bin(name), constants.X_OK);
    }
    for (const page of ['man1/xen-depriv.1', 'man8/xen-deprivd.8', 'man8/xen-depriv-dm.8']) {
      expect(existsSync(join(prefix, 'share', 'man', page)), page).toBe(true);
    }
    expect(
      existsSync(
        installed(
          '@xen-depriv',
          'sys',
          'prebuilds',
          `${process.platform}-${process.arch}`,
          '@xen-depriv+sys.node',
        ),
      ),
    ).toBe(true);
  });

  it('xen-depriv --version prints the package version', () => {
    const r = spawnSync(bin('xen-depriv'), ['--version'], { encoding: 'utf8', env });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${app?.version}\n`);
  });

  it('xen-deprivd --help prints its usage', () => {
    const r = spawnSync(bin('xen-deprivd'), ['--help'], { encoding: 'utf8', env });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: xen-deprivd \[options\]\n/);
    expect(r.stdout).toContain('--socket <path>');
  });

  it('xen-depriv-dm: --version, and without a service exit 1 with exactly one line', () => {
    const v = spawnSync(bin('xen-depriv-dm'), ['--version'], { encoding: 'utf8', env });
    expect(v.stdout).toBe(`xen-depriv-dm ${app?.version}\n`);
    expect(v.status).toBe(0);
    const socket = join(work, 'no-such-dir', 'xen-deprivd.sock');
    const r = spawnSync(bin('xen-depriv-dm'), ['-xen-domid', '1', '-M', 'xenfv'], {
      encoding: 'utf8',
      env: { ...env, XEN_DEPRIVD_SOCKET: socket },
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      `xen-depriv-dm: cannot reach xen-deprivd at ${socket}: No such file or directory\n`,
    );
  });

  it('man xen-depriv renders from the installed package (MANPATH=<prefix>/share/man, and man -l)', (ctx) => {
    if (!has('man')) ctx.skip('no man (apt-get install man-db; scripts/setup-system.sh)');
    const manEnv = { ...env, MANPATH: join(prefix, 'share', 'man'), MANWIDTH: '80', PAGER: 'cat' };
    for (const args of [
      ['xen-depriv'],
      ['8', 'xen-deprivd'],
      ['8', 'xen-depriv-dm'],
      ['-l', join(prefix, 'share', 'man', 'man1', 'xen-depriv.1')],
    ]) {
      const r = spawnSync('man', args, { encoding: 'utf8', env: manEnv });
      expect(r.stderr, args.join(' ')).toBe('');
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/^NAME\n {7}xen-depriv(d|-dm)? - /m);
    }
  });

  it('xen-depriv demo runs from the prefix (root, with /usr/bin/qemu-system-x86_64)', (ctx) => {
    if (process.geteuid?.() !== 0) ctx.skip('xen-depriv demo needs root (uids, namespaces)');
    if (!existsSync(QEMU)) {
      ctx.skip(`no ${QEMU} (apt-get install qemu-system-x86; scripts/setup-system.sh)`);
    }
    const r = spawnSync(bin('xen-depriv'), ['demo'], {
      encoding: 'utf8',
      env,
      cwd: join(work, 'cwd'),
      timeout: 240_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/5\. teardown\s+ok/);
  }, 300_000);
});
