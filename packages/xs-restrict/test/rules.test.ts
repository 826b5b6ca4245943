/** The shared rules on their own: the one-pass path check against the regex form it replaced, and the quota checks. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nodePathProblem } from '../src/rules/paths.js';
import { createQuotaFailure, DEFAULT_QUOTAS, parseSetPerms } from '../src/rules/quotas.js';

/** is_valid_nodename as the package first wrote it (regexes), kept as the reference. */
function reference(path: string, maxRelLen = 2048): string | undefined {
  if (path.length === 0) return 'empty';
  if (!path.startsWith('/')) return 'not-absolute';
  if (path.endsWith('/') && path !== '/') return 'trailing-slash';
  if (path.includes('//')) return 'double-slash';
  const bytes = Buffer.byteLength(path, 'utf8');
  const m = /^\/local\/domain\/(\d{1,5})\//.exec(path);
  const localOff = m ? m[0].length : 0;
  if (bytes > localOff + maxRelLen || bytes > 3072) return 'too-long';
  if (!/^[A-Za-z0-9\-/_@]*$/.test(path)) return 'bad-char';
  return undefined;
}

describe('rules: paths', () => {
  it('nodePathProblem gives the reference answer for any path (fast-check)', () => {
    const piece = fc.oneof(
      fc.constantFrom(
        '/',
        '//',
        'local',
        'domain',
        '7',
        '@',
        '-',
        '_',
        '.',
        ' ',
        'é',
        '/local/domain/12/',
      ),
      fc.stringMatching(/^[a-z0-9]{0,8}$/),
    );
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 12 }),
        fc.integer({ min: 0, max: 40 }),
        (parts, max) => {
          const p = parts.join('');
          return nodePathProblem(p, max) === reference(p, max);
        },
      ),
      { numRuns: 20000 },
    );
    for (const n of [2047, 2048, 2049, 3071, 3072, 3073])
      for (const p of [`/${'x'.repeat(n - 1)}`, `/local/domain/3/${'x'.repeat(n - 16)}`])
        expect(nodePathProblem(p)).toBe(reference(p));
  });
});

describe('rules: quotas', () => {
  const q = { ...DEFAULT_QUOTAS, nodesPerDomain: 3, entrySize: 100 };
  it('create_node: nodes bottom up, then the parent; the count before the failing check', () => {
    expect(createQuotaFailure(q, 0, false, [50, 50], 50)).toBeUndefined();
    expect(createQuotaFailure(q, 2, false, [50, 50], 50)).toBe(1);
    expect(createQuotaFailure(q, 2, true, [50, 50], 50)).toBeUndefined();
    expect(createQuotaFailure(q, 0, false, [100], 50)).toBe(0);
    expect(createQuotaFailure(q, 0, false, [50, 50], 100)).toBe(2);
  });
  it('set_perms arguments: EINVAL without an owner or with a bad entry, ENOSPC past the guest limit', () => {
    expect(parseSetPerms(['/a'], 1, q, true)).toBe('EINVAL');
    expect(parseSetPerms(['/a', 'x1'], 2, q, true)).toBe('EINVAL');
    const six = ['/a', 'n1', 'r2', 'r3', 'r4', 'r5', 'r6'];
    expect(parseSetPerms(six, 7, q, true)).toBe('ENOSPC');
    expect(parseSetPerms(six, 7, q, false)).toMatchObject({ path: '/a' });
  });
});
