import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { XenstoreServer } from '../src/server/server.js';
import {
  encodeMessage,
  MessageParser,
  XENSTORE_PAYLOAD_MAX,
  XS_ERROR,
  XS_READ,
  XS_WRITE,
  type XsMessage,
} from '../src/wire/index.js';
import { RawConn, show } from './helpers/raw.js';

const RUNS = Number(process.env.XSR_FUZZ_RUNS ?? 40000) / 4;

/** An in-memory connection: what the server writes is parsed back into messages. */
function attach(server: XenstoreServer, domid = 0) {
  const parser = new MessageParser();
  const out: XsMessage[] = [];
  let closedByServer = false;
  const conn = server.attach(
    domid,
    (b) => {
      out.push(...parser.push(b));
      return true;
    },
    () => {
      closedByServer = true;
    },
  );
  return { conn, out, closed: () => closedByServer };
}

describe('XenstoreServer robustness (in-memory connections)', { timeout: 120000 }, () => {
  it('a 4 GiB length field closes that connection at once, buffering nothing; a sibling is unaffected', () => {
    const s = new XenstoreServer();
    const bad = attach(s);
    const good = attach(s);
    const h = Buffer.alloc(16);
    h.writeUInt32LE(XS_WRITE, 0);
    h.writeUInt32LE(0xffffffff, 12);
    bad.conn.receive(h);
    expect(bad.closed()).toBe(true);
    expect(bad.conn.bufferedBytes).toBe(0);
    good.conn.receive(encodeMessage(XS_WRITE, 1, 0, '/x\0v'));
    good.conn.receive(encodeMessage(XS_READ, 2, 0, '/x\0'));
    expect(good.out.map(show)).toEqual(['WRITE req=1 tx=0 "OK\\u0000"', 'READ req=2 tx=0 "v"']);
    expect(s.connectionCount).toBe(1);
  });

  it('a half header is held (15 bytes) and does not block or disturb others', () => {
    const s = new XenstoreServer();
    const half = attach(s);
    const other = attach(s);
    half.conn.receive(encodeMessage(XS_READ, 1, 0, '/\0').subarray(0, 15));
    expect(half.conn.bufferedBytes).toBe(15);
    other.conn.receive(encodeMessage(XS_READ, 5, 0, '/tool\0'));
    expect(other.out.map(show)).toEqual(['READ req=5 tx=0 ""']);
    expect(half.out).toEqual([]);
    expect(half.closed()).toBe(false);
  });

  it('a request of exactly XENSTORE_PAYLOAD_MAX is served; one byte more closes the connection', () => {
    const s = new XenstoreServer();
    const a = attach(s);
    const path = '/big\0';
    a.conn.receive(
      encodeMessage(
        XS_WRITE,
        1,
        0,
        Buffer.concat([Buffer.from(path), Buffer.alloc(XENSTORE_PAYLOAD_MAX - path.length, 0x61)]),
      ),
    );
    expect(a.out.map(show)).toEqual(['WRITE req=1 tx=0 "OK\\u0000"']);
    const h = Buffer.alloc(16);
    h.writeUInt32LE(XS_WRITE, 0);
    h.writeUInt32LE(XENSTORE_PAYLOAD_MAX + 1, 12);
    a.conn.receive(h);
    expect(a.closed()).toBe(true);
  });

  it('garbage never throws, never buffers more than 16 + 4096 bytes, never disturbs a sibling (fast-check)', () => {
    const s = new XenstoreServer();
    const witness = attach(s);
    witness.conn.receive(encodeMessage(XS_WRITE, 1, 0, '/witness\0ok'));
    let reqId = 2;
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }),
        fc.nat({ max: 3 }),
        (chunks, domid) => {
          const g = attach(s, domid);
          for (const c of chunks) {
            g.conn.receive(c);
            if (g.conn.bufferedBytes > 16 + XENSTORE_PAYLOAD_MAX) return false;
          }
          g.conn.close();
          const id = reqId++;
          witness.conn.receive(encodeMessage(XS_READ, id, 0, '/witness\0'));
          const last = witness.out.pop();
          return (
            last !== undefined &&
            last.type === XS_READ &&
            last.reqId === id &&
            last.payload.toString() === 'ok'
          );
        },
      ),
      { numRuns: RUNS },
    );
    expect(s.connectionCount).toBe(1);
  });

  it('an unknown type or a request that is not a string gets XS_ERROR, and the connection stays usable', () => {
    const s = new XenstoreServer();
    const a = attach(s);
    a.conn.receive(encodeMessage(4242, 1, 0, 'x'));
    a.conn.receive(encodeMessage(XS_READ, 2, 0, 'no-nul'));
    a.conn.receive(encodeMessage(XS_READ, 3, 0, '/tool\0'));
    expect(a.out.map((m) => [m.type, m.reqId, m.payload.toString()])).toEqual([
      [XS_ERROR, 1, 'ENOSYS\0'],
      [XS_ERROR, 2, 'EINVAL\0'],
      [XS_READ, 3, ''],
    ]);
  });
});

describe('XenstoreServer robustness over unix sockets', { timeout: 120000 }, () => {
  let dir = '';
  let server: XenstoreServer;
  beforeAll(async () => {
    dir = mkdtempSync('/tmp/xsr-');
    server = new XenstoreServer();
    await server.listen(`${dir}/socket`);
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('garbage and a 4 GiB length close only the offending sockets', async () => {
    const good = await RawConn.open(`${dir}/socket`);
    const garbage = await RawConn.open(`${dir}/socket`);
    const huge = await RawConn.open(`${dir}/socket`);
    const half = await RawConn.open(`${dir}/socket`);
    garbage.sendRaw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    const h = Buffer.alloc(16);
    h.writeUInt32LE(XS_WRITE, 0);
    h.writeUInt32LE(0xffffffff, 12);
    huge.sendRaw(h);
    half.sendRaw(h.subarray(0, 8));
    await garbage.closedPromise;
    await huge.closedPromise;
    good.send(XS_WRITE, 7, 0, '/sock\0fine');
    good.send(XS_READ, 8, 0, '/sock\0');
    const got = await good.until((m) => m.reqId === 8);
    expect(got.map(show)).toEqual(['WRITE req=7 tx=0 "OK\\u0000"', 'READ req=8 tx=0 "fine"']);
    expect(half.closed).toBe(false);
    expect(server.connectionCount).toBe(2);
    for (const c of [good, half]) c.close();
  });
  it('a watcher that never reads is closed once its queue passes maxOutputBytes; the writer is unaffected', async () => {
    const small = new XenstoreServer({ maxOutputBytes: 16384 });
    const p = `${dir}/small`;
    await small.listen(p);
    const lazy = net.createConnection(p);
    await new Promise<void>((r) => lazy.once('connect', () => r()));
    lazy.on('error', () => undefined);
    lazy.write(encodeMessage(4 /* XS_WATCH */, 1, 0, `/flood\0${'t'.repeat(2000)}\0`));
    lazy.pause();
    const writer = await XenstoreClient.connect({ path: p });
    let i = 0;
    while (small.connectionCount > 1) await writer.write('/flood/x', String(i++));
    // the server dropped the lazy watcher; the writer's view is intact
    expect(i).toBeGreaterThan(0);
    expect(await writer.readString('/flood/x')).toBe(String(i - 1));
    lazy.destroy();
    writer.close();
    await small.close();
  });
});
