import { mkdirSync, mkdtempSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_RLIMITS, plan, type RlimitName, verifyConfinement } from '../src/index.js';
import { X86_CAPS } from './fixtures.js';

const UID = 3_000_007;
const PID = 4242;
const p = plan({ domid: 7, binary: X86_CAPS.binary, stateDir: '/run/xd' }, X86_CAPS, {
  uid: UID,
  gid: UID,
});

const LIMIT_ROWS: Record<RlimitName, string> = {
  FSIZE: 'Max file size',
  CORE: 'Max core file size',
  MSGQUEUE: 'Max msgqueue size',
  LOCKS: 'Max file locks',
  MEMLOCK: 'Max locked memory',
  NPROC: 'Max processes',
  NOFILE: 'Max open files',
  AS: 'Max address space',
};

interface FakeDm {
  status: Record<string, string>;
  limits: Partial<Record<RlimitName, number>>;
  rootEntries: string[];
  ns: Record<string, string>;
  fds: Record<number, string>;
}

const good = (): FakeDm => ({
  status: {
    Uid: `${UID}\t${UID}\t${UID}\t${UID}`,
    Gid: `${UID}\t${UID}\t${UID}\t${UID}`,
    Groups: '',
    CapInh: '0000000000000000',
    CapPrm: '0000000000000000',
    CapEff: '0000000000000000',
    CapBnd: '0000000000000000',
    CapAmb: '0000000000000000',
    NoNewPrivs: '1',
    Seccomp: '2',
    Seccomp_filters: '1',
  },
  limits: {},
  rootEntries: [...p.rootEntries],
  ns: { mnt: 'mnt:[1]', ipc: 'ipc:[2]', net: 'net:[3]', uts: 'uts:[4]' },
  fds: { 0: '/dev/null', 1: p.paths.log, 2: p.paths.log, 3: 'socket:[77]' },
});

let proc: string;
beforeEach(() => {
  proc = mkdtempSync(join(tmpdir(), 'ql-fakeproc-'));
});
afterEach(() => rmSync(proc, { recursive: true, force: true }));

/** A /proc/PID as the kernel lays it out, for a DM that does not exist: verifyConfinement as a model. */
function fakeProc(dm: FakeDm, extraRoot: (root: string) => void = () => undefined): void {
  const base = join(proc, String(PID));
  mkdirSync(join(base, 'ns'), { recursive: true });
  mkdirSync(join(base, 'fd'));
  const root = join(base, 'root');
  mkdirSync(root, { mode: 0o755 });
  for (const e of dm.rootEntries) mkdirSync(join(root, e));
  extraRoot(root);
  writeFileSync(
    join(base, 'status'),
    Object.entries(dm.status)
      .map(([k, v]) => `${k}:\t${v}\n`)
      .join(''),
  );
  const rows = (Object.keys(DEFAULT_RLIMITS) as RlimitName[]).map((r) => {
    const v = dm.limits[r] ?? p.rlimits.find((x) => x.resource === r)!.hard;
    return `${LIMIT_ROWS[r].padEnd(26)}${String(v).padEnd(21)}${String(v).padEnd(21)}bytes     `;
  });
  writeFileSync(
    join(base, 'limits'),
    `Limit                     Soft Limit           Hard Limit           Units     \n${rows.join('\n')}\n`,
  );
  for (const [k, v] of Object.entries(dm.ns)) symlinkSync(v, join(base, 'ns', k));
  for (const [n, v] of Object.entries(dm.fds)) symlinkSync(v, join(base, 'fd', n));
}

const failed = () =>
  verifyConfinement(PID, p, { proc })
    .checks.filter((c) => !c.ok)
    .map((c) => c.name);

describe('verifyConfinement against a fake /proc (model of a DM)', () => {
  it('a DM matching its plan passes every check', () => {
    fakeProc(good());
    const r = verifyConfinement(PID, p, { proc });
    expect(r.checks.filter((c) => !c.ok)).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.checks.map((c) => c.name)).toContain('rlimit.NOFILE');
  });

  const breakOne: [string, (dm: FakeDm) => void, string[]][] = [
    [
      'saved uid 0',
      (d) => {
        d.status.Uid = `${UID}\t${UID}\t0\t${UID}`;
      },
      ['uid'],
    ],
    [
      'a supplementary group',
      (d) => {
        d.status.Groups = '27';
      },
      ['groups'],
    ],
    [
      'CapEff not empty',
      (d) => {
        d.status.CapEff = '0000000000200000';
      },
      ['capabilities.eff'],
    ],
    [
      'CapAmb not empty',
      (d) => {
        d.status.CapAmb = '0000000000000400';
      },
      ['capabilities.amb'],
    ],
    [
      'bounding set kept',
      (d) => {
        d.status.CapBnd = '000001ffffffffff';
      },
      ['capabilities.bnd'],
    ],
    [
      'no no-new-privs',
      (d) => {
        d.status.NoNewPrivs = '0';
      },
      ['noNewPrivs'],
    ],
    [
      'no seccomp',
      (d) => void Object.assign(d.status, { Seccomp: '0', Seccomp_filters: '0' }),
      ['seccomp', 'seccompFilters'],
    ],
    [
      'FSIZE raised',
      (d) => {
        d.limits.FSIZE = 1 << 30;
      },
      ['rlimit.FSIZE'],
    ],
    ['an extra root entry', (d) => void d.rootEntries.push('etc'), ['root.entries']],
    [
      'a stray fd on a host file',
      (d) => {
        d.fds[7] = '/etc/shadow';
      },
      ['fds.paths'],
    ],
    [
      'fd 3 not a socket',
      (d) => {
        d.fds[3] = '/dev/null';
      },
      ['fd.3'],
    ],
    [
      "the launcher's own QMP listener closed",
      (d) => {
        delete d.fds[3];
      },
      ['fd.3'],
    ],
    [
      'host net namespace',
      (d) => {
        d.ns.net = readlinkSync('/proc/self/ns/net');
      },
      ['namespace.net'],
    ],
  ];
  it.each(breakOne)('%s fails exactly that check', (_name, mutate, expected) => {
    const dm = good();
    mutate(dm);
    fakeProc(dm);
    expect(failed()).toEqual(expected);
  });

  it('a /dev/xen/privcmd node left in the root fails freshHandles', () => {
    fakeProc(good(), (root) => {
      mkdirSync(join(root, 'dev', 'xen'));
      writeFileSync(join(root, 'dev', 'xen', 'privcmd'), '');
    });
    expect(failed()).toEqual(['freshHandles']);
  });

  it('a socket at /run/xenstored/socket that is not the daemon socket (a proxy) passes', async () => {
    const server = createServer();
    try {
      await new Promise<void>((resolve) => {
        fakeProc(good(), (root) => {
          mkdirSync(join(root, 'run', 'xenstored'), { recursive: true });
          server.listen(join(root, 'run', 'xenstored', 'socket'), resolve);
        });
      });
      expect(failed()).toEqual([]);
    } finally {
      server.close();
    }
  });

  it('a non-socket at /run/xenstored/socket fails freshHandles', () => {
    fakeProc(good(), (root) => {
      mkdirSync(join(root, 'run', 'xenstored'), { recursive: true });
      writeFileSync(join(root, 'run', 'xenstored', 'socket'), '');
    });
    expect(failed()).toEqual(['freshHandles']);
  });

  it('an empty /dev/xen directory gives nothing and passes', () => {
    fakeProc(good(), (root) => mkdirSync(join(root, 'dev', 'xen')));
    expect(failed()).toEqual([]);
  });
});
