import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type MatrixRecord, parseMatrix, replayMatrix } from './helpers/xen-matrix.js';

const recording = readFileSync(new URL('./vectors/xen-matrix.jsonl', import.meta.url), 'utf8');
const { setup, records } = parseMatrix(recording);

describe('the recorded matrix of real Xen 4.17 + Linux 6.1 (tools/xen-matrix)', () => {
  it('every answer of the models equals the recorded one, replayed in order', () => {
    const { counts, mismatches } = replayMatrix(setup, records);
    const line = Object.entries(counts)
      .map(([layer, n]) => `${layer} ${n}`)
      .join(', ');
    console.log(
      `xen-matrix: ${records.length} requests (${line}), ${records.length - new Set(mismatches.map((m) => m.n)).size} agree`,
    );
    expect(mismatches.slice(0, 20)).toEqual([]);
    expect(records.length).toBeGreaterThanOrEqual(150);
  });

  // A replay that agrees with everything proves nothing unless a wrong recording fails it.
  it.each([
    ['an errno', (r: MatrixRecord) => ({ ...r, errno: r.errno === 22 ? 95 : 22, rc: -1 })],
    ['a return value', (r: MatrixRecord) => ({ ...r, rc: r.rc + 1 })],
    [
      'one byte written back',
      (r: MatrixRecord): MatrixRecord => {
        const out = r.out as readonly string[];
        return { ...r, out: [`${(out[0] as string).slice(0, -2)}ff`, ...out.slice(1)] };
      },
    ],
  ])('a deliberately wrong recorded %s makes the replay fail', (_what, corrupt) => {
    // The first successful get_ioreq_server_info: Xen wrote gfns and a port back into buf 0.
    const at = records.findIndex((r) => r.what === 'get_ioreq_server_info s1');
    expect(at).toBeGreaterThan(0);
    const wrong = records.map((r, i) => (i === at ? corrupt(r) : r));
    const { mismatches } = replayMatrix(setup, wrong);
    expect(mismatches.map((m) => m.n)).toContain(records[at]?.n);
  });
});
