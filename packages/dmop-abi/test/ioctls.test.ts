import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XEN_IOCTL_NAMES } from '@xen-depriv/dmop-abi';
import { describe, expect, it } from 'vitest';

const haveGcc = (() => {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    return existsSync('/usr/include/xen/sys/privcmd.h');
  } catch {
    return false;
  }
})();

// IRQFD/IOEVENTFD are newer than Debian bookworm's headers.
const NOT_IN_BOOKWORM = new Set(['IOCTL_PRIVCMD_IRQFD', 'IOCTL_PRIVCMD_IOEVENTFD']);

describe('ioctl request numbers', () => {
  it.skipIf(!haveGcc)(
    'equal what gcc computes from Debian /usr/include/xen/sys headers (needs gcc and libxen-dev)',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'pf-ioc-'));
      try {
        const names = [...XEN_IOCTL_NAMES.values()].filter((n) => !NOT_IN_BOOKWORM.has(n));
        const src = `#include <stdio.h>
#include <sys/ioctl.h>
#include <xenctrl.h>
#define __user
#include <xen/sys/privcmd.h>
#include <xen/sys/evtchn.h>
#include <xen/sys/gntdev.h>
int main(void){${names.map((n) => `printf("%s %lu\\n","${n}",(unsigned long)(${n}));`).join('')}return 0;}`;
        writeFileSync(join(dir, 'ioc.c'), src);
        execFileSync('gcc', ['-o', join(dir, 'ioc'), join(dir, 'ioc.c')]);
        const out = execFileSync(join(dir, 'ioc'), { encoding: 'utf8' });
        const fromGcc = new Map(
          out
            .trim()
            .split('\n')
            .map((l) => [l.split(' ')[0], Number(l.split(' ')[1])]),
        );
        const ours = new Map(
          [...XEN_IOCTL_NAMES].filter(([, n]) => !NOT_IN_BOOKWORM.has(n)).map(([v, n]) => [n, v]),
        );
        expect(ours).toEqual(fromGcc);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
  it('IRQFD and IOEVENTFD are _IOW(P, 8/9) of 24- and 48-byte structs (Linux 6.7 include/uapi/xen/privcmd.h)', () => {
    const iow = (nr: number, size: number) => ((1 << 30) | (size << 16) | (0x50 << 8) | nr) >>> 0;
    const byName = new Map([...XEN_IOCTL_NAMES].map(([v, n]) => [n, v]));
    expect(byName.get('IOCTL_PRIVCMD_IRQFD')).toBe(iow(8, 24));
    expect(byName.get('IOCTL_PRIVCMD_IOEVENTFD')).toBe(iow(9, 48));
  });
});
