import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'packaging',
    include: ['*.test.ts'],
    // npm pack + npm install of every package: slow by nature, bounded by npm itself.
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
