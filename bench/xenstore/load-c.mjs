// load.c, the xenstore load client in C, for run.mjs and profile.mjs: built once, run per case.
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const source = path.join(path.dirname(fileURLToPath(import.meta.url)), 'load.c');

/** Builds load.c into `dir` with cc -O2; its path, or an Error if there is no compiler. */
export function buildLoadC(dir) {
  const bin = path.join(dir, 'load-c');
  execFileSync('cc', ['-O2', '-o', bin, source]);
  return bin;
}

/**
 * One run of the load client: write+read pairs per second on `nClients` connections to `sock`,
 * `depth` pairs in flight on each, for `seconds`. The child is pushed to `children` (the caller
 * ends what is left of them on exit).
 */
export function runLoadC(bin, sock, nClients, depth, seconds, children) {
  return new Promise((resolve, reject) => {
    const c = spawn(bin, [sock, String(nClients), String(depth), String(seconds)]);
    children.push(c);
    let out = '';
    c.stdout.on('data', (d) => {
      out += d;
    });
    c.once('exit', (code) =>
      code === 0 ? resolve(Number(out)) : reject(new Error(`load.c on ${sock} exited ${code}`)),
    );
  });
}
