import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  close,
  constants,
  memfdCreate,
  open,
  pidfdSendSignal,
  SpawnError,
  type SpawnSpec,
  spawnConfined,
  waitPid,
} from '../src/index.js';
import { canRunAsRoot, execDone, statusField, TEST_UID_BASE, tempDir } from './helpers.js';

const UID = TEST_UID_BASE + 100;
const GID = TEST_UID_BASE + 100;
const GROUPS = [TEST_UID_BASE + 101, TEST_UID_BASE + 102];
const SIGKILL = constants.SIGKILL;
// struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }: BPF_RET|BPF_K, SECCOMP_RET_ALLOW.
const ALLOW_ALL = new Uint8Array([0x06, 0, 0, 0, 0x00, 0x00, 0xff, 0x7f]);

const running: { pid: number; pidfd: number }[] = [];
afterEach(() => {
  for (const child of running.splice(0)) {
    try {
      pidfdSendSignal(child.pidfd, SIGKILL);
    } catch {
      // already gone
    }
    waitPid(child.pid);
    close(child.pidfd);
  }
});

function start(spec: SpawnSpec): { pid: number; pidfd: number } {
  const child = spawnConfined(spec);
  running.push(child);
  return child;
}

function spawnFailure(spec: SpawnSpec): SpawnError {
  try {
    const child = spawnConfined(spec);
    running.push(child);
  } catch (e) {
    if (e instanceof SpawnError) return e;
    throw e;
  }
  throw new Error('spawnConfined succeeded where a step was expected to fail');
}

/** A root holding only what /usr/bin/sleep needs: /usr bound read-only, and the usrmerge links. */
function makeRoot(base: string): string {
  const root = join(base, 'root');
  for (const d of ['usr', 'dev', 'data', 'work']) mkdirSync(join(root, d), { recursive: true });
  for (const l of ['bin', 'lib', 'lib64', 'sbin']) symlinkSync(`usr/${l}`, join(root, l));
  return root;
}

