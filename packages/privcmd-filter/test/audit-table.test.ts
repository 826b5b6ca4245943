import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DM_OP_NAMES, XEN_IOCTL_NAMES } from '@xen-depriv/dmop-abi';
import { describe, expect, it } from 'vitest';
import { deviceModelAllowlist, qemuXenHvmProfile } from '../src/index.js';

interface Entry {
  kind: 'ioctl' | 'hypercall' | 'dm_op';
  name: string;
  class: 'dm_op' | 'restricted' | 'needs_new_dm_op' | 'unreachable';
  via: string[];
  uses: string[];
  note: string;
}
const repo = join(__dirname, '..', '..', '..');
const audit = JSON.parse(
  readFileSync(join(__dirname, '..', 'audit', 'privcmd-ops.json'), 'utf8'),
) as {
  entries: Entry[];
  noIoctl: string[];
};
const byName = new Map(audit.entries.map((e) => [e.name, e]));
const QEMU = join(repo, '.sources', 'qemu-7.2+dfsg');
/** Debian's libxen-dev copy of the Linux uapi header. */
const PRIVCMD_H = '/usr/include/xen/sys/privcmd.h';

describe('audit table (audit/privcmd-ops.json)', () => {
  it('covers every IOCTL_PRIVCMD_* and every XEN_DMOP_*', () => {
    const privcmd = [...XEN_IOCTL_NAMES.values()].filter((n) => n.startsWith('IOCTL_PRIVCMD_'));
    expect(privcmd.filter((n) => !byName.has(n))).toEqual([]);
    expect(DM_OP_NAMES.filter((n) => n !== undefined && !byName.has(`XEN_DMOP_${n}`))).toEqual([]);
    expect(new Set(audit.entries.map((e) => e.class))).toEqual(
      new Set(['dm_op', 'restricted', 'needs_new_dm_op', 'unreachable']),
    );
  });
  it.skipIf(!existsSync(PRIVCMD_H))(
    "has a row for every IOCTL_PRIVCMD_* Debian's installed header defines",
    () => {
      const defined = [
        ...readFileSync(PRIVCMD_H, 'utf8').matchAll(/^#define (IOCTL_PRIVCMD_[A-Z0-9_]+)\b/gm),
      ].map((m) => m[1] as string);
      expect(defined.length).toBeGreaterThan(5);
      expect(defined.filter((n) => !byName.has(n))).toEqual([]);
    },
  );
  it('every library call QEMU makes is classified: the rest only open, close, poll or unmap', () => {
    // A call the scan found but no row names lands in noIoctl; only these may be there.
    const harmless = /_(open|close|fd|pending|unmap|unmap_resource)$/;
    expect(audit.noIoctl.filter((fn) => !harmless.test(fn))).toEqual([]);
  });
  it('the qemu-xen-hvm profile allows only DM_OPs the audit found QEMU using', () => {
    for (const op of Object.keys(qemuXenHvmProfile.ops)) {
      const e = byName.get(`XEN_DMOP_${op}`);
      expect(e, op).toBeDefined();
      expect(e?.class, op).not.toBe('unreachable');
      expect(e?.uses.length, `${op} has QEMU call sites`).toBeGreaterThan(0);
    }
  });
  it('no audited op marked unreachable is allowed by the device-model seccomp allowlist', () => {
    const ioctlNumber = new Map([...XEN_IOCTL_NAMES].map(([v, n]) => [n, v]));
    const unreachable = audit.entries
      .filter((e) => e.kind === 'ioctl' && e.class === 'unreachable')
      .map((e) => e.name);
    expect(unreachable).toContain('IOCTL_PRIVCMD_HYPERCALL');
    for (const name of unreachable) {
      expect(deviceModelAllowlist.ioctls ?? [], name).not.toContain(ioctlNumber.get(name));
    }
  });
  it('every entry is a row of docs/audits/privcmd-ops.md with its class', () => {
    const doc = readFileSync(join(repo, 'docs', 'audits', 'privcmd-ops.md'), 'utf8');
    const rows = doc
      .split('\n')
      .filter((l) => l.startsWith('|'))
      .map((l) =>
        l
          .split('|')
          .map((c) => c.trim())
          .slice(1, 4)
          .join(' '),
      );
    for (const e of audit.entries) expect(rows).toContain(`${e.kind} \`${e.name}\` ${e.class}`);
  });
  it.skipIf(!existsSync(QEMU))(
    'every cited call site names a function the row is reached through (needs .sources, scripts/fetch-sources.sh)',
    () => {
      const files = new Map<string, string[]>();
      for (const e of audit.entries) {
        for (const use of e.uses) {
          const [file, line] = use.split(':') as [string, string];
          if (!files.has(file)) files.set(file, readFileSync(join(QEMU, file), 'utf8').split('\n'));
          const text = files.get(file)?.[Number(line) - 1] ?? '';
          const hit = e.via.some((v) =>
            v.endsWith('_*') ? text.includes(v.slice(0, -1)) : text.includes(`${v}(`),
          );
          expect(hit, `${e.name} at ${use}: ${text}`).toBe(true);
        }
      }
    },
  );
});
