import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    cli: 'src/cli.ts',
    deprivd: 'src/deprivd.ts',
    'host-worker': 'src/service/host-worker.ts',
    index: 'src/index.ts',
    // The command trees, unparsed: scripts/gen-man.mjs makes the man pages and completion of them.
    program: 'src/program.ts',
    'deprivd-program': 'src/service/deprivd-program.ts',
  },
  format: ['esm'],
  target: 'node20',
  platform: 'node',
  dts: false,
  sourcemap: true,
  clean: true,
});
