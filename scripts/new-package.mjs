#!/usr/bin/env node
// Scaffolds a workspace package with the layout every package shares:
//   node scripts/new-package.mjs <dir> "<description>" [dep ...]
// e.g. node scripts/new-package.mjs packages/foo "What foo is for" @xen-depriv/sys
// It writes package.json, tsconfig.json, tsup.config.ts, README.md, LICENSE, src/index.ts
// and a first test; it never overwrites a file that exists.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';

const [dir, description, ...deps] = process.argv.slice(2);
if (!dir || !description) {
  console.error(
    'usage: node scripts/new-package.mjs <packages/NAME|apps/NAME> "<description>" [dep ...]',
  );
  process.exit(2);
}
const root = new URL('..', import.meta.url).pathname;
const abs = join(root, dir);
const short = basename(dir);
const isApp = dir.startsWith('apps/');
const name = isApp ? short : `@xen-depriv/${short}`;
const version = '0.1.0';

const write = (file, text) => {
  const path = join(abs, file);
  if (existsSync(path)) return;
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  console.log(`wrote ${relative(root, path)}`);
};

const dependencies = Object.fromEntries(deps.map((d) => [d, `^${version}`]));
const pkg = {
  name,
  version,
  description,
  license: 'MIT',
  type: 'module',
  repository: {
    type: 'git',
    url: 'git+https://github.com/xen-depriv/xen-depriv.git',
    directory: dir,
  },
  engines: { node: '>=20' },
  ...(isApp
    ? { private: true }
    : {
        sideEffects: false,
        main: './dist/index.cjs',
        module: './dist/index.js',
        types: './dist/index.d.cts',
        exports: {
          '.': {
            import: { types: './dist/index.d.ts', default: './dist/index.js' },
            require: { types: './dist/index.d.cts', default: './dist/index.cjs' },
          },
          './package.json': './package.json',
        },
        files: ['dist', 'README.md', 'LICENSE', 'CHANGELOG.md'],
        publishConfig: { access: 'public' },
      }),
  scripts: {
    build: 'tsup',
    typecheck: 'tsc --noEmit',
    lint: 'biome check src test',
    test: 'vitest run',
  },
  ...(deps.length ? { dependencies } : {}),
};
write('package.json', `${JSON.stringify(pkg, null, 2)}\n`);
write(
  'tsconfig.json',
  `${JSON.stringify({ extends: '../../tsconfig.base.json', include: ['src', 'test', 'tsup.config.ts'] }, null, 2)}\n`,
);
write(
  'tsup.config.ts',
  isApp
    ? `import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { cli: 'src/cli.ts', index: 'src/index.ts' },
  format: ['esm'],
  target: 'node20',
  platform: 'node',
  dts: false,
  sourcemap: true,
  clean: true,
});
`
    : `import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  target: 'node20',
  platform: 'node',
  dts: true,
  sourcemap: true,
  clean: true,
});
`,
);
write('LICENSE', readFileSync(join(root, 'LICENSE'), 'utf8'));
write(
  'README.md',
  `# ${name}

${description}

${isApp ? 'Part of the xen-depriv monorepo (private, not published).' : `\`\`\`sh\nnpm install ${name}\n\`\`\``}

Status: skeleton. The API is documented here, export by export, as it lands.
`,
);
write(
  'src/index.ts',
  `export { PACKAGE_NAME } from './package-name.js';
`,
);
write(
  'src/package-name.ts',
  `/** The npm name of this package, for diagnostics and user agents. */
export const PACKAGE_NAME = '${name}';
`,
);
write(
  'test/package-name.test.ts',
  `import { describe, expect, it } from 'vitest';
import { PACKAGE_NAME } from '../src/index.js';

describe('${name}', () => {
  it('names itself', () => {
    expect(PACKAGE_NAME).toBe('${name}');
  });
});
`,
);
if (isApp) {
  write(
    'src/cli.ts',
    `#!/usr/bin/env node
import { PACKAGE_NAME } from './package-name.js';

console.log(PACKAGE_NAME);
`,
  );
}
