// uid-allocator in a real Xen dom0: a lease for a domain created in Xen, a process tree of that
// uid (setsid + fork, as a compromised device model would), the reaper leaves none, the uid is
// verified empty and released. Uids from the private test range only.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnConfined, waitPid } from '@xen-depriv/sys';
import { dynamicPoolScheme, UidAllocator } from '@xen-depriv/uid-allocator';
import { makeHvm } from './privcmd-filter.xen.mjs';

function pidsOfUid(uid) {
  const out = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const line = /^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      if (line?.split(/\s+/).some((u) => Number(u) === uid)) out.push(Number(pid));
    } catch {}
  }
  return out;
}

export default function (test) {
  test('a lease for a real domain, a setsid + fork tree of its uid reaped to 0, the uid released', async () => {
    const domid = makeHvm();
    const stateDir = mkdtempSync(join(tmpdir(), 'uid-'));
    const allocator = new UidAllocator({
      scheme: dynamicPoolScheme({ first: 3_200_000, count: 16, reaperUid: 3_199_999 }),
      stateDir,
    });
    try {
      const lease = await allocator.acquire(domid);
      assert.ok(lease.uid >= 3_200_000 && lease.uid < 3_200_016);
      // sh forks a sleeper in a new session and itself stays: two processes of the uid.
      const { pid } = spawnConfined({
        file: '/bin/sh',
        argv: ['sh', '-c', 'setsid sleep 600 & sleep 600'],
        env: { PATH: '/usr/bin:/bin' },
        uid: lease.uid,
        gid: lease.gid,
        groups: [],
      });
      for (let i = 0; i < 200 && pidsOfUid(lease.uid).length < 2; i++)
        await new Promise((r) => setTimeout(r, 10));
      const before = pidsOfUid(lease.uid).length;
      assert.ok(before >= 2, `expected the tree to be up, saw ${before} processes`);
      const report = await allocator.release(lease, { reap: true });
      waitPid(pid);
      assert.equal(report.released, true);
      assert.deepEqual(pidsOfUid(lease.uid), []);
      return { uid: lease.uid, processesBefore: before, reaperRounds: report.reap?.rounds };
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
      execFileSync('dmop-test', ['destroy', String(domid)]);
    }
  });
}
