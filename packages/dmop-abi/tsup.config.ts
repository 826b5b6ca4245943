import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/sim.ts', 'src/fields.ts', 'src/layout.ts'],
  format: ['esm', 'cjs'],
  target: 'node20',
  platform: 'node',
  dts: true,
  sourcemap: true,
  clean: true,
});
