import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidsOfUid } from '@xen-depriv/qemu-launcher';
import { Presets, SingleBar } from 'cli-progress';
import pLimit from 'p-limit';
import { validateConfig } from '../config.js';
import { CliError, EXIT_FAILED, EXIT_USAGE } from '../errors.js';
import { color, histogram, percentile, processOutput, table } from '../output.js';
import { requireRoot } from '../runtime.js';
import { defaultSettings } from '../service/engine.js';
import { openEngine, requestOf } from '../service/local.js';
import type { RegisterCommand } from './index.js';

const positive = (name: string, max: number) => (text: string) => {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || n < 1 || n > max) {
    throw new CliError(`${name}: expected an integer 1..${max}, saw ${JSON.stringify(text)}`, {
      exitCode: EXIT_USAGE,
    });
  }
  return n;
};

/** `[#####.....] 12/16 ready, 0 failed`, fitted to `width`. */
export function progressBar(done: number, failed: number, total: number, width: number): string {
  const tail = ` ${done + failed}/${total} done, ${failed} failed`;
  const inner = Math.max(1, Math.min(40, width - tail.length - 2));
  const filled = Math.round(((done + failed) / total) * inner);
  return `[${'#'.repeat(filled)}${'.'.repeat(inner - filled)}]${tail}`;
}

export const registerStorm: RegisterCommand = (program, globals) => {
  program
    .command('storm')
    .description('a boot storm: launch N confined device models, C at a time, then destroy them')
    .requiredOption('--count <n>', 'device models to launch', positive('--count', 1024))
    .option('--concurrency <c>', 'launches in flight at once', positive('--concurrency', 256), 4)
    .option('--qemu <binary>', 'the QEMU to launch', '/usr/bin/qemu-system-x86_64')
    .option('--uid-base <uid>', 'first uid of the pool (its reaper is base + count)', '3400000')
    .action(async (opts: { count: number; concurrency: number; qemu: string; uidBase: string }) => {
      const out = processOutput(Boolean(globals().json));
      const first = Number(opts.uidBase);
      const stateDir = mkdtempSync(join(tmpdir(), 'xen-depriv-storm-'));
      try {
        const config = validateConfig({
          domid: 1,
          stateDir,
          qemu: { binary: opts.qemu, machine: 'none', args: [] },
          user: { scheme: 'pool', first, count: Math.max(opts.count, 16) },
        });
        requireRoot('storm');
        // The one launch path: the service's engine, in process, on a state dir of its own.
        const engine = await openEngine(
          defaultSettings({ stateDir, target: 'embedded', user: config.user }),
        );
        const domids = Array.from({ length: opts.count }, (_, i) => i + 1);
        const launched: { domid: number; uid: number }[] = [];
        try {
          let ready = 0;
          let failed = 0;
          const tty = process.stderr.isTTY === true && !out.json;
          // On a terminal, cli-progress draws the live bar on stderr; elsewhere one summary line.
          const bar = tty
            ? new SingleBar(
                {
                  stream: process.stderr,
                  format: '[{bar}] {value}/{total} done, {failed} failed',
                  barsize: Math.max(10, Math.min(40, out.width - 30)),
                  barCompleteChar: '#',
                  barIncompleteChar: '.',
                  hideCursor: true,
                },
                Presets.legacy,
              )
            : null;
          bar?.start(opts.count, 0, { failed: 0 });
          const draw = () => bar?.update(ready + failed, { failed });
          const t0 = performance.now();
          const latencies: (number | null)[] = domids.map(() => null);
          const failures: Error[] = [];
          const limit = pLimit(opts.concurrency);
          await Promise.all(
            domids.map((domid, i) =>
              limit(async () => {
                const t = performance.now();
                try {
                  const r = await engine.launch(requestOf({ ...config, domid }));
                  launched.push({ domid, uid: r.uid });
                  latencies[i] = performance.now() - t;
                  ready++;
                } catch (e) {
                  failures.push(e as Error);
                  failed++;
                }
                draw();
              }),
            ),
          );
          const wallMs = performance.now() - t0;
          if (bar) bar.stop();
          else if (!out.json) out.line(progressBar(ready, failed, opts.count, out.width));
          const t1 = performance.now();
          await Promise.all(launched.map((d) => engine.destroy(d.domid).catch(() => undefined)));
          const destroyMs = performance.now() - t1;
          const left = launched.filter((d) => pidsOfUid(d.uid).length > 0).map((d) => d.uid);
          const leaseFiles = readdirSync(join(stateDir, 'leases')).filter(
            (n) => !n.startsWith('.'),
          );
          const result = { latencies };
          const ms = result.latencies.filter((x): x is number => x !== null).sort((a, b) => a - b);
          const errors = failures;
          const summary = {
            ok: errors.length === 0 && left.length === 0 && leaseFiles.length === 0,
            count: opts.count,
            concurrency: opts.concurrency,
            ready: ms.length,
            failed: errors.length,
            wallMs: Math.round(wallMs),
            destroyMs: Math.round(destroyMs),
            p50: percentile(ms, 50),
            p90: percentile(ms, 90),
            p99: percentile(ms, 99),
            max: ms.at(-1) ?? Number.NaN,
            latenciesMs: ms.map((x) => Math.round(x)),
            errors: [...new Set(errors.map((e) => e.message))],
            leftBehind: { uids: left, leases: leaseFiles.length },
          };
          if (out.json) {
            out.line(JSON.stringify(summary));
          } else {
            const f = (x: number) => (Number.isNaN(x) ? '-' : `${x.toFixed(0)} ms`);
            out.line(
              `${color.bold('storm')}: ${summary.ready}/${summary.count} ready, ${summary.failed} failed, concurrency ${summary.concurrency}, ${f(wallMs)} wall`,
            );
            out.line(
              table(
                ['launch to QMP-ready', 'p50', 'p90', 'p99', 'max'],
                [['latency', f(summary.p50), f(summary.p90), f(summary.p99), f(summary.max)]],
                out.width,
              ),
            );
            out.line(histogram(ms, 8, out.width));
            out.line(
              `destroyed ${launched.length} in ${f(destroyMs)}: ${left.length ? color.bad(`uids ${left.join(' ')} still run`) : 'no process of their uids left'}`,
            );
            for (const e of summary.errors) out.error(`${color.bad('failed:')} ${e}`);
          }
          if (!summary.ok) process.exitCode = EXIT_FAILED;
        } finally {
          for (const d of launched) await engine.destroy(d.domid).catch(() => undefined);
          await engine.close();
        }
      } finally {
        rmSync(stateDir, { recursive: true, force: true });
        if (existsSync(stateDir)) out.error(`could not remove ${stateDir}`);
      }
    });
};
