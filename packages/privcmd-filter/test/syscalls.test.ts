import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { X86_64_SYSCALLS } from '../src/seccomp-entry.js';

const HEADER = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h';

describe('X86_64_SYSCALLS', () => {
  it.skipIf(!existsSync(HEADER))(
    'equals the __NR_* of the installed unistd_64.h (needs linux-libc-dev)',
    () => {
      const fromHeader: Record<string, number> = {};
      for (const m of readFileSync(HEADER, 'utf8').matchAll(/^#define __NR_(\w+)\s+(\d+)\s*$/gm)) {
        fromHeader[m[1] as string] = Number(m[2]);
      }
      expect({ ...X86_64_SYSCALLS }).toEqual(fromHeader);
    },
  );
  it('has the numbers the seccomp filter relies on', () => {
    expect(X86_64_SYSCALLS.ioctl).toBe(16);
    expect(X86_64_SYSCALLS.getpid).toBe(39);
    expect(X86_64_SYSCALLS.execve).toBe(59);
  });
});
