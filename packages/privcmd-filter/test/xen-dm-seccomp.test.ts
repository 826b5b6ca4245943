import { IOCTL_PRIVCMD_HYPERCALL } from '@xen-depriv/dmop-abi';
import { describe, expect, it } from 'vitest';
import {
  compileSeccomp,
  deviceModelAllowlist,
  PolicyError,
  xenDeviceModelSeccomp,
} from '../src/index.js';
import {
  AUDIT_ARCH_X86_64,
  runSeccomp,
  SECCOMP_RET,
  X86_64_SYSCALLS,
} from '../src/seccomp-entry.js';

const ioctlData = (request: number) => ({
  nr: X86_64_SYSCALLS.ioctl,
  arch: AUDIT_ARCH_X86_64,
  args: [3n, BigInt(request)],
});

describe('xenDeviceModelSeccomp', () => {
  it('defaults to init-hypercall: the device-model list plus IOCTL_PRIVCMD_HYPERCALL', () => {
    const s = xenDeviceModelSeccomp();
    expect(s.profile).toBe('privcmd-filter/deviceModelAllowlist+IOCTL_PRIVCMD_HYPERCALL');
    expect(s.allowlist.ioctls).toContain(IOCTL_PRIVCMD_HYPERCALL);
    expect(runSeccomp(s.program, ioctlData(IOCTL_PRIVCMD_HYPERCALL))).toBe(SECCOMP_RET.ALLOW);
  });

  it('strict is the device-model list alone and refuses the HYPERCALL ioctl with ENOTTY', () => {
    const s = xenDeviceModelSeccomp({ mode: 'strict' });
    expect(s.profile).toBe('privcmd-filter/deviceModelAllowlist');
    expect(s.program).toEqual(compileSeccomp(deviceModelAllowlist));
    expect(runSeccomp(s.program, ioctlData(IOCTL_PRIVCMD_HYPERCALL))).toBe(SECCOMP_RET.ERRNO | 25);
  });

  it('refuses an unknown mode with what it expected and saw', () => {
    expect(() => xenDeviceModelSeccomp({ mode: 'loose' as never })).toThrow(PolicyError);
    expect(() => xenDeviceModelSeccomp({ mode: 'loose' as never })).toThrow(
      "/mode: expected 'init-hypercall' or 'strict', got \"loose\"",
    );
  });
});