describe.skipIf(!canRunAsRoot)(
  'spawnConfined (real processes, as root, test uids 3970100+)',
  () => {
    it('applies uid, gid, groups, no caps, no_new_privs, seccomp, the new root, mounts, namespaces, rlimits and exactly the declared fds', async () => {
      using dir = tempDir('spawn');
      const root = makeRoot(dir.path);
      const hostData = join(dir.path, 'host-data');
      mkdirSync(hostData);
      writeFileSync(join(hostData, 'file'), 'hello');
      const devNull = open('/dev/null', constants.O_RDWR);
      const memfd = memfdCreate('fd-five');
      try {
        const child = start({
          file: '/usr/bin/sleep',
          argv: ['sleep', '1000'],
          env: { PATH: '/usr/bin' },
          cwd: '/work',
          fds: [
            { target: 0, source: devNull },
            { target: 5, source: memfd },
            { target: 2, source: devNull },
          ],
          namespaces: ['mount', 'ipc', 'net', 'uts'],
          mounts: [
            { type: 'bind', source: '/usr', target: join(root, 'usr') },
            { type: 'bind', source: hostData, target: join(root, 'data') },
            { type: 'tmpfs', target: join(root, 'dev'), mode: 0o755, size: 65536, devices: true },
            {
              type: 'mknod',
              path: join(root, 'dev/null'),
              kind: 'char',
              major: 1,
              minor: 3,
              mode: 0o666,
              uid: UID,
              gid: GID,
            },
            { type: 'tmpfs', target: join(root, 'work'), mode: 0o700, uid: UID, gid: GID },
          ],
          root: { path: root, mode: 'pivot_root' },
          rlimits: [
            { resource: 'RLIMIT_NOFILE', soft: 64, hard: 128 },
            { resource: constants.RLIMIT_CORE, soft: 0, hard: 0 },
            { resource: 'RLIMIT_AS', soft: 'unlimited', hard: 'unlimited' },
          ],
          uid: UID,
          gid: GID,
          groups: GROUPS,
          seccomp: ALLOW_ALL,
          dropCapabilityBoundingSet: true,
        });
        const { pid } = child;
        await execDone(pid, 'sleep');
        expect(statusField(pid, 'Uid')).toBe(`${UID}\t${UID}\t${UID}\t${UID}`);
        expect(statusField(pid, 'Gid')).toBe(`${GID}\t${GID}\t${GID}\t${GID}`);
        expect(statusField(pid, 'Groups')).toBe(GROUPS.join(' '));
        expect(statusField(pid, 'CapEff')).toBe('0000000000000000');
        expect(statusField(pid, 'CapPrm')).toBe('0000000000000000');
        expect(statusField(pid, 'CapBnd')).toBe('0000000000000000');
        expect(statusField(pid, 'NoNewPrivs')).toBe('1');
        expect(statusField(pid, 'Seccomp')).toBe('2');

        // readlink shows "/" after pivot_root: compare the root by device and inode instead.
        const childRoot = statSync(`/proc/${pid}/root/.`);
        expect(readlinkSync(`/proc/${pid}/root`)).toBe('/');
        const expectedRoot = statSync(root);
        expect([childRoot.dev, childRoot.ino]).toEqual([expectedRoot.dev, expectedRoot.ino]);
        const cwd = statSync(`/proc/${pid}/cwd/.`);
        expect(cwd.uid).toBe(UID);
        expect(cwd.mode & 0o7777).toBe(0o700);

        for (const ns of ['mnt', 'ipc', 'net', 'uts']) {
          expect(readlinkSync(`/proc/${pid}/ns/${ns}`), ns).not.toBe(
            readlinkSync(`/proc/self/ns/${ns}`),
          );
        }
        expect(readlinkSync(`/proc/${pid}/ns/pid`)).toBe(readlinkSync('/proc/self/ns/pid'));

        // Read-only binds: root itself cannot write through them.
        const dataInChild = `/proc/${pid}/root/data`;
        expect(readFileSync(join(dataInChild, 'file'), 'utf8')).toBe('hello');
        expect(() => writeFileSync(join(dataInChild, 'new'), 'x')).toThrow(
          expect.objectContaining({ code: 'EROFS' }),
        );
        expect(() => writeFileSync(`/proc/${pid}/root/usr/xen-depriv-probe`, 'x')).toThrow(
          expect.objectContaining({ code: 'EROFS' }),
        );
        const mountinfo = readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n');
        const dataMount = mountinfo.find((l) => l.split(' ')[4] === '/data');
        expect(dataMount?.split(' ')[5]?.split(',')).toContain('ro');
        const devMount = mountinfo.find((l) => l.split(' ')[4] === '/dev');
        expect(devMount).toContain(' - tmpfs ');
        expect(devMount).toMatch(/size=64k/);

        const node = statSync(`/proc/${pid}/root/dev/null`);
        expect(node.isCharacterDevice()).toBe(true);
        expect(node.rdev).toBe((1 << 8) | 3);
        expect([node.uid, node.gid, node.mode & 0o7777]).toEqual([UID, GID, 0o666]);

        const limits = readFileSync(`/proc/${pid}/limits`, 'utf8');
        expect(limits).toMatch(/^Max open files\s+64\s+128\s+files\s*$/m);
        expect(limits).toMatch(/^Max core file size\s+0\s+0\s+bytes\s*$/m);
        expect(limits).toMatch(/^Max address space\s+unlimited\s+unlimited\s+bytes\s*$/m);

        expect(
          readdirSync(`/proc/${pid}/fd`)
            .map(Number)
            .sort((a, b) => a - b),
        ).toEqual([0, 2, 5]);
        expect(readlinkSync(`/proc/${pid}/fd/5`)).toBe('/memfd:fd-five (deleted)');
        expect(readlinkSync(`/proc/${pid}/fd/0`)).toBe('/dev/null');
        expect(readFileSync(`/proc/${pid}/environ`, 'utf8')).toBe('PATH=/usr/bin\0');
        expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toBe('sleep\x001000\0');
        // setsid: the child leads a session of its own.
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        expect(fields[3]).toBe(String(pid));
        expect(fields[2]).toBe(String(pid));
      } finally {
        close(devNull);
        close(memfd);
      }
    });

    it('a pid namespace makes the child pid 1 of its own namespace; chroot keeps the mount namespace optional', async () => {
      const child = start({
        file: '/usr/bin/sleep',
        argv: ['sleep', '1000'],
        env: {},
        namespaces: ['pid'],
        root: { path: '/', mode: 'chroot' },
      });
      expect(statusField(child.pid, 'NSpid')).toBe(`${child.pid}\t1`);
      expect(readlinkSync(`/proc/${child.pid}/ns/pid`)).not.toBe(readlinkSync('/proc/self/ns/pid'));
      expect(readlinkSync(`/proc/${child.pid}/ns/mnt`)).toBe(readlinkSync('/proc/self/ns/mnt'));
      // Without uid/gid the child keeps root's identity; no fds were declared, so none are open.
      expect(statusField(child.pid, 'Uid')).toBe('0\t0\t0\t0');
      expect(statusField(child.pid, 'NoNewPrivs')).toBe('1');
      expect(statusField(child.pid, 'Seccomp')).toBe('0');
      // Without dropCapabilityBoundingSet the bounding set is the parent's (full, as root).
      expect(statusField(child.pid, 'CapBnd')).toBe(statusField(process.pid, 'CapBnd'));
      expect(readdirSync(`/proc/${child.pid}/fd`)).toEqual([]);
    });

    it("fds whose sources are each other's targets land where declared", async () => {
      const a = memfdCreate('first');
      const b = memfdCreate('second');
      try {
        // Each source is also another entry's target: moving one must not clobber the other.
        const child = start({
          file: '/usr/bin/sleep',
          argv: ['sleep', '1000'],
          env: {},
          fds: [
            { target: a, source: b },
            { target: b, source: a },
          ],
        });
        await execDone(child.pid, 'sleep');
        expect(readlinkSync(`/proc/${child.pid}/fd/${a}`)).toBe('/memfd:second (deleted)');
        expect(readlinkSync(`/proc/${child.pid}/fd/${b}`)).toBe('/memfd:first (deleted)');
        expect(
          readdirSync(`/proc/${child.pid}/fd`)
            .map(Number)
            .sort((x, y) => x - y),
        ).toEqual([a, b].sort((x, y) => x - y));
      } finally {
        close(a);
        close(b);
      }
    });

    it('the caller reaps the child: exit code and signal through waitPid', () => {
      const ok = spawnConfined({ file: '/bin/sh', argv: ['sh', '-c', 'exit 7'], env: {} });
      expect(waitPid(ok.pid)).toEqual({ pid: ok.pid, exitCode: 7, signal: null });
      close(ok.pidfd);
      const slow = start({ file: '/usr/bin/sleep', argv: ['sleep', '1000'], env: {} });
      expect(waitPid(slow.pid, { noHang: true })).toBeNull();
      pidfdSendSignal(slow.pidfd, constants.SIGTERM);
      running.pop();
      expect(waitPid(slow.pid)).toEqual({ pid: slow.pid, exitCode: null, signal: 15 });
      close(slow.pidfd);
      expect(() => waitPid(slow.pid)).toThrow(
        expect.objectContaining({ code: 'ECHILD', syscall: 'waitpid' }),
      );
    });
  },
);

