// Runs inside the lab's dom0 (real Xen 4.17, real privcmd and xenstored), from the repository
// shared over 9p: loads every test/xen/*.xen.mjs, runs its tests one after another, prints one
// line per test and writes a vitest-compatible JSON report to reports/xen.json on the share.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const here = import.meta.dirname;

// The tests run in a child process: a test may leave a blocking read on a Xen device in libuv's
// thread pool (a xenbus read has no timeout), and Node's exit waits for those threads. The
// parent ends the child by pid once it has said it is done.
if (process.argv[2] !== '--child') {
  const child = spawn(process.execPath, [import.meta.filename, '--child'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, UV_THREADPOOL_SIZE: '16' },
  });
  let done = false;
  child.stdout.on('data', (chunk) => {
    process.stdout.write(chunk);
    if (!done && chunk.toString().includes('xen-tier: done')) {
      done = true;
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    }
  });
  const [code, signal] = await new Promise((resolve) =>
    child.on('exit', (c, s) => resolve([c, s])),
  );
  if (!(done && signal === 'SIGKILL')) process.exit(code ?? 1);
  const { readFileSync } = await import('node:fs');
  const report = JSON.parse(readFileSync(join(here, '..', '..', 'reports', 'xen.json'), 'utf8'));
  process.exit(report.numFailedTests === 0 && report.numPassedTests > 0 ? 0 : 1);
}

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
console.log('xen-tier: done');
process.exit(report.numFailedTests === 0 && report.numPassedTests > 0 ? 0 : 1);
