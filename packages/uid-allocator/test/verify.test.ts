import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnConfined, waitPid } from '@xen-depriv/sys';
import { afterAll, describe, expect, it } from 'vitest';
import { processesOfUid, UidAllocatorError, verifyEmpty } from '../src/index.js';
import { canRunAsRoot, pollUntil, UID_BASE } from './helpers.js';

// This file's uids: 3,100,100..3,100,199.
const U = UID_BASE + 100;

function fakeProc(): { root: string; cleanup: () => void } {
  const root = mkdtempSync(join(tmpdir(), 'uid-allocator-proc-'));
  const proc = (pid: number, state: string, uids: number[]) => {
    mkdirSync(join(root, String(pid)));
    writeFileSync(
      join(root, String(pid), 'status'),
      `Name:\tp${pid}\nUmask:\t0022\nState:\t${state} (x)\nTgid:\t${pid}\nUid:\t${uids.join('\t')}\nGid:\t0\t0\t0\t0\n`,
    );
  };
  proc(10, 'S', [U, 1, 1, 1]); // real
  proc(11, 'R', [1, U, 1, 1]); // effective
  proc(12, 'D', [1, 1, U, 1]); // saved
  proc(13, 'T', [1, 1, 1, U]); // fs
  proc(14, 'Z', [U, U, U, U]); // zombie: runs nothing
  proc(15, 'S', [U + 1, U + 1, U + 1, U + 1]);
  mkdirSync(join(root, 'self'));
  mkdirSync(join(root, 'sysvipc'));
  writeFileSync(
    join(root, 'sysvipc', 'shm'),
    '       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n' +
      `         0         7  1600                  4096   100   100      0 ${U}   100     0     0 0 0 0 4096 0\n` +
      '         0         8  1600                  4096   100   100      0     0     0     0     0 0 0 0 4096 0\n',
  );
  writeFileSync(
    join(root, 'sysvipc', 'msg'),
    '       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n' +
      ` 305419896         3   600           0          0     0     0     0     0 ${U}   100 0 0 0\n`,
  );
  writeFileSync(
    join(root, 'sysvipc', 'sem'),
    '       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n',
  );
  return { root, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

describe('verifyEmpty against a fake /proc (model)', () => {
  const { root, cleanup } = fakeProc();
  afterAll(cleanup);

  it('finds a process by each of its real, effective, saved and fs uid, and skips zombies', () => {
    const r = verifyEmpty(U, { procRoot: root, places: [] });
    expect(r.processes.map((p) => [p.pid, p.state, p.uids])).toEqual([
      [10, 'S', [U, 1, 1, 1]],
      [11, 'R', [1, U, 1, 1]],
      [12, 'D', [1, 1, U, 1]],
      [13, 'T', [1, 1, 1, U]],
    ]);
    expect(r.empty).toBe(false);
  });

  it('finds SysV IPC objects by owner uid and by creator uid, columns found by header', () => {
    const r = verifyEmpty(U, { procRoot: root, places: [] });
    expect(r.ipc).toEqual([
      { kind: 'shm', id: 7, key: 0, uid: U, cuid: 0 },
      { kind: 'msg', id: 3, key: 305419896, uid: 0, cuid: U },
    ]);
  });

  it('reports a uid with nothing as empty', () => {
    expect(verifyEmpty(U + 2, { procRoot: root, places: [] })).toEqual({
      uid: U + 2,
      empty: true,
      processes: [],
      files: [],
      ipc: [],
      truncated: [],
    });
  });

  it('refuses root and system uids', () => {
    expect(() => verifyEmpty(0)).toThrow(UidAllocatorError);
    expect(() => verifyEmpty(999)).toThrow(
      'verifyEmpty uid: expected a uid >= 1000 (never root or a system account), got 999',
    );
  });
});

describe.skipIf(!canRunAsRoot)('verifyEmpty on the real host (as root, uids 3100101..)', () => {
  it('finds files the uid owns in a shared place, in world-writable subdirectories too', () => {
    const uid = U + 1;
    const place = mkdtempSync(join(tmpdir(), 'uid-allocator-place-'));
    try {
      chmodSync(place, 0o1777);
      writeFileSync(join(place, 'mine'), 'x');
      chownSync(join(place, 'mine'), uid, uid);
      mkdirSync(join(place, 'open'));
      chmodSync(join(place, 'open'), 0o1777);
      writeFileSync(join(place, 'open', 'deep'), 'x');
      chownSync(join(place, 'open', 'deep'), uid, uid);
      // A directory the uid cannot write is not entered: nothing of the uid can be created there.
      mkdirSync(join(place, 'closed'), { mode: 0o755 });
      writeFileSync(join(place, 'closed', 'planted'), 'x');
      chownSync(join(place, 'closed', 'planted'), uid, uid);
      writeFileSync(join(place, 'other'), 'x');
      const r = verifyEmpty(uid, { places: [place] });
      expect(r.files.sort()).toEqual([join(place, 'mine'), join(place, 'open', 'deep')]);
      expect(r.empty).toBe(false);
      expect(verifyEmpty(uid, { places: [place], maxEntries: 2 }).truncated).toEqual([place]);
    } finally {
      rmSync(place, { recursive: true, force: true });
    }
  });

  it('finds a POSIX shm file in /dev/shm by default', () => {
    const uid = U + 2;
    const path = `/dev/shm/uid-allocator-test-${process.pid}`;
    try {
      writeFileSync(path, 'x');
      chownSync(path, uid, uid);
      expect(verifyEmpty(uid).files).toContain(path);
    } finally {
      rmSync(path, { force: true });
    }
    expect(verifyEmpty(uid).empty).toBe(true);
  });

  it('finds a real SysV shm segment the uid created (ipcmk under setpriv)', () => {
    const uid = U + 3;
    const out = execFileSync('setpriv', [
      `--reuid=${uid}`,
      `--regid=${uid}`,
      '--clear-groups',
      'ipcmk',
      '-M',
      '4096',
    ]).toString();
    const id = Number(/(\d+)\s*$/.exec(out.trim())?.[1]);
    try {
      const r = verifyEmpty(uid, { places: [] });
      expect(r.ipc).toEqual([{ kind: 'shm', id, key: expect.any(Number), uid, cuid: uid }]);
      expect(r.empty).toBe(false);
    } finally {
      execFileSync('ipcrm', ['-m', String(id)]);
    }
    expect(verifyEmpty(uid, { places: [] }).ipc).toEqual([]);
  });

  it('finds a real process of the uid, then none once it is killed', async () => {
    const uid = U + 4;
    const child = spawnConfined({
      file: '/bin/sleep',
      argv: ['sleep', '1000'],
      env: {},
      uid,
      gid: uid,
    });
    try {
      expect(await pollUntil(() => processesOfUid(uid).length === 1)).toBe(true);
      const r = verifyEmpty(uid, { places: [] });
      expect(r.processes.map((p) => [p.pid, p.uids])).toEqual([[child.pid, [uid, uid, uid, uid]]]);
    } finally {
      process.kill(child.pid, 'SIGKILL');
      waitPid(child.pid);
    }
    expect(verifyEmpty(uid, { places: [] }).empty).toBe(true);
  });
});
