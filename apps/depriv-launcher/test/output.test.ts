import { describe, expect, it } from 'vitest';
import { progressBar } from '../src/commands/storm.js';
import { wrap } from '../src/output.js';
import { assess } from '../src/runtime.js';

describe('wrap', () => {
  it('breaks at words, keeps the first indent, indents the rest, never exceeds the width', () => {
    expect(wrap('  one two three four', 10, '    ')).toBe('  one two\n    three\n    four');
    const long = 'x'.repeat(30);
    expect(wrap(`a ${long}`, 12, '  ')).toBe(`a\n  ${'x'.repeat(9)}…`);
  });
});

describe('progressBar', () => {
  it('fills in proportion to what is done, failures included', () => {
    expect(progressBar(4, 0, 16, 80)).toBe(
      `[${'#'.repeat(10)}${'.'.repeat(30)}] 4/16 done, 0 failed`,
    );
    expect(progressBar(15, 1, 16, 80)).toBe(`[${'#'.repeat(40)}] 16/16 done, 1 failed`);
    expect(progressBar(1, 0, 3, 30).length).toBeLessThanOrEqual(30);
  });
});

describe('assess', () => {
  const check = (name: string, ok: boolean) => ({ name, ok, expected: 'e', actual: 'a' });
  const inert = [
    'noNewPrivs',
    'capabilities.eff',
    'capabilities.prm',
    'capabilities.inh',
    'capabilities.amb',
  ];

  it('tolerates only a full bounding set, and only while no-new-privs and empty sets make it inert', () => {
    const limited = assess([...inert.map((n) => check(n, true)), check('capabilities.bnd', false)]);
    expect(limited).toMatchObject({
      ok: true,
      failed: [],
      limited: [{ name: 'capabilities.bnd' }],
    });
    for (const n of inert) {
      const r = assess([...inert.map((m) => check(m, m !== n)), check('capabilities.bnd', false)]);
      expect(r.ok).toBe(false);
      expect(r.failed.map((c) => c.name).sort()).toEqual(['capabilities.bnd', n].sort());
    }
    expect(assess([...inert.map((n) => check(n, true)), check('uid', false)]).failed).toHaveLength(
      1,
    );
  });
});
