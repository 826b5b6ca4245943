import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as abi from '../src/layout.js';
import { XEN_IOCTL_NAMES } from '../src/layout.js';

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

/** Hypercall numbers and sub-ops the simulated hypervisor answers, by their C names. */
const HYPERCALL_FACTS = [
  '__HYPERVISOR_dm_op',
  '__HYPERVISOR_memory_op',
  '__HYPERVISOR_multicall',
  '__HYPERVISOR_xen_version',
  '__HYPERVISOR_event_channel_op',
  '__HYPERVISOR_hvm_op',
  'XENVER_version',
  'XENVER_extraversion',
  'HVMOP_set_param',
  'HVMOP_get_param',
  'XENMEM_populate_physmap',
  'XENMEM_acquire_resource',
  'XENMEM_resource_grant_table',
  'XENMEM_resource_ioreq_server',
  'HVM_NR_PARAMS',
  'NR_VIRQS',
  'HVM_PARAM_IOREQ_PFN',
  'HVM_PARAM_BUFIOREQ_PFN',
  'HVM_PARAM_IOREQ_SERVER_PFN',
  'HVM_PARAM_NR_IOREQ_SERVER_PAGES',
  'SHUTDOWN_poweroff',
  'SHUTDOWN_reboot',
  'DOMID_FIRST_RESERVED',
  'DOMID_SELF',
  'DOMID_INVALID',
] as const;

describe('hypercall numbers and constants', () => {
  it.skipIf(!haveGcc)(
    'equal what gcc computes from Debian /usr/include/xen (needs gcc and libxen-dev)',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'abi-hc-'));
      try {
        const src = `#include <stdio.h>
#include <xenctrl.h>
#include <xen/memory.h>
#include <xen/version.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
int main(void){${HYPERCALL_FACTS.map((n) => `printf("%s %ld\\n","${n}",(long)(${n}));`).join('')}printf("XENMEM_resource_ioreq_server_frame_ioreq(0) %ld\\n",(long)XENMEM_resource_ioreq_server_frame_ioreq(0));return 0;}`;
        writeFileSync(join(dir, 'hc.c'), src);
        execFileSync('gcc', ['-o', join(dir, 'hc'), join(dir, 'hc.c')]);
        const out = execFileSync(join(dir, 'hc'), { encoding: 'utf8' });
        const fromGcc = Object.fromEntries(
          out
            .trim()
            .split('\n')
            .map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]),
        );
        const ours: Record<string, number> = Object.fromEntries(
          HYPERCALL_FACTS.map((n) => [n, (abi as unknown as Record<string, number>)[n] as number]),
        );
        ours['XENMEM_resource_ioreq_server_frame_ioreq(0)'] =
          abi.XENMEM_resource_ioreq_server_frame_ioreq(0);
        expect(ours).toEqual(fromGcc);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
