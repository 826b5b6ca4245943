import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IOCTL_PRIVCMD_HYPERCALL } from '@xen-depriv/dmop-abi';
import { describe, expect, it } from 'vitest';
import { TAP_IOCTLS } from '../src/allowlist.js';
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

  it('both modes allow the tun/tap ioctls of a NIC passed as a descriptor, not TUNSETIFF', () => {
    for (const mode of ['init-hypercall', 'strict'] as const) {
      const s = xenDeviceModelSeccomp({ mode });
      for (const request of TAP_IOCTLS) {
        expect(s.allowlist.ioctls, `${mode} 0x${request.toString(16)}`).toContain(request);
        expect(runSeccomp(s.program, ioctlData(request))).toBe(SECCOMP_RET.ALLOW);
      }
      // TUNSETIFF (attach a new interface) and TUNSETSTEERINGEBPF stay refused with ENOTTY.
      for (const request of [0x400454ca, 0x800454e0]) {
        expect(runSeccomp(s.program, ioctlData(request))).toBe(SECCOMP_RET.ERRNO | 25);
      }
    }
    expect(deviceModelAllowlist.ioctls).toEqual(expect.arrayContaining([...TAP_IOCTLS]));
  });

  it('refuses an unknown mode with what it expected and saw', () => {
    expect(() => xenDeviceModelSeccomp({ mode: 'loose' as never })).toThrow(PolicyError);
    expect(() => xenDeviceModelSeccomp({ mode: 'loose' as never })).toThrow(
      "/mode: expected 'init-hypercall' or 'strict', got \"loose\"",
    );
  });
});

const TAP_NAMES = [
  'TUNGETFEATURES',
  'TUNSETOFFLOAD',
  'TUNGETIFF',
  'TUNSETSNDBUF',
  'TUNGETVNETHDRSZ',
  'TUNSETVNETHDRSZ',
  'TUNSETQUEUE',
  'TUNSETVNETLE',
  'TUNSETVNETBE',
] as const;
const haveTunHeader =
  spawnSync('gcc', ['--version']).status === 0 && existsSync('/usr/include/linux/if_tun.h');

describe('TAP_IOCTLS', () => {
  it.skipIf(!haveTunHeader)(
    'equal gcc over /usr/include/linux/if_tun.h (needs gcc and linux-libc-dev)',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'pf-tun-'));
      try {
        writeFileSync(
          join(dir, 't.c'),
          `#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/if_tun.h>
int main(void){${TAP_NAMES.map((n) => `printf("%u\\n", (unsigned)${n});`).join('')}return 0;}`,
        );
        execFileSync('gcc', ['-o', join(dir, 't'), join(dir, 't.c')]);
        const got = execFileSync(join(dir, 't'), { encoding: 'utf8' })
          .trim()
          .split('\n')
          .map(Number);
        expect(got).toEqual([...TAP_IOCTLS]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
