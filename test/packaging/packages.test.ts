import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { publint } from 'publint';
import { formatMessage } from 'publint/utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packWorkspaces, repoRoot, workspaceClosure, workspacePackages } from './workspace.js';

const run = promisify(execFile);
const all = workspacePackages();
const publishable = all.filter((p) => !p.private);
const bin = (tool: string) => join(repoRoot, 'node_modules', '.bin', tool);

let work: string;
let tarballs = new Map<string, string>();

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'xen-depriv-pack-'));
  mkdirSync(join(work, 'tarballs'));
  tarballs = await packWorkspaces(publishable, join(work, 'tarballs'));
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('workspace packages', () => {
  it('the scripts and package graph are what ARCHITECTURE.md says', () => {
    expect(all.map((p) => p.name)).toEqual([
      '@xen-depriv/depriv-launcher',
      '@xen-depriv/dmop-abi',
      '@xen-depriv/memmap',
      '@xen-depriv/privcmd-filter',
      '@xen-depriv/qemu-launcher',
      '@xen-depriv/sys',
      '@xen-depriv/uid-allocator',
      '@xen-depriv/xs-restrict',
    ]);
    for (const p of all) {
      for (const [dep, range] of Object.entries(p.dependencies)) {
        const target = all.find((q) => q.name === dep);
        if (target) expect(range, `${p.name} -> ${dep}`).toBe(`^${target.version}`);
      }
    }
  });
});

describe.each(publishable.map((p) => [p.name, p] as const))('%s', (name, pkg) => {
  it('publint reports no error or warning', async () => {
    const { messages, pkg: manifest } = await publint({
      pkgDir: pkg.dir,
      level: 'warning',
      strict: true,
    });
    const text = messages.map((m) => `${m.type}: ${formatMessage(m, manifest) ?? m.code}`);
    expect(text).toEqual([]);
  });

  // A package of bins only (the reference app) has nothing to import: global-install.test.ts
  // installs and runs it instead.
  const binsOnly = 'bins only, nothing to import: global-install.test.ts installs and runs it';

  it('are-the-types-wrong finds no problem', async (ctx) => {
    if (!pkg.library) ctx.skip(binsOnly);
    const tarball = tarballs.get(name);
    expect(tarball).toBeDefined();
    const result = await run(bin('attw'), [tarball as string, '--format', 'ascii'], {
      cwd: repoRoot,
    }).catch((err: { stdout: string; stderr: string }) => ({ ...err, failed: true }));
    expect('failed' in result ? `${result.stdout}${result.stderr}` : '').toBe('');
  });

  it('installs alone from its tarball and loads from ESM and CJS', async (ctx) => {
    if (!pkg.library) ctx.skip(binsOnly);
    const project = join(work, `consumer-${name.replace('@xen-depriv/', '')}`);
    mkdirSync(project);
    const closure = workspaceClosure(name, all);
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({
        name: 'consumer',
        private: true,
        dependencies: Object.fromEntries(closure.map((n) => [n, `file:${tarballs.get(n)}`])),
        allowScripts: { '@xen-depriv/sys': true },
      }),
    );
    await run(
      'npm',
      ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'],
      {
        cwd: project,
        maxBuffer: 64 << 20,
      },
    );
    const installed = JSON.parse(
      readFileSync(join(project, 'node_modules', ...name.split('/'), 'package.json'), 'utf8'),
    ) as { name: string };
    expect(installed.name).toBe(name);

    const esm = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const m = await import('${name}'); console.log(JSON.stringify(Object.keys(m).sort()));`,
      ],
      { cwd: project },
    );
    const cjs = await run(
      process.execPath,
      ['-e', `console.log(JSON.stringify(Object.keys(require('${name}')).sort()))`],
      { cwd: project },
    );
    const esmKeys = JSON.parse(esm.stdout) as string[];
    expect(esmKeys.length).toBeGreaterThan(0);
    expect(JSON.parse(cjs.stdout)).toEqual(esmKeys.filter((k) => k !== 'default'));
  });
});
