import { describe, expect, it } from 'vitest';
import { PACKAGE_NAME } from '../src/index.js';

describe('@xen-depriv/uid-allocator', () => {
  it('names itself', () => {
    expect(PACKAGE_NAME).toBe('@xen-depriv/uid-allocator');
  });
});
