import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { type LeaseRecord, parseRecord, UidAllocatorError } from '../src/index.js';
import { removeTempFiles, writeAtomic } from '../src/state.js';

const record: LeaseRecord = {
  format: 'xen-depriv-uid-lease',
  version: 1,
  leaseId: '0123456789abcdef0123456789abcdef',
  uid: 3_100_001,
  gid: 3_100_001,
  domid: 7,
  scheme: 'dynamic-pool',
  exclusive: true,
  state: 'held',
  launcher: { pid: 1234, startTime: 99 },
  dm: null,
  createdAt: '2026-11-25T23:00:00.000Z',
  releasedAt: null,
  bootId: '9451f11a-3e89-4d0e-950f-3240c48908bf',
};

const arbRecord: fc.Arbitrary<LeaseRecord> = fc.record({
  format: fc.constant('xen-depriv-uid-lease' as const),
  version: fc.constant(1 as const),
  leaseId: fc.stringMatching(/^[0-9a-f]{32}$/),
  uid: fc.integer({ min: 0, max: 0xffffffff }),
  gid: fc.integer({ min: 0, max: 0xffffffff }),
  domid: fc.integer({ min: 0, max: 0x7fef }),
  scheme: fc.constantFrom('range-base', 'shared', 'per-vm', 'dynamic-pool' as const),
  exclusive: fc.boolean(),
  state: fc.constantFrom('held', 'releasing' as const),
  launcher: fc.record({ pid: fc.integer({ min: 1, max: 4_194_304 }), startTime: fc.nat() }),
  dm: fc.option(fc.record({ pid: fc.integer({ min: 1, max: 4_194_304 }), startTime: fc.nat() })),
  createdAt: fc.date({ noInvalidDate: true, min: new Date(0) }).map((d) => d.toISOString()),
  releasedAt: fc.constant(null),
  bootId: fc.uuid(),
});

function errorOf(text: string): string {
  try {
    parseRecord(text);
  } catch (e) {
    expect(e).toBeInstanceOf(UidAllocatorError);
    expect((e as UidAllocatorError).code).toBe('BAD_RECORD');
    return (e as Error).message;
  }
  throw new Error('expected BAD_RECORD');
}

describe('lease records', () => {
  it('round-trip through JSON', () => {
    fc.assert(
      fc.property(arbRecord, (r) => {
        expect(parseRecord(`${JSON.stringify(r)}\n`)).toEqual(r);
      }),
    );
  });

  it('refuse every truncation (a half-written file is never trusted)', () => {
    fc.assert(
      fc.property(arbRecord, fc.nat(), (r, n) => {
        const text = JSON.stringify(r);
        errorOf(text.slice(0, n % text.length));
      }),
    );
  });

  it('name the field, what was expected and what was seen', () => {
    const edit = (patch: Record<string, unknown>) => JSON.stringify({ ...record, ...patch });
    expect(errorOf(edit({ uid: -1 }))).toBe(
      'lease record uid: expected an integer 0..4294967295, got -1',
    );
    expect(errorOf(edit({ state: 'free' }))).toBe(
      'lease record state: expected held | releasing | quarantined, got "free"',
    );
    expect(errorOf(edit({ version: 2 }))).toBe('lease record version: expected 1, got 2');
    expect(errorOf(edit({ launcher: { pid: 0, startTime: 1 } }))).toBe(
      'lease record launcher.pid: expected a pid >= 1, got 0',
    );
    expect(errorOf(edit({ state: 'quarantined' }))).toBe(
      'lease record releasedAt: expected a date in a quarantined record, got null',
    );
    expect(errorOf('[]')).toBe('lease record : expected a JSON object, got []');
  });
});

describe('writeAtomic', () => {
  const dir = mkdtempSync(join(tmpdir(), 'uid-allocator-state-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('goes through its steps in order and leaves only the final file', () => {
    const steps: string[] = [];
    writeAtomic(dir, 'a.json', 'new\n', (s) => steps.push(s));
    expect(steps).toEqual(['tmp-half-written', 'tmp-written', 'renamed']);
    expect(readdirSync(dir)).toEqual(['a.json']);
    expect(readFileSync(join(dir, 'a.json'), 'utf8')).toBe('new\n');
  });

  it('leaves the old content and a temp file when stopped half way; the temp file is removable', () => {
    writeAtomic(dir, 'b.json', 'old\n', () => {});
    expect(() =>
      writeAtomic(dir, 'b.json', 'a much longer new content\n', (s) => {
        if (s === 'tmp-half-written') throw new Error('crash');
      }),
    ).toThrow('crash');
    expect(readFileSync(join(dir, 'b.json'), 'utf8')).toBe('old\n');
    const temps = readdirSync(dir).filter((n) => n.startsWith('.tmp-'));
    expect(temps).toHaveLength(1);
    expect(readFileSync(join(dir, temps[0] as string), 'utf8')).toBe('a much longer');
    expect(removeTempFiles(dir)).toEqual(temps);
    expect(existsSync(join(dir, temps[0] as string))).toBe(false);
  });
});
