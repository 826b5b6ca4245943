/**
 * XS_CONTROL against C xenstored 4.17: the commands this server offers
 * (help, check, log, logfile, print, quota, quota-soft) answer byte for byte
 * what C answers, and the ones it does not (memreport, live-update, unknown)
 * answer EINVAL on both. `quota <domid>` reports memory as 0 here (C's figure
 * is its allocator's), so it is checked for its shape only.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenstoreServer } from '../src/server/server.js';
import * as W from '../src/wire/index.js';
import { type Peer, peerMissing, startPeer } from './helpers/peer.js';
import { RawConn, show, z } from './helpers/raw.js';

const missing = peerMissing();

const COMMANDS: string[] = [
  z('memreport'),
  z('help'),
  z('help', 'x'),
  z('check'),
  z('check', 'x'),
  'check',
  z('print', 'hello'),
  z('print'),
  z('log', 'on'),
  z('log', 'off'),
  z('log', 'x'),
  z('log'),
  z('logfile', 'ctl.log'),
  z('quota'),
  z('quota-soft'),
  z('quota-soft', 'x'),
  z('quota', 'set', 'nodes', '5'),
  z('quota'),
  z('quota', 'set', 'nodes', '1000'),
  z('quota', 'set', 'nosuch', '1'),
  z('quota', '7'),
  z('memreport'),
  z('memreport', 'x', 'y'),
  z('nosuch'),
  z(''),
  '',
];

async function transcript(conn: RawConn): Promise<string[]> {
  const out: string[] = [];
  let req = 1;
  for (const p of COMMANDS) {
    const id = req++;
    conn.send(W.XS_CONTROL, id, 0, p);
    out.push(...(await conn.until((m) => m.reqId === id)).map(show));
  }
  return out;
}

describe.skipIf(missing !== undefined)('XS_CONTROL vs C xenstored 4.17', { timeout: 30000 }, () => {
  let peer: Peer | undefined;
  let server: XenstoreServer | undefined;
  let tmp = '';
  beforeAll(async () => {
    peer = startPeer([]);
    tmp = mkdtempSync('/tmp/xsc-');
    server = new XenstoreServer();
    await server.listen(`${tmp}/socket`);
  });
  afterAll(async () => {
    await server?.close();
    peer?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('every command answers what C answers', async () => {
    const c = await RawConn.open((peer as Peer).dom0);
    const ours = await RawConn.open(`${tmp}/socket`);
    const want = await transcript(c);
    expect(await transcript(ours)).toEqual(want);
    expect(want.join('\n')).toContain('Quota settings:');
    c.close();
    ours.close();
  });

  it('quota <domid>: the usage of dom0 in C’s layout; an unknown domain is ENOENT', async () => {
    const ours = await RawConn.open(`${tmp}/socket`);
    ours.send(W.XS_CONTROL, 1, 0, z('quota', '0'));
    const [r] = await ours.until((m) => m.reqId === 1);
    expect(r?.payload.toString()).toBe(
      'Domain 0:\nnodes           :        3\nwatches         :        0\ntransactions    :        0\noutstanding     :        0\nmemory          :        0\n\0',
    );
    ours.close();
  });
});
