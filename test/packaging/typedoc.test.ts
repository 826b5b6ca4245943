import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { workspacePackages } from './workspace.js';

type Exports = Record<string, string | { import?: { types?: string } }>;

describe('the API reference covers every export', () => {
  const libraries = workspacePackages().filter((p) => p.library);
  it.each(libraries.map((p) => [p.name, p.dir]))(
    '%s: typedoc entry points = its exports',
    (_name, dir) => {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        exports: Exports;
      };
      const fromExports = Object.entries(pkg.exports)
        .filter(([k]) => k !== './package.json')
        .map(([, v]) => {
          const types = typeof v === 'string' ? v : (v.import?.types ?? '');
          return `src/${basename(types).replace(/\.d\.ts$/, '')}.ts`;
        });
      const typedoc = JSON.parse(readFileSync(join(dir, 'typedoc.json'), 'utf8')) as {
        entryPoints: string[];
      };
      expect(typedoc.entryPoints).toEqual(fromExports);
      for (const e of fromExports) expect(existsSync(join(dir, e)), e).toBe(true);
    },
  );
});
