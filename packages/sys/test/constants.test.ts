import { describe, expect, it } from 'vitest';
import { constants } from '../src/index.js';
import { binding } from '../src/native.js';
import { canRun } from './helpers.js';

describe('constants', () => {
  it.skipIf(!canRun)(
    'match the values gcc compiles from the Linux and glibc headers (the addon)',
    () => {
      expect({ ...constants }).toEqual(binding().constants);
    },
  );

  it('are frozen', () => {
    expect(Object.isFrozen(constants)).toBe(true);
    expect(constants.LOCK_NB).toBe(4);
  });
});
