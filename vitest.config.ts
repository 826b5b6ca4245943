import { defineConfig } from 'vitest/config';

// One root config; every workspace package is a project of its own (named after its
// package.json), plus the repository-level packaging checks.
export default defineConfig({
  test: {
    projects: ['packages/*', 'apps/*', 'test/packaging'],
  },
});
