import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkClientPath, nodePathProblem } from '../src/rules/paths.js';
import {
  encodeMessage,
  formatPerm,
  MessageParser,
  parsePerm,
  XENSTORE_PAYLOAD_MAX,
  XenstoreWireError,
  XS_READ,
  XS_RESET_WATCHES,
  XS_SET_TARGET,
  XS_WRITE,
  XSD_ERRORS,
  type XsMessage,
} from '../src/wire/index.js';

/** Cases per fast-check property; XSR_FUZZ_RUNS=1000000 for the long run (see README). */
const RUNS = Number(process.env.XSR_FUZZ_RUNS ?? 40000);
/** Only a hang guard: about 1 ms per case, so the 10^6 long run fits too. */
const FUZZ_TIMEOUT = Math.max(120000, RUNS);

const message = fc.record({
  type: fc.integer({ min: 0, max: 0xffffffff }),
  reqId: fc.integer({ min: 0, max: 0xffffffff }),
  txId: fc.integer({ min: 0, max: 0xffffffff }),
  payload: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
});

function same(a: XsMessage, b: XsMessage): boolean {
  return (
    a.type === b.type && a.reqId === b.reqId && a.txId === b.txId && a.payload.equals(b.payload)
  );
}

describe('wire: header and constants', () => {
  it('encodes the 16-byte little-endian header exactly as struct xsd_sockmsg', () => {
    const b = encodeMessage(XS_WRITE, 0x01020304, 7, 'ab');
    expect(b.toString('hex')).toBe('0b000000040302010700000002000000' + '6162');
  });

  it('keeps xs_wire.h numbering (RESET_WATCHES = SET_TARGET + 2) and the xsd_errors order', () => {
    expect(XS_RESET_WATCHES).toBe(XS_SET_TARGET + 2);
    expect(XSD_ERRORS.slice(0, 5)).toEqual(['EINVAL', 'EACCES', 'EEXIST', 'EISDIR', 'ENOENT']);
    expect(XSD_ERRORS[15]).toBe('EPERM');
  });

  it('a string payload encodes to the bytes of its UTF-8 Buffer (property, any Unicode)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.string({ unit: 'binary', maxLength: 200 }),
        (reqId, text) => {
          const bytes = Buffer.from(text, 'utf8');
          if (bytes.length > XENSTORE_PAYLOAD_MAX) return;
          expect(encodeMessage(XS_WRITE, reqId, 3, text)).toEqual(
            encodeMessage(XS_WRITE, reqId, 3, bytes),
          );
        },
      ),
      { numRuns: 2000 },
    );
    // Counted in bytes, not characters: 2048 two-byte characters are 4096 bytes, one more is over.
    expect(encodeMessage(XS_WRITE, 1, 0, 'é'.repeat(2048))).toHaveLength(16 + 4096);
    expect(() => encodeMessage(XS_WRITE, 1, 0, `${'é'.repeat(2048)}x`)).toThrow(
      /payload of 4097 bytes exceeds XENSTORE_PAYLOAD_MAX \(4096\)/,
    );
  });

  it('refuses a payload over XENSTORE_PAYLOAD_MAX with a typed error naming both sizes', () => {
    expect(() => encodeMessage(XS_WRITE, 1, 0, Buffer.alloc(XENSTORE_PAYLOAD_MAX))).not.toThrow();
    expect(() => encodeMessage(XS_WRITE, 1, 0, Buffer.alloc(XENSTORE_PAYLOAD_MAX + 1))).toThrow(
      /payload of 4097 bytes exceeds XENSTORE_PAYLOAD_MAX \(4096\)/,
    );
    expect(() => encodeMessage(-1, 1, 0, '')).toThrow(XenstoreWireError);
  });
});

