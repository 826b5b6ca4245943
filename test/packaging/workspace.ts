import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

export const repoRoot = join(import.meta.dirname, '..', '..');

export interface WorkspacePackage {
  readonly name: string;
  readonly version: string;
  readonly dir: string;
  readonly private: boolean;
  /** Has an entry point to import (exports or main); false for a package of bins only. */
  readonly library: boolean;
  readonly dependencies: Readonly<Record<string, string>>;
}

/** Every workspace package (packages/* and apps/*), read from its package.json. */
export function workspacePackages(): WorkspacePackage[] {
  const out: WorkspacePackage[] = [];
  for (const group of ['packages', 'apps']) {
    for (const entry of readdirSync(join(repoRoot, group), { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const dir = join(repoRoot, group, entry.name);
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name: string;
        version: string;
        private?: boolean;
        dependencies?: Record<string, string>;
        exports?: unknown;
        main?: string;
      };
      out.push({
        name: pkg.name,
        version: pkg.version,
        dir,
        private: pkg.private === true,
        library: pkg.exports !== undefined || pkg.main !== undefined,
        dependencies: pkg.dependencies ?? {},
      });
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** The workspace packages `name` needs at run time, itself included, transitively. */
export function workspaceClosure(name: string, all: readonly WorkspacePackage[]): string[] {
  const byName = new Map(all.map((p) => [p.name, p]));
  const seen = new Set<string>();
  const visit = (n: string): void => {
    if (seen.has(n)) return;
    const pkg = byName.get(n);
    if (!pkg) return;
    seen.add(n);
    for (const dep of Object.keys(pkg.dependencies)) visit(dep);
  };
  visit(name);
  return [...seen].sort();
}

/**
 * Packs the workspace packages into dest with one `npm pack` (it prints the tarball names as
 * JSON, in order); returns package name → tarball path.
 */
export async function packWorkspaces(
  pkgs: readonly WorkspacePackage[],
  dest: string,
): Promise<Map<string, string>> {
  const { stdout } = await promisify(execFile)(
    'npm',
    ['pack', '--json', '--pack-destination', dest, ...pkgs.flatMap((p) => ['-w', p.dir])],
    { cwd: repoRoot, maxBuffer: 64 << 20 },
  );
  const tarballs = new Map<string, string>();
  for (const entry of JSON.parse(stdout) as { name: string; filename: string }[]) {
    tarballs.set(entry.name, join(dest, entry.filename));
  }
  return tarballs;
}
