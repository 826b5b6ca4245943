import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  auditTrace,
  compileSeccomp,
  decide,
  PolicyError,
  parseTrace,
  qemuXenHvmProfile,
  type SeccompAllowlist,
  validateProfile,
} from '../src/index.js';
import { disassembleSeccomp, runSeccomp } from '../src/seccomp-entry.js';

// Bad input gets a PolicyError and nothing else: no TypeError, no RangeError from deep inside.
function onlyPolicyErrors(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PolicyError);
  }
}

const json = fc.jsonValue({ maxDepth: 4 });

describe('bad input to every parser gets a PolicyError', () => {
  it('validateProfile: arbitrary JSON and profile-shaped objects with arbitrary fields', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          json,
          fc.record({ name: json, limits: json, ops: json }),
          fc.record({
            name: fc.string(),
            limits: fc.record({ maxBufs: json, maxBufSize: json }),
            ops: fc.dictionary(
              fc.constantFrom('inject_msi', 'set_mem_type', 'nope'),
              fc.dictionary(fc.string(), json),
            ),
          }),
        ),
        (data) => onlyPolicyErrors(() => validateProfile(data)),
      ),
      { numRuns: 500 },
    );
  });
  it('compileSeccomp: arbitrary JSON as an allowlist', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          json,
          fc.record({ syscalls: json, ioctls: json, rules: json, defaultAction: json }),
          fc.record({ syscalls: fc.array(json), ioctls: fc.array(json), defaultAction: json }),
        ),
        (data) => onlyPolicyErrors(() => compileSeccomp(data as unknown as SeccompAllowlist)),
      ),
      { numRuns: 500 },
    );
  });
  it('disassembleSeccomp and runSeccomp: arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(500), (bytes, nr) => {
        onlyPolicyErrors(() => disassembleSeccomp(bytes));
        onlyPolicyErrors(() => runSeccomp(bytes, { nr, arch: 0xc000003e }));
      }),
    );
  });
  it('parseTrace and auditTrace: arbitrary lines and records with arbitrary fields', () => {
    const record = fc.record({
      seq: fc.oneof(fc.nat(), json),
      pid: fc.nat(),
      dev: fc.constantFrom('privcmd', 'evtchn', 'gntdev', 'x'),
      fd: fc.nat(10),
      request: fc.constantFrom(
        0x00105005,
        0x00025006,
        0x00305000,
        0x00084501,
        0x00024506,
        0x00044504,
        7,
      ),
      ret: fc.integer(),
      errno: fc.nat(),
      dom: json,
      domid: json,
      bufs: fc.oneof(json, fc.array(fc.oneof(fc.string(), fc.constant('0e00000000000000')))),
      port: json,
      remote_domain: json,
      addr: fc.oneof(fc.nat(), fc.double(), json),
      num: fc.oneof(fc.integer(), fc.double(), json),
      type: fc.nat(),
      id: fc.nat(),
      idx: fc.nat(),
      virq: json,
      op: json,
    });
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.string(),
            record.map((r) => JSON.stringify(r)),
          ),
        ),
        (lines) => {
          const text = lines.join('\n');
          onlyPolicyErrors(() => parseTrace(text));
          onlyPolicyErrors(() =>
            auditTrace(text, qemuXenHvmProfile, { guestMemoryEndGfn: 0x1000n, ioRanges: [] }),
          );
        },
      ),
      { numRuns: 300 },
    );
  });
  it('decide: arbitrary buffers never throw, they are decided', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 4 }),
        fc.nat(0x7fff),
        (bufs, domid) => {
          const d = decide({ domid, bufs }, qemuXenHvmProfile, {
            guestMemoryEndGfn: 0x1000n,
            ioRanges: [],
          });
          expect(typeof d.allowed).toBe('boolean');
        },
      ),
      { numRuns: 500 },
    );
  });
});