describe.skipIf(!canRunAsRoot)(
  'spawnConfined failing steps (real processes): step name and errno',
  () => {
    const base: SpawnSpec = { file: '/usr/bin/true', argv: ['true'], env: {} };

    it('execve: a missing binary is ENOENT', () => {
      const e = spawnFailure({ ...base, file: '/nonexistent/qemu' });
      expect([e.step, e.code, e.errno]).toEqual(['execve', 'ENOENT', 2]);
      expect(e.message).toBe("spawnConfined: step 'execve' failed with ENOENT (/nonexistent/qemu)");
    });

    it('execve: a binary the target uid may not execute is EACCES', () => {
      using dir = tempDir('noexec');
      const bin = join(dir.path, 'bin');
      writeFileSync(bin, '#!/bin/sh\n', { mode: 0o700 });
      const e = spawnFailure({ ...base, file: bin, uid: UID, gid: GID });
      expect([e.step, e.code]).toEqual(['execve', 'EACCES']);
    });

    it('execve: a file that is no executable format is ENOEXEC', () => {
      using dir = tempDir('enoexec');
      const bin = join(dir.path, 'garbage');
      writeFileSync(bin, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3, 4, 5, 6, 7, 8]), {
        mode: 0o755,
      });
      const e = spawnFailure({ ...base, file: bin });
      expect([e.step, e.code, e.errno]).toEqual(['execve', 'ENOEXEC', 8]);
    });

    it('chroot: a missing root directory is ENOENT', () => {
      const e = spawnFailure({ ...base, root: { path: '/nonexistent/root', mode: 'chroot' } });
      expect([e.step, e.code]).toEqual(['chroot', 'ENOENT']);
      expect(e.message).toContain('/nonexistent/root');
    });

    it('pivot_root: a missing root directory is ENOENT', () => {
      const e = spawnFailure({
        ...base,
        namespaces: ['mount'],
        root: { path: '/nonexistent/root', mode: 'pivot_root' },
      });
      expect([e.step, e.code]).toEqual(['pivot_root', 'ENOENT']);
    });

    it('chdir: a missing cwd is ENOENT', () => {
      const e = spawnFailure({ ...base, cwd: '/nonexistent/cwd' });
      expect([e.step, e.code]).toEqual(['chdir', 'ENOENT']);
    });

    it('mount: a bind of a missing source is ENOENT and names the entry', () => {
      using dir = tempDir('mnt');
      const e = spawnFailure({
        ...base,
        namespaces: ['mount'],
        mounts: [
          { type: 'tmpfs', target: dir.path },
          { type: 'bind', source: '/nonexistent/src', target: dir.path },
        ],
      });
      expect([e.step, e.code]).toEqual(['mount', 'ENOENT']);
      expect(e.message).toContain(`entry 1 (${dir.path})`);
    });

    it('mknod: a node in a missing directory is ENOENT', () => {
      const e = spawnFailure({
        ...base,
        namespaces: ['mount'],
        mounts: [
          {
            type: 'mknod',
            path: '/nonexistent/dev/null',
            kind: 'char',
            major: 1,
            minor: 3,
            mode: 0o666,
            uid: UID,
            gid: GID,
          },
        ],
      });
      expect([e.step, e.code]).toEqual(['mknod', 'ENOENT']);
    });

    it('fds: a source that is not open is EBADF', () => {
      const e = spawnFailure({ ...base, fds: [{ target: 3, source: 999_999 }] });
      expect([e.step, e.code]).toEqual(['fds', 'EBADF']);
    });

    it('setrlimit: a hard limit above fs.nr_open is EPERM', () => {
      const nrOpen = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8'));
      const e = spawnFailure({
        ...base,
        rlimits: [{ resource: 'RLIMIT_NOFILE', soft: 16, hard: nrOpen + 1 }],
      });
      expect([e.step, e.code]).toEqual(['setrlimit', 'EPERM']);
    });

    it('setgroups: more than NGROUPS_MAX groups is EINVAL', () => {
      const groups = Array.from({ length: 65_537 }, (_, i) => TEST_UID_BASE + i);
      const e = spawnFailure({ ...base, groups });
      expect([e.step, e.code]).toEqual(['setgroups', 'EINVAL']);
    });

    it('seccomp: a program with an invalid opcode is EINVAL, and the binary never runs', () => {
      using dir = tempDir('seccomp');
      const marker = join(dir.path, 'ran');
      const bad = new Uint8Array([0xff, 0xff, 0, 0, 0, 0, 0, 0]);
      const e = spawnFailure({
        file: '/usr/bin/touch',
        argv: ['touch', marker],
        env: {},
        seccomp: bad,
      });
      expect([e.step, e.code]).toEqual(['seccomp', 'EINVAL']);
      expect(existsSync(marker)).toBe(false);
    });

    it('seccomp: without no_new_privs an unprivileged child may not install a filter (EACCES)', () => {
      const e = spawnFailure({
        ...base,
        uid: UID,
        gid: GID,
        noNewPrivs: false,
        seccomp: ALLOW_ALL,
      });
      expect([e.step, e.code]).toEqual(['seccomp', 'EACCES']);
    });
  },
);

