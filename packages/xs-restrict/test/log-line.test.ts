/**
 * The proxy's log line, written field by field (log-line.ts), is byte for byte what
 * JSON.stringify gives for the record; its time is Date's toISOString.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isoTime, type LogFields, logLine } from '../src/proxy/log-line.js';
import type { ProxyLogRecord } from '../src/proxy/options.js';

const EVENTS: ProxyLogRecord['event'][] = [
  'forwarded',
  'refused',
  'protocol-error',
  'slow-reader',
  'event-overflow',
  'upstream-closed',
  'too-many-clients',
];
const u32 = fc.integer({ min: 0, max: 0xffffffff });
// Any string, lone surrogates and control characters included (JSON.stringify escapes them).
const text = fc.string({ unit: 'binary', maxLength: 40 });

/** A record as the proxy builds one: its keys in the proxy's order, each one present or not. */
const fields: fc.Arbitrary<LogFields> = fc
  .record(
    {
      event: fc.constantFrom(...EVENTS),
      request: fc.record(
        { type: text, reqId: u32, txId: u32, path: text },
        { requiredKeys: ['type', 'reqId', 'txId'] },
      ),
      rule: text,
      errno: fc.constantFrom('EACCES', 'EINVAL', 'E2BIG', 'ENOSPC', 'EIO'),
      detail: text,
    },
    { requiredKeys: ['event'] },
  )
  .map((r) => r as LogFields);

describe('logLine', () => {
  it('is JSON.stringify of the record, byte for byte (property)', () => {
    fc.assert(
      fc.property(text, u32, u32, fields, (time, domid, client, rec) => {
        expect(logLine(time, domid, client, rec)).toBe(
          JSON.stringify({ time, domid, client, ...rec }),
        );
      }),
      { numRuns: 3000 },
    );
  });

  it("a refusal's line, as the README shows it", () => {
    expect(
      logLine('2026-12-03T12:00:00.007Z', 5, 3, {
        event: 'refused',
        request: { type: 'READ', reqId: 7, txId: 0, path: '/tool/x' },
        rule: 'not-in-allowlist:read',
        errno: 'EACCES',
      }),
    ).toBe(
      '{"time":"2026-12-03T12:00:00.007Z","domid":5,"client":3,"event":"refused","request":{"type":"READ","reqId":7,"txId":0,"path":"/tool/x"},"rule":"not-in-allowlist:read","errno":"EACCES"}',
    );
  });
});

describe('isoTime', () => {
  it("is Date's toISOString for every time Date can hold (property), minute after minute", () => {
    fc.assert(
      fc.property(fc.integer({ min: -8.64e15, max: 8.64e15 }), (ms) => {
        expect(isoTime(ms)).toBe(new Date(ms).toISOString());
      }),
      { numRuns: 5000 },
    );
    // Within one minute, across its edges, and back: the cached part follows.
    for (const ms of [0, 59_999, 60_000, 119_999, -1, -60_000, -60_001, 1_764_763_200_123, 5]) {
      expect(isoTime(ms)).toBe(new Date(ms).toISOString());
    }
  });
});
