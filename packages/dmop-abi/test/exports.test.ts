import { describe, expect, it } from 'vitest';
import * as root from '../src/index.js';
import * as layout from '../src/layout.js';

/** The struct layout tables: internals, only behind @xen-depriv/dmop-abi/layout. */
const TABLES = [
  'CTYPE_MAX',
  'DM_OPS',
  'MODIFIED_MEMORY_EXTENT',
  'PRIVCMD_IRQFD_LAYOUT',
  'PRIVCMD_LAYOUT',
  'SIZEOF',
  'XEN_DM_OP_UNION_OFFSET',
];

describe('the root export and ./layout', () => {
  it('./layout has every constant and table; the root every constant and no table', () => {
    const inRoot = new Set(Object.keys(root));
    const fromLayout = Object.keys(layout);
    for (const t of TABLES) expect(fromLayout, t).toContain(t);
    // A constant added to layout.ts must be added to index.ts too (or to TABLES here).
    expect(fromLayout.filter((n) => !TABLES.includes(n) && !inRoot.has(n))).toEqual([]);
    expect(TABLES.filter((t) => inRoot.has(t))).toEqual([]);
  });
  it('the root re-exports the very values of ./layout', () => {
    expect(root.IOCTL_PRIVCMD_DM_OP).toBe(layout.IOCTL_PRIVCMD_DM_OP);
    expect(root.DM_OP_NAMES).toBe(layout.DM_OP_NAMES);
  });
});
