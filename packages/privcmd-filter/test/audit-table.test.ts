import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
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
interface Call {
  name: string;
  library: string;
  phase: 'open' | 'restrict' | 'run' | 'close';
  kernel: string;
  reaches: string[];
  restricted: string;
  wrappers: string[];
  files: string[];
}
/** tools/qemu-xen-calls' list: every Xen library function QEMU 7.2 calls. */
interface XenCalls {
  functions: { name: string; library: string; files: string[] }[];
  wrappers: Record<string, string[]>;
  activeShims: string[];
}
const repo = join(__dirname, '..', '..', '..');
const audit = JSON.parse(
  readFileSync(join(__dirname, '..', 'audit', 'privcmd-ops.json'), 'utf8'),
) as {
  entries: Entry[];
  calls: Call[];
};
const byName = new Map(audit.entries.map((e) => [e.name, e]));
const xenCalls = JSON.parse(
  readFileSync(join(__dirname, 'vectors', 'qemu-7.2-xen-calls.json'), 'utf8'),
) as XenCalls;
const QEMU = join(repo, '.sources', 'qemu-7.2+dfsg');
const hasXenSources =
  existsSync(join(repo, '.sources')) &&
  readdirSync(join(repo, '.sources')).some((n) => /^xen-4\.17\./.test(n));
/** The installed privcmd headers: libxen-dev's copy, and the Linux uapi one. */
const PRIVCMD_HEADERS = [
  ['/usr/include/xen/sys/privcmd.h', 'libxen-dev'],
  ['/usr/include/xen/privcmd.h', 'linux-libc-dev'],
] as const;
const DOC = join(repo, 'docs', 'audits', 'privcmd-ops.md');

/** The names in `wanted` no row names, in order: what the checks below report. */
function unaudited(wanted: readonly string[], rows: readonly { name: string }[]): string[] {
  const have = new Set(rows.map((r) => r.name));
  return wanted.filter((n) => !have.has(n));
}
/** The cells of the table after `marker` (up to the next HTML comment). */
function docTable(doc: string, marker: string): string[][] {
  const from = doc.indexOf(marker);
  return doc
    .slice(from, doc.indexOf('<!--', from + marker.length))
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .map((l) => l.split('|').map((c) => c.trim()));
}

describe('audit table (audit/privcmd-ops.json)', () => {
  it('covers every IOCTL_PRIVCMD_* and every XEN_DMOP_*', () => {
    const privcmd = [...XEN_IOCTL_NAMES.values()].filter((n) => n.startsWith('IOCTL_PRIVCMD_'));
    expect(privcmd.filter((n) => !byName.has(n))).toEqual([]);
    expect(DM_OP_NAMES.filter((n) => n !== undefined && !byName.has(`XEN_DMOP_${n}`))).toEqual([]);
    expect(new Set(audit.entries.map((e) => e.class))).toEqual(
      new Set(['dm_op', 'restricted', 'needs_new_dm_op', 'unreachable']),
    );
  });
  for (const [header, pkg] of PRIVCMD_HEADERS) {
    it.skipIf(!existsSync(header))(
      `has a row for every IOCTL_PRIVCMD_* ${header} defines (skipped without ${pkg})`,
      () => {
        const defined = [
          ...readFileSync(header, 'utf8').matchAll(/^#define (IOCTL_PRIVCMD_[A-Z0-9_]+)\b/gm),
        ].map((m) => m[1] as string);
        expect(defined.length).toBeGreaterThan(5);
        expect(unaudited(defined, audit.entries)).toEqual([]);
      },
    );
  }
  it('has a row for every Xen library function QEMU 7.2 calls (test/vectors/qemu-7.2-xen-calls.json)', () => {
    const names = xenCalls.functions.map((f) => f.name);
    expect(names.length).toBeGreaterThan(50);
    for (const n of ['xc_interface_open', 'xendevicemodel_open', 'xentoolcore_restrict_all']) {
      expect(names).toContain(n);
    }
    expect(unaudited(names, audit.calls)).toEqual([]);
    // No row for a function QEMU does not call, and each row names the files that call it.
    expect(
      unaudited(
        audit.calls.map((c) => c.name),
        xenCalls.functions,
      ),
    ).toEqual([]);
    for (const c of audit.calls) {
      expect(c.files, c.name).toEqual(xenCalls.functions.find((f) => f.name === c.name)?.files);
    }
    // Built against Xen 4.17, QEMU gives no library function a body of its own.
    expect(xenCalls.activeShims).toEqual([]);
  });
  it('reports a missing row by name', () => {
    const [first, ...rest] = audit.calls;
    expect(
      unaudited(
        xenCalls.functions.map((f) => f.name),
        rest,
      ),
    ).toEqual([first?.name]);
    const withoutRestrict = audit.entries.filter((e) => e.name !== 'IOCTL_PRIVCMD_RESTRICT');
    expect(unaudited(['IOCTL_PRIVCMD_DM_OP', 'IOCTL_PRIVCMD_RESTRICT'], withoutRestrict)).toEqual([
      'IOCTL_PRIVCMD_RESTRICT',
    ]);
  });
  it('says what each call does before the restriction and what the restriction leaves of it', () => {
    const call = (n: string) => audit.calls.find((c) => c.name === n);
    for (const n of [
      'xc_interface_open',
      'xendevicemodel_open',
      'xenforeignmemory_open',
      'xenevtchn_open',
      'xengnttab_open',
      'xs_open',
    ]) {
      expect(call(n)?.phase, n).toBe('open');
    }
    const restrict = call('xentoolcore_restrict_all');
    expect(restrict?.phase).toBe('restrict');
    expect(restrict?.reaches).toEqual(['IOCTL_PRIVCMD_RESTRICT', 'IOCTL_EVTCHN_RESTRICT_DOMID']);
    expect(restrict?.kernel).toContain('dup2');
    expect(xenCalls.wrappers.xen_restrict).toEqual(['xentoolcore_restrict_all']);
    // Every op a call reaches is a row of the op table.
    for (const c of audit.calls) {
      expect(unaudited(c.reaches, audit.entries), c.name).toEqual([]);
      expect(c.kernel, c.name).not.toBe('');
      expect(c.restricted, c.name).not.toBe('');
    }
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
  it('every entry and every call is a row of docs/audits/privcmd-ops.md', () => {
    const doc = readFileSync(DOC, 'utf8');
    const ops = docTable(doc, '<!-- table:begin').map((c) => c.slice(1, 4).join(' '));
    for (const e of audit.entries) expect(ops).toContain(`${e.kind} \`${e.name}\` ${e.class}`);
    const calls = docTable(doc, '<!-- calls:begin').map((c) => c.slice(1, 4).join(' '));
    for (const c of audit.calls) expect(calls).toContain(`\`${c.name}\` ${c.library} ${c.phase}`);
    expect(calls.length).toBe(audit.calls.length + 2); // header and rule
  });
  it.skipIf(!existsSync(QEMU) || !hasXenSources)(
    'the committed list equals a fresh extraction (skipped without .sources: scripts/fetch-sources.sh)',
    () => {
      const r = spawnSync(
        process.execPath,
        [join(repo, 'tools', 'qemu-xen-calls', 'extract.mjs'), '--check'],
        { encoding: 'utf8' },
      );
      expect(`${r.stdout}${r.stderr}`.trim()).toBe('up to date');
      expect(r.status).toBe(0);
    },
  );
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