describe('spawnConfined rejects a bad spec before forking (TypeError)', () => {
  const base: SpawnSpec = { file: '/usr/bin/true', argv: ['true'], env: {} };
  const bad: [string, unknown, string][] = [
    [
      'uid -1',
      { ...base, uid: -1 },
      'spawnConfined uid: expected an integer in [0, 4294967294], got -1',
    ],
    ['uid 2^32-1', { ...base, uid: 2 ** 32 - 1 }, 'spawnConfined uid'],
    ['uid without gid', { ...base, uid: 3_970_000 }, 'uid and gid given together'],
    [
      'dropCapabilityBoundingSet not a boolean',
      { ...base, dropCapabilityBoundingSet: 'yes' },
      'spawnConfined dropCapabilityBoundingSet: expected a boolean, got "yes"',
    ],
    ['gid without uid', { ...base, gid: 3_970_000 }, 'uid and gid given together'],
    [
      'non-string argv',
      { ...base, argv: ['a', 1] },
      'spawnConfined argv[1]: expected a string, got 1',
    ],
    ['empty argv', { ...base, argv: [] }, 'spawnConfined argv'],
    ['env key with =', { ...base, env: { 'A=B': 'x' } }, 'spawnConfined env key'],
    ['NUL in file', { ...base, file: '/bin/t\0rue' }, 'NUL'],
    ['relative cwd', { ...base, cwd: 'tmp' }, 'absolute path'],
    [
      'duplicate fd target',
      {
        ...base,
        fds: [
          { target: 3, source: 0 },
          { target: 3, source: 1 },
        ],
      },
      'fds[1].target',
    ],
    ['negative fd', { ...base, fds: [{ target: 3, source: -1 }] }, 'fds[0].source'],
    ['unknown namespace', { ...base, namespaces: ['user'] }, 'namespaces[0]'],
    [
      'mounts without a mount namespace',
      { ...base, mounts: [{ type: 'tmpfs', target: '/mnt' }] },
      "'mount' namespace",
    ],
    [
      'pivot_root without a mount namespace',
      { ...base, root: { path: '/', mode: 'pivot_root' } },
      "'mount' namespace",
    ],
    [
      'soft above hard',
      { ...base, rlimits: [{ resource: 'RLIMIT_NOFILE', soft: 10, hard: 5 }] },
      'hard limit 5',
    ],
    [
      'unknown rlimit name',
      { ...base, rlimits: [{ resource: 'RLIMIT_NOPE', soft: 1, hard: 1 }] },
      'resource',
    ],
    ['seccomp not a multiple of 8', { ...base, seccomp: new Uint8Array(12) }, '12 bytes'],
    ['seccomp empty', { ...base, seccomp: new Uint8Array(0) }, '0 bytes'],
    ['spec not an object', null, 'spawnConfined spec'],
  ];
  it.each(bad)('%s', (_, spec, message) => {
    expect(() => spawnConfined(spec as SpawnSpec)).toThrow(TypeError);
    expect(() => spawnConfined(spec as SpawnSpec)).toThrow(message);
  });
});
