// Lease acquire+release throughput with 1 and with 8 launcher processes on one state
// directory (tmpfs, as /run), and the full acceptance run: 8 processes x CYCLES cycles with
// the independent observer, no uid held twice, final state empty. Run as root from the
// repository root after building packages/sys and packages/uid-allocator:
//   node bench/uid-allocator/leases.mjs [cycles per process in the 8-process run = 1000]
// The 1-process run is the baseline, measured in the same run.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const cycles = Number(process.argv[2] ?? 1000);
const fixtures = new URL('../../packages/uid-allocator/test/fixtures/', import.meta.url).pathname;

async function round(workers, perWorker) {
  const dir = mkdtempSync('/dev/shm/uid-allocator-bench-');
  try {
    const markers = join(dir, 'markers');
    mkdirSync(markers);
    mkdirSync(join(dir, 'leases'));
    const stop = join(dir, 'stop');
    const env = {
      ...process.env,
      STATE_DIR: dir,
      FIRST: '3102100',
      COUNT: '6',
      CYCLES: String(perWorker),
      MARKERS: markers,
      STOP: stop,
      MODE: 'cycles',
    };
    const observer = run(process.execPath, [join(fixtures, 'observer.mjs')], { env });
    const t = process.hrtime.bigint();
    const outs = await Promise.all(
      Array.from({ length: workers }, () =>
        run(process.execPath, [join(fixtures, 'worker.mjs')], { env }),
      ),
    );
    const s = Number(process.hrtime.bigint() - t) / 1e9;
    writeFileSync(stop, '');
    const seen = JSON.parse((await observer).stdout);
    const results = outs.map((o) => JSON.parse(o.stdout));
    const violations = results.reduce((n, r) => n + r.violations, 0) + seen.violations.length;
    const left = readdirSync(join(dir, 'leases')).length;
    // Throughput over the workers' own timing, so node start-up is not counted.
    const busy = Math.max(...results.map((r) => r.ms)) / 1000;
    const ops = (workers * perWorker) / busy;
    console.log(
      `${workers} process(es) x ${perWorker} cycles: ${s.toFixed(1)} s (${busy.toFixed(1)} s cycling), ${ops.toFixed(0)} acquire+release/s, ` +
        `double holds ${violations}, observer checks ${seen.markersChecked}, records left ${left}`,
    );
    if (violations !== 0 || left !== 0) process.exitCode = 1;
    return ops;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const one = await round(1, Math.min(cycles, 500));
const eight = await round(8, cycles);
console.log(`ratio 8 processes / 1 process (aggregate ops/s): ${(eight / one).toFixed(2)}`);
