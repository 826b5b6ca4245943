import { describe, expect, it } from 'vitest';
import { PACKAGE_NAME } from '../src/index.js';

describe('@xen-depriv/depriv-launcher', () => {
  it('names itself', () => {
    expect(PACKAGE_NAME).toBe('@xen-depriv/depriv-launcher');
  });
});
