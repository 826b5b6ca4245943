/**
 * `trace`: every request the proxy lets through is one `forwarded` log line, in the order the
 * device model sent them, with the absolute path and the rule that allowed it; refusals stay
 * `refused` lines, and without `trace` nothing but refusals is logged.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import type { ProxyLogRecord } from '../src/proxy/options.js';
import { RestrictingProxy } from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';

const DOMID = 5;
const STATE = `/local/domain/0/device-model/${DOMID}/state`;

describe('RestrictingProxy trace', () => {
  let dir: string;
  let server: XenstoreServer;
  beforeEach(async () => {
    dir = mkdtempSync('/tmp/xspt-');
    server = new XenstoreServer();
    await server.listen(`${dir}/xs.sock`);
    const dom0 = await XenstoreClient.connect({ path: `${dir}/xs.sock` });
    await dom0.mkdir(`/local/domain/0/device-model/${DOMID}`);
    await dom0.setPerms(`/local/domain/0/device-model/${DOMID}`, [
      { domid: 0, perm: 'n' },
      { domid: DOMID, perm: 'b' },
    ]);
    dom0.close();
  });
  afterEach(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const trace of [true, false]) {
    it(`trace ${trace}`, async () => {
      const lines: ProxyLogRecord[] = [];
      const proxy = new RestrictingProxy({
        domid: DOMID,
        upstream: { privileged: server },
        log: (l) => lines.push(JSON.parse(l) as ProxyLogRecord),
        trace,
      });
      await proxy.listen(`${dir}/p.sock`);
      const dm = await XenstoreClient.connect({ path: `${dir}/p.sock` });
      await dm.write(`device-model/${DOMID}/state`, 'running');
      const tx = await dm.transactionStart();
      await dm.transactionEnd(tx, false);
      await dm.read('/tool/x').catch(() => undefined);
      dm.close();
      await proxy.close();
      const got = lines.map((l) => [l.event, l.request?.type, l.request?.path, l.rule]);
      const refused = ['refused', 'READ', '/tool/x', 'not-in-allowlist:read'];
      expect(got).toEqual(
        trace
          ? [
              ['forwarded', 'WRITE', STATE, 'dm-state'],
              ['forwarded', 'TRANSACTION_START', undefined, undefined],
              ['forwarded', 'TRANSACTION_END', undefined, undefined],
              refused,
            ]
          : [refused],
      );
    });
  }
});
