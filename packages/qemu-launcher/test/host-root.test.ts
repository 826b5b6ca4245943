import { describe, expect, it } from 'vitest';
import { hostRootIsRamfs } from '../src/sys-spawner.js';

describe('hostRootIsRamfs (mountinfo text, no OS access)', () => {
  it('is true for a dom0 that still runs from its initramfs (pivot_root is EINVAL there)', () => {
    expect(
      hostRootIsRamfs('1 1 0:2 / / rw - rootfs rootfs rw\n22 1 0:20 / /proc rw - proc proc rw\n'),
    ).toBe(true);
  });
  it('is false for an ordinary root filesystem, and for rootfs mounted elsewhere', () => {
    expect(hostRootIsRamfs('25 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n')).toBe(false);
    expect(hostRootIsRamfs('30 25 0:2 / /mnt rw - rootfs rootfs rw\n')).toBe(false);
  });
  it('reads this host when given nothing (a boolean either way)', () => {
    expect(typeof hostRootIsRamfs()).toBe('boolean');
  });
});
