import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const repoRoot = join(import.meta.dirname, '..', '..');

export interface WorkspacePackage {
  readonly name: string;
  readonly version: string;
  readonly dir: string;
  readonly private: boolean;
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
      };
      out.push({
        name: pkg.name,
        version: pkg.version,
        dir,
        private: pkg.private === true,
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
