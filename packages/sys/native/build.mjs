// Compiles the addon: node-gyp (via prebuildify --napi --strip) into build/Release and
// prebuilds/<platform>-<arch>/, the two places node-gyp-build loads from. Offline machines
// with Node's headers installed (Debian's nodejs-dev: /usr/include/node) build against them
// instead of downloading a header tarball.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function localNodedir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  for (const dir of [join(dirname(process.execPath), '..'), '/usr']) {
    const header = join(dir, 'include', 'node', 'node_version.h');
    if (!existsSync(join(dir, 'include', 'node', 'common.gypi')) || !existsSync(header)) continue;
    const text = readFileSync(header, 'utf8');
    const v = ['MAJOR', 'MINOR', 'PATCH'].map(
      (k) => text.match(new RegExp(`define NODE_${k}_VERSION (\\d+)`))?.[1],
    );
    if (`v${v.join('.')}` === process.version) return dir;
  }
  return undefined;
}

export function nodeGypPath() {
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  // npm bundles node-gyp; this is the copy `npm install` itself would run.
  const npmDir = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm');
  const bundled = join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  return existsSync(bundled) ? bundled : 'node-gyp';
}

export function envForGyp() {
  const env = { ...process.env };
  const nodedir = localNodedir();
  if (nodedir) env.npm_config_nodedir = nodedir;
  return env;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '..');
  const require = createRequire(import.meta.url);
  const prebuildify = join(dirname(require.resolve('prebuildify/package.json')), 'bin.js');
  const gyp = nodeGypPath();
  const env = { ...envForGyp(), PREBUILD_NODE_GYP: gyp };
  const r = spawnSync(process.execPath, [prebuildify, '--napi', '--strip'], {
    cwd: pkgDir,
    env,
    stdio: 'inherit',
  });
  process.exit(r.status ?? 1);
}
