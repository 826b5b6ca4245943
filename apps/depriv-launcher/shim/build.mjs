// Builds the libxl shim, shim/xen-depriv-dm.c, into dist/xen-depriv-dm (mode 0755). Runs after
// tsup in the package's build (tsup cleans dist/). The compiler is $CC, else cc, else gcc.
// Usage: node shim/build.mjs [--out PATH]
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'xen-depriv-dm.c');
const outArg = process.argv.indexOf('--out');
const out =
  outArg > 0 ? resolve(process.argv[outArg + 1] ?? '') : join(here, '..', 'dist', 'xen-depriv-dm');

// -Os: the shim waits for the whole life of a guest; small text keeps its RSS down.
// The package's version is what `xen-depriv-dm --version` prints.
const { version } = JSON.parse(readFileSync(join(here, '..', 'package.json'), 'utf8'));
const CFLAGS = [
  '-std=gnu11',
  '-Os',
  '-Wall',
  '-Wextra',
  '-D_FORTIFY_SOURCE=2',
  `-DXEN_DEPRIV_VERSION="${version}"`,
];

const candidates = process.env.CC ? [process.env.CC] : ['cc', 'gcc'];
const cc = candidates.find((c) => spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0);
if (!cc) {
  console.error(
    `shim/build.mjs: no C compiler (tried ${candidates.join(', ')}): install gcc (or set CC) ` +
      'to build dist/xen-depriv-dm, the libxl device_model_override shim',
  );
  process.exit(1);
}

mkdirSync(dirname(out), { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
const r = spawnSync(cc, [...CFLAGS, '-o', tmp, src], { stdio: 'inherit' });
if (r.status !== 0) {
  rmSync(tmp, { force: true });
  console.error(`shim/build.mjs: ${cc} failed to compile ${src}`);
  process.exit(1);
}
chmodSync(tmp, 0o755);
renameSync(tmp, out);
