// The lab itself: what every other real-Xen test relies on.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export default function (test) {
  test('dom0 runs on real Xen 4.17 with privcmd, xenbus and a C xenstored', () => {
    const info = execFileSync('xl', ['info'], { encoding: 'utf8' });
    assert.match(info, /^xen_major\s*:\s*4$/m);
    assert.match(info, /^xen_minor\s*:\s*17$/m);
    for (const node of ['privcmd', 'evtchn', 'gntdev', 'xenbus', 'hypercall']) {
      assert.ok(existsSync(`/dev/xen/${node}`), `/dev/xen/${node}`);
    }
    assert.equal(
      execFileSync('xenstore-read', ['/local/domain/0/name'], { encoding: 'utf8' }).trim(),
      'Domain-0',
    );
  });
}
