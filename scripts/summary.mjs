#!/usr/bin/env node
// Prints the plain closing line `N passed, M failed, K skipped` from vitest's JSON report and
// exits non-zero when vitest failed, a test failed, or no test ran at all.
import { existsSync, readFileSync } from 'node:fs';

const [reportPath = 'reports/vitest.json', vitestExit = '0'] = process.argv.slice(2);
if (!existsSync(reportPath)) {
  console.log('0 passed, 1 failed, 0 skipped');
  console.error(`summary: no report at ${reportPath}: vitest did not finish`);
  process.exit(1);
}
const report = JSON.parse(readFileSync(reportPath, 'utf8'));
const passed = report.numPassedTests ?? 0;
// A file that fails to load counts as a failure even though it has no test results.
const brokenFiles = (report.testResults ?? []).filter(
  (f) => f.status === 'failed' && (f.assertionResults ?? []).length === 0,
).length;
const failed = (report.numFailedTests ?? 0) + brokenFiles;
const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
const ok = Number(vitestExit) === 0 && failed === 0 && passed > 0;
process.exit(ok ? 0 : 1);
