#!/usr/bin/env node
// Prints the plain closing line `N passed, M failed, K skipped`, counted from vitest's JSON
// report and, when given, the real-Xen tier's report (same shape), and exits non-zero when a
// runner failed, a test failed, or no test ran at all.
//   node scripts/summary.mjs REPORT EXIT [REPORT EXIT ...]
import { existsSync, readFileSync } from 'node:fs';

const args = process.argv.slice(2);
let passed = 0;
let failed = 0;
let skipped = 0;
let ok = true;
for (let i = 0; i < args.length; i += 2) {
  const path = args[i];
  const exit = Number(args[i + 1] ?? '0');
  if (exit !== 0) ok = false;
  if (!existsSync(path)) {
    console.error(`summary: no report at ${path}: its runner did not finish`);
    failed += 1;
    continue;
  }
  const report = JSON.parse(readFileSync(path, 'utf8'));
  if (report.skipped) console.error(`summary: ${path}: skipped: ${report.skipped}`);
  passed += report.numPassedTests ?? 0;
  // A file that fails to load counts as a failure even though it has no test results.
  const brokenFiles = (report.testResults ?? []).filter(
    (f) => f.status === 'failed' && (f.assertionResults ?? []).length === 0,
  ).length;
  failed += (report.numFailedTests ?? 0) + brokenFiles;
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(ok && failed === 0 && passed > 0 ? 0 : 1);
