// The package's install script: node-gyp-build loads a matching prebuild or build/Release,
// and otherwise compiles from source with node-gyp, against local Node headers when present.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { envForGyp, nodeGypPath } from './build.mjs';

const require = createRequire(import.meta.url);
const bin = join(dirname(require.resolve('node-gyp-build/package.json')), 'bin.js');
const env = envForGyp();
env.npm_config_node_gyp ??= nodeGypPath();
// node-gyp-build runs `node-gyp` from PATH; npm puts its bundled copy there during install,
// a direct `node native/install.mjs` needs it added.
const gypBin = join(
  dirname(process.execPath),
  '..',
  'lib',
  'node_modules',
  'npm',
  'bin',
  'node-gyp-bin',
);
if (existsSync(gypBin)) env.PATH = `${env.PATH ?? ''}${delimiter}${gypBin}`;
const r = spawnSync(process.execPath, [bin], {
  cwd: join(dirname(fileURLToPath(import.meta.url)), '..'),
  env,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
