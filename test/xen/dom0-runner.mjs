// Runs inside the lab's dom0 (real Xen 4.17, real privcmd and xenstored), from the repository
// shared over 9p: loads every test/xen/*.xen.mjs, runs its tests one after another, prints one
// line per test and writes a vitest-compatible JSON report to reports/xen.json on the share.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const here = import.meta.dirname;
const repo = join(here, '..', '..');
const only = process.env.XEN_TEST_FILTER ?? '';

const xlInfo = execFileSync('xl', ['info'], { encoding: 'utf8' });
const xenVersion = /^xen_version\s*:\s*(\S+)/m.exec(xlInfo)?.[1] ?? 'unknown';
console.log(
  `xen-tier: hypervisor ${xenVersion}, dom0 kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}`,
);

const results = [];
for (const file of readdirSync(here)
  .filter((f) => f.endsWith('.xen.mjs'))
  .sort()) {
  const tests = [];
  const mod = await import(pathToFileURL(join(here, file)).href);
  mod.default((name, fn, opts = {}) => tests.push({ name, fn, opts }));
  for (const { name, fn, opts } of tests) {
    const fullName = `${file.replace('.xen.mjs', '')} > ${name}`;
    if (only && !fullName.includes(only)) continue;
    if (opts.skip) {
      results.push({ fullName, status: 'pending', reason: opts.skip });
      console.log(`  - ${fullName} (skipped: ${opts.skip})`);
      continue;
    }
    const start = process.hrtime.bigint();
    try {
      const figures = await fn();
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      results.push({ fullName, status: 'passed', durationMs: ms, figures: figures ?? null });
      console.log(
        `  ✓ ${fullName} (${ms.toFixed(0)} ms)${figures ? ` ${JSON.stringify(figures)}` : ''}`,
      );
    } catch (err) {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      results.push({ fullName, status: 'failed', durationMs: ms, failureMessages: [message] });
      console.log(`  ✗ ${fullName}\n${message.replace(/^/gm, '      ')}`);
    }
  }
}

const count = (s) => results.filter((r) => r.status === s).length;
const report = {
  xenVersion,
  numPassedTests: count('passed'),
  numFailedTests: count('failed'),
  numPendingTests: count('pending'),
  numTodoTests: 0,
  testResults: [
    { name: 'xen-tier', status: count('failed') ? 'failed' : 'passed', assertionResults: results },
  ],
};
mkdirSync(join(repo, 'reports'), { recursive: true });
writeFileSync(join(repo, 'reports', 'xen.json'), `${JSON.stringify(report, null, 2)}\n`);
console.log(
  `${report.numPassedTests} passed, ${report.numFailedTests} failed, ${report.numPendingTests} skipped`,
);
process.exit(report.numFailedTests === 0 && report.numPassedTests > 0 ? 0 : 1);