describe('wire: streaming parser', { timeout: FUZZ_TIMEOUT }, () => {
  it('parses a stream split at every offset (two messages, all cut points)', () => {
    const a = encodeMessage(XS_READ, 1, 0, '/local/domain/0\0');
    const b = encodeMessage(XS_WRITE, 2, 9, Buffer.from('/x\0\x00\xff'));
    const all = Buffer.concat([a, b]);
    for (let i = 0; i <= all.length; i++) {
      for (let j = i; j <= all.length; j += 3) {
        const p = new MessageParser();
        const got = [
          ...p.push(all.subarray(0, i)),
          ...p.push(all.subarray(i, j)),
          ...p.push(all.subarray(j)),
        ];
        expect(got.map((m) => [m.type, m.reqId, m.txId, m.payload.toString('hex')])).toEqual([
          [XS_READ, 1, 0, Buffer.from('/local/domain/0\0').toString('hex')],
          [XS_WRITE, 2, 9, Buffer.from('/x\0\x00\xff').toString('hex')],
        ]);
        expect(p.buffered).toBe(0);
      }
    }
  });

  it('round-trips any messages under any chunking (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.array(message, { maxLength: 4 }),
        fc.array(fc.nat({ max: 80 }), { maxLength: 8 }),
        (msgs, cuts) => {
          const bytes = Buffer.concat(
            msgs.map((m) => encodeMessage(m.type, m.reqId, m.txId, m.payload)),
          );
          const p = new MessageParser();
          const got: XsMessage[] = [];
          let off = 0;
          for (const c of cuts) {
            got.push(...p.push(bytes.subarray(off, off + c)));
            off = Math.min(bytes.length, off + c);
          }
          got.push(...p.push(bytes.subarray(off)));
          return got.length === msgs.length && got.every((g, i) => same(g, msgs[i] as XsMessage));
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('never buffers more than 16 + limit bytes and rejects any length over the limit before reading it (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        fc.integer({ min: 0, max: 64 }),
        (junk, limit) => {
          const p = new MessageParser(limit);
          try {
            p.push(junk);
          } catch (e) {
            if (!(e instanceof XenstoreWireError) || e.code !== 'EPAYLOAD') return false;
            // once failed, stays failed
            try {
              p.push(Buffer.alloc(1));
              return false;
            } catch {
              return true;
            }
          }
          return p.buffered <= 16 + limit;
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('rejects a 4 GiB length field as soon as the header is complete', () => {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(XS_WRITE, 0);
    h.writeUInt32LE(0xffffffff, 12);
    const p = new MessageParser();
    expect(p.push(h.subarray(0, 15))).toEqual([]);
    expect(() => p.push(h.subarray(15))).toThrow(
      /length field 4294967295 exceeds the payload limit 4096/,
    );
  });
});

describe('wire: paths (is_valid_nodename)', () => {
  it.each([
    ['/', undefined],
    ['/local/domain/1/device/vbd/51712', undefined],
    ['/a@b-c_D9', undefined],
    ['', 'empty'],
    ['local', 'not-absolute'],
    ['/a/', 'trailing-slash'],
    ['/a//b', 'double-slash'],
    ['/a b', 'bad-char'],
    ['/a.b', 'bad-char'],
    [`/${'x'.repeat(2047)}`, undefined],
    [`/${'x'.repeat(2048)}`, 'too-long'],
    [`/local/domain/7/${'x'.repeat(2048)}`, undefined],
    [`/local/domain/7/${'x'.repeat(2049)}`, 'too-long'],
  ])('%j -> %s', (p, want) => {
    expect(nodePathProblem(p)).toBe(want);
  });

  it('client-side check names the rule a path breaks', () => {
    expect(() => checkClientPath('/a//b')).toThrow(
      /invalid xenstore path "\/a\/\/b": double-slash/,
    );
    expect(() => checkClientPath('@introduceDomain')).not.toThrow();
    expect(() => checkClientPath('device/vif')).not.toThrow();
  });
});

describe('wire: permission strings', { timeout: FUZZ_TIMEOUT }, () => {
  it.each([
    ['n0', { perm: 'n', domid: 0 }],
    ['r5', { perm: 'r', domid: 5 }],
    ['w7', { perm: 'w', domid: 7 }],
    ['b9', { perm: 'b', domid: 9 }],
    ['r0x10', { perm: 'r', domid: 16 }],
    ['r010', { perm: 'r', domid: 8 }],
    ['r-1', { perm: 'r', domid: 0xffffffff }],
  ])('parses %s like xs_strings_to_perms', (s, want) => {
    expect(parsePerm(s)).toEqual(want);
  });

  it.each(['', 'x1', 'r', 'r1x', 'rr'])('rejects %j with EPERMS', (s) => {
    expect(() => parsePerm(s)).toThrow(XenstoreWireError);
  });

  it('formats and parses back any entry (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('n', 'r', 'w', 'b'),
        fc.integer({ min: 0, max: 0xffffffff }),
        (perm, domid) => {
          const p = { perm, domid } as const;
          const back = parsePerm(formatPerm(p));
          return back.perm === perm && back.domid === domid;
        },
      ),
      { numRuns: RUNS },
    );
  });
});
