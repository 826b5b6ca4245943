import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DOMID_FIRST_RESERVED,
  dynamicPoolScheme,
  type PasswdEntry,
  perVmUserScheme,
  rangeBaseScheme,
  schemeFromConfig,
  schemes,
  sharedUserScheme,
  type UserLookup,
} from '../src/index.js';
import { canRunAsRoot } from './helpers.js';

function table(entries: PasswdEntry[], byUid = false): UserLookup {
  const lookup: UserLookup = {
    getpwnam: (name) => entries.find((e) => e.name === name) ?? null,
  };
  if (byUid) lookup.getpwuid = (uid) => entries.find((e) => e.uid === uid) ?? null;
  return lookup;
}

const base = { name: 'xen-qemuuser-range-base', uid: 200_000, gid: 300_000 };
const reaper = { name: 'xen-qemuuser-reaper', uid: 199_999, gid: 199_999 };

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('rangeBaseScheme (passwd from an injected table)', () => {
  it('maps every domid 1..32751 to base uid + domid and gid base gid + domid', () => {
    const s = rangeBaseScheme({ lookup: table([base, reaper]) });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: DOMID_FIRST_RESERVED - 1 }), (domid) => {
        expect([...s.candidates(domid)]).toEqual([{ uid: 200_000 + domid, gid: 300_000 + domid }]);
        expect(s.contains(200_000 + domid)).toBe(true);
      }),
    );
    expect(s.contains(200_000)).toBe(false);
    expect(s.contains(200_000 + DOMID_FIRST_RESERVED)).toBe(false);
    expect(s.kind).toBe('range-base');
    expect(s.isolation).toBe('per-domain');
    expect(s.reaperUid).toBe(199_999);
  });

  it("gives every DM the base user's gid with gid: 'base', as libxl does", () => {
    const s = rangeBaseScheme({ lookup: table([base]), gid: 'base' });
    expect([...s.candidates(7)]).toEqual([{ uid: 200_007, gid: 300_000 }]);
  });

  it('falls back to the base uid as reaper when there is no reaper user, as libxl does', () => {
    expect(rangeBaseScheme({ lookup: table([base]) }).reaperUid).toBe(200_000);
  });

  it('refuses domid 0, DOMID_FIRST_RESERVED and non-integers', () => {
    const s = rangeBaseScheme({ lookup: table([base]) });
    for (const d of [0, 32752, 65535, -1, 1.5, Number.NaN]) {
      expect(codeOf(() => s.candidates(d))).toBe('OUT_OF_RANGE');
    }
    expect(() => s.candidates(32752)).toThrow(
      'domid: expected an integer 1..32751 (below DOMID_FIRST_RESERVED), got 32752',
    );
  });

  it('checks the base user: present, not a system uid, room for 32751 uids', () => {
    expect(() => rangeBaseScheme({ lookup: table([]) })).toThrow(
      "range-base user: expected a passwd entry for 'xen-qemuuser-range-base', none",
    );
    expect(codeOf(() => rangeBaseScheme({ lookup: table([{ ...base, uid: 999 }]) }))).toBe(
      'BAD_USER',
    );
    expect(() => rangeBaseScheme({ lookup: table([{ ...base, uid: 0xfffffffe - 100 }]) })).toThrow(
      `range-base user: expected 'xen-qemuuser-range-base' uid + 32751 <= 4294967294, got ${0xfffffffe - 100}`,
    );
  });

  it('refuses a uid that is another user, as libxl does, when getpwuid is available', () => {
    const clash = { name: 'alice', uid: 200_005, gid: 1 };
    const s = rangeBaseScheme({ lookup: table([base, clash], true) });
    expect(() => s.candidates(5)).toThrow(
      "range-base: wanted uid 200005 (xen-qemuuser-range-base + 5) but that is user 'alice'",
    );
    expect([...s.candidates(6)]).toEqual([{ uid: 200_006, gid: 300_006 }]);
  });

  it('refuses a reaper uid inside the range', () => {
    expect(codeOf(() => rangeBaseScheme({ lookup: table([base]), reaperUid: 200_001 }))).toBe(
      'BAD_CONFIG',
    );
  });
});

