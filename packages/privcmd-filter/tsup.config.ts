import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/seccomp-entry.ts'],
  format: ['esm', 'cjs'],
  target: 'node20',
  platform: 'node',
  dts: true,
  sourcemap: true,
  clean: true,
});
