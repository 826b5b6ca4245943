#!/usr/bin/env node
// Audits a recorded trace against the qemu-xen-hvm profile (or a profile JSON file):
//   node tools/privcmd-trace/audit.mjs TRACE.jsonl [--profile profile.json] [--mem-end-gfn 0x40000]
//        [--io port:0x1f0-0x1f7 ...]
// Prints the counts per request name and every denial; exits 1 when anything would be denied.
// Needs the built package: (cd packages/privcmd-filter && npx tsup).
import { readFileSync } from 'node:fs';
import {
  auditTrace,
  qemuXenHvmProfile,
  validateProfile,
} from '../../packages/privcmd-filter/dist/index.js';

const args = process.argv.slice(2);
let trace;
let profile = qemuXenHvmProfile;
let guestMemoryEndGfn = 1n << 52n;
const ioRanges = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--profile') profile = validateProfile(JSON.parse(readFileSync(args[++i], 'utf8')));
  else if (a === '--mem-end-gfn') guestMemoryEndGfn = BigInt(args[++i]);
  else if (a === '--io') {
    const m = /^(port|mmio|pci):(\w+)-(\w+)$/.exec(args[++i] ?? '');
    if (!m) throw new Error(`--io: expected TYPE:START-END (port|mmio|pci), got ${args[i]}`);
    ioRanges.push({ type: m[1], start: BigInt(m[2]), end: BigInt(m[3]) });
  } else trace = a;
}
if (trace === undefined) {
  console.error(
    'usage: audit.mjs TRACE.jsonl [--profile FILE] [--mem-end-gfn N] [--io TYPE:START-END ...]',
  );
  process.exit(2);
}
const report = auditTrace(readFileSync(trace, 'utf8'), profile, { guestMemoryEndGfn, ioRanges });
console.log(
  `profile ${profile.name}: ${report.total} requests, ${report.allowed} allowed, ` +
    `${report.deniedByKernel} denied by the kernel's rules, ${report.deniedByProfile} by the profile`,
);
for (const [name, c] of Object.entries(report.byName).sort()) {
  console.log(
    `  ${name.padEnd(42)} ${String(c.total).padStart(6)} total ${String(c.deniedByKernel).padStart(4)} kernel ${String(c.deniedByProfile).padStart(4)} profile`,
  );
}
for (const d of report.denials)
  console.log(`  denied #${d.seq} pid ${d.pid} fd ${d.fd} by ${d.by}: ${d.code} ${d.reason}`);
process.exit(report.denials.length === 0 ? 0 : 1);