describe('sharedUserScheme and perVmUserScheme', () => {
  const shared = { name: 'xen-qemuuser-shared', uid: 5000, gid: 5001 };
  const vm = { name: 'vm-web1', uid: 6000, gid: 6001 };

  it('shared: one uid for every domain, reported as weaker', () => {
    const s = sharedUserScheme({ lookup: table([shared]) });
    expect(s.isolation).toBe('shared');
    expect([...s.candidates(1)]).toEqual([{ uid: 5000, gid: 5001 }]);
    expect([...s.candidates(2)]).toEqual([{ uid: 5000, gid: 5001 }]);
    expect(s.describe()).toContain('weaker');
    expect(s.reaperUid).toBeUndefined();
  });

  it('per-vm: the named user, per-domain isolation', () => {
    const s = perVmUserScheme({ user: 'vm-web1', lookup: table([vm, reaper]) });
    expect([...s.candidates(3)]).toEqual([{ uid: 6000, gid: 6001 }]);
    expect(s.isolation).toBe('per-domain');
    expect(s.reaperUid).toBe(199_999);
    expect(codeOf(() => perVmUserScheme({ user: 'nobody-here', lookup: table([vm]) }))).toBe(
      'BAD_USER',
    );
  });

  it('refuses root as a named user', () => {
    expect(() =>
      perVmUserScheme({ user: 'root', lookup: table([{ name: 'root', uid: 0, gid: 0 }]) }),
    ).toThrow("per-vm user: expected 'root' to have a uid >= 1000, it has 0");
  });
});

describe('dynamicPoolScheme', () => {
  it('offers each uid of the pool exactly once, starting at first + domid % count, gid = uid', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1000, max: 4_000_000 }),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 0, max: DOMID_FIRST_RESERVED - 1 }),
        (first, count, domid) => {
          const s = dynamicPoolScheme({ first, count, reaperUid: 999_999_999 });
          const c = [...s.candidates(domid)];
          expect(c).toHaveLength(count);
          expect(c[0]).toEqual({ uid: first + (domid % count), gid: first + (domid % count) });
          expect(new Set(c.map((x) => x.uid)).size).toBe(count);
          expect(c.every((x) => s.contains(x.uid) && x.gid === x.uid)).toBe(true);
          expect(s.contains(first - 1) || s.contains(first + count)).toBe(false);
        },
      ),
    );
  });

  it('skips uids that have a passwd entry when getpwuid is available', () => {
    const lookup = table([{ name: 'taken', uid: 10_001, gid: 1 }], true);
    const s = dynamicPoolScheme({ first: 10_000, count: 3, lookup, reaperUid: 20_000 });
    expect([...s.candidates(0)].map((c) => c.uid)).toEqual([10_000, 10_002]);
  });

  it('refuses unsafe ranges', () => {
    expect(codeOf(() => dynamicPoolScheme({ first: 0, count: 10 }))).toBe('UNSAFE_UID');
    expect(codeOf(() => dynamicPoolScheme({ first: 999, count: 10 }))).toBe('UNSAFE_UID');
    expect(codeOf(() => dynamicPoolScheme({ first: 1000, count: 0 }))).toBe('BAD_CONFIG');
    expect(codeOf(() => dynamicPoolScheme({ first: 0xfffffff0, count: 100 }))).toBe('BAD_CONFIG');
    expect(() =>
      dynamicPoolScheme({ first: 10_000, count: 10, reaperUid: 10_005, lookup: table([]) }),
    ).toThrow(
      'dynamic pool: expected the reaper uid outside the DM uids, but 10005 is one of them',
    );
  });
});

describe('schemeFromConfig', () => {
  it("builds each scheme from xen-depriv's config shape", () => {
    const lookup = table([base, { name: 'xen-qemuuser-shared', uid: 5000, gid: 5000 }]);
    expect(schemeFromConfig({ scheme: 'range-base' }, { lookup }).kind).toBe('range-base');
    expect(schemeFromConfig({ scheme: 'shared' }, { lookup }).kind).toBe('shared');
    expect(
      schemeFromConfig({ scheme: 'pool', first: 3_000_000, count: 10 }, { lookup }).describe(),
    ).toBe('dynamic pool uids 3000000..3000009');
    expect(codeOf(() => schemeFromConfig({ scheme: 'nope' } as never, { lookup }))).toBe(
      'BAD_CONFIG',
    );
    expect(schemes.dynamicPool).toBe(dynamicPoolScheme);
  });

  it.skipIf(!canRunAsRoot)('resolves through the real getpwnam (sys) by default', () => {
    // This host has no xen-qemuuser-range-base user; the real lookup must say so.
    expect(() => rangeBaseScheme({ user: 'xen-depriv-no-such-user' })).toThrow(
      "range-base user: expected a passwd entry for 'xen-depriv-no-such-user', none",
    );
  });
});
