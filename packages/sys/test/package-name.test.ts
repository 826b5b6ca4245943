import { describe, expect, it } from 'vitest';
import { PACKAGE_NAME } from '../src/index.js';

describe('@xen-depriv/sys', () => {
  it('names itself', () => {
    expect(PACKAGE_NAME).toBe('@xen-depriv/sys');
  });
});
