import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { XenstoreError } from '../src/errors.js';
import { XenstoreServer } from '../src/server/server.js';
import { encodeMessage, XenstoreWireError, XS_READ, XS_WRITE } from '../src/wire/index.js';
import { type Peer, peerMissing, startPeer } from './helpers/peer.js';

async function exercise(
  client: XenstoreClient,
  other: XenstoreClient,
  base: string,
): Promise<void> {
  // pipelined: all requests in flight at once, each answered by its own req_id
  await Promise.all(Array.from({ length: 50 }, (_, i) => client.write(`${base}/p/${i}`, `v${i}`)));
  const values = await Promise.all(
    Array.from({ length: 50 }, (_, i) => client.readString(`${base}/p/${i}`)),
  );
  expect(values).toEqual(Array.from({ length: 50 }, (_, i) => `v${i}`));
  expect((await client.directory(`${base}/p`)).length).toBe(50);

  const err = await client.read(`${base}/none`).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(XenstoreError);
  expect((err as XenstoreError).code).toBe('ENOENT');
  expect((err as XenstoreError).message).toBe(`xenstore READ "${base}/none" failed: ENOENT`);
  expect(await client.tryRead(`${base}/none`)).toBeUndefined();

  await client.setPerms(`${base}/p/0`, [
    { domid: 0, perm: 'n' },
    { domid: 3, perm: 'r' },
  ]);
  expect(await client.getPerms(`${base}/p/0`)).toEqual([
    { domid: 0, perm: 'n' },
    { domid: 3, perm: 'r' },
  ]);

  // transaction helper: the first attempt conflicts with another writer, the retry commits
  await client.write(`${base}/counter`, '0');
  let attempts = 0;
  await client.transaction(async (tx) => {
    attempts++;
    const n = Number(await client.readString(`${base}/counter`, { tx }));
    if (attempts === 1) await other.write(`${base}/counter`, '10');
    await client.write(`${base}/counter`, String(n + 1), { tx });
  });
  expect(attempts).toBe(2);
  expect(await client.readString(`${base}/counter`)).toBe('11');

  // watches as an async iterator: initial event, then changes below
  const w = await client.watch(`${base}/w`, 'tok');
  const it = w[Symbol.asyncIterator]();
  expect((await it.next()).value).toEqual({ path: `${base}/w`, token: 'tok' });
  await other.write(`${base}/w/x`, '1');
  expect((await it.next()).value).toEqual({ path: `${base}/w/x`, token: 'tok' });
  await w.close();
  expect((await it.next()).done).toBe(true);
  // unwatched on the server: the same (path, token) can be watched again
  const again = await client.watch(`${base}/w`, 'tok');
  await again.close();

  await client.rm(base);
}

describe('XenstoreClient against XenstoreServer', { timeout: 120000 }, () => {
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

  it('honours XENSTORED_PATH; pipelining, typed errors, perms, transaction retry, watches', async () => {
    const saved = process.env.XENSTORED_PATH;
    process.env.XENSTORED_PATH = `${dir}/socket`;
    const a = await XenstoreClient.connect();
    if (saved === undefined) delete process.env.XENSTORED_PATH;
    else process.env.XENSTORED_PATH = saved;
    const b = await XenstoreClient.connect({ path: `${dir}/socket` });
    await exercise(a, b, '/client');
    a.close();
    b.close();
  });

  it('checks paths before sending and reports the broken rule', async () => {
    const c = await XenstoreClient.connect({ path: `${dir}/socket` });
    await expect(c.read('/a//b')).rejects.toBeInstanceOf(XenstoreWireError);
    await expect(c.write('/a/', 'x')).rejects.toThrow(/trailing-slash/);
    c.close();
  });

  it('domain requests: GET_DOMAIN_PATH, INTRODUCE, IS_DOMAIN_INTRODUCED, RELEASE', async () => {
    const c = await XenstoreClient.connect({ path: `${dir}/socket` });
    expect(await c.getDomainPath(7)).toBe('/local/domain/7');
    expect(await c.isDomainIntroduced(7)).toBe(false);
    const w = await c.watch('@introduceDomain', 'i');
    const it = w[Symbol.asyncIterator]();
    expect((await it.next()).value).toEqual({ path: '@introduceDomain', token: 'i' });
    await c.introduce(7, 0, 1);
    expect((await it.next()).value).toEqual({ path: '@introduceDomain', token: 'i' });
    expect(await c.isDomainIntroduced(7)).toBe(true);
    await c.release(7);
    expect(await c.isDomainIntroduced(7)).toBe(false);
    await expect(c.release(7)).rejects.toMatchObject({ code: 'ENOENT' });
    await w.close();
    c.close();
  });

  it('close() rejects what is pending with ECONNRESET and ends watches', async () => {
    const c = await XenstoreClient.connect({ path: `${dir}/socket` });
    const w = await c.watch('/closing');
    const pending = c.read('/tool');
    c.close();
    await expect(pending).rejects.toMatchObject({ code: 'ECONNRESET' });
    await w.next();
    expect((await w.next()).done).toBe(true);
    await expect(c.read('/tool')).rejects.toMatchObject({ code: 'ECONNRESET' });
  });

  it('a request with no reply times out with ETIMEDOUT', async () => {
    const held: net.Socket[] = [];
    const silent = net.createServer((s) => {
      held.push(s);
    });
    const p = `${dir}/silent`;
    await new Promise<void>((r) => silent.listen(p, r));
    const c = await XenstoreClient.connect({ path: p, timeoutMs: 50 });
    await expect(c.read('/x')).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    c.close();
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  });

  it('each request times out at its own deadline; none is left holding a timer once answered', async () => {
    const held: net.Socket[] = [];
    const silent = net.createServer((s) => {
      held.push(s);
    });
    const p = `${dir}/silent-deadlines`;
    await new Promise<void>((r) => silent.listen(p, r));
    const c = await XenstoreClient.connect({ path: p, timeoutMs: 300 });
    const settled: string[] = [];
    const first = c.read('/first').catch((e: XenstoreError) => settled.push(`first ${e.code}`));
    await new Promise((r) => setTimeout(r, 200));
    const second = c.read('/second').catch((e: XenstoreError) => settled.push(`second ${e.code}`));
    await first;
    // The first failed at its deadline; the second, sent 200 ms later, is still waiting.
    expect(settled).toEqual(['first ETIMEDOUT']);
    await second;
    expect(settled).toEqual(['first ETIMEDOUT', 'second ETIMEDOUT']);
    c.close();
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));

    // Answered requests leave no timer behind: the process could exit.
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const live = await XenstoreClient.connect({ path: `${dir}/socket`, timeoutMs: 60_000 });
    const before = timers();
    await Promise.all([live.read('/tool').catch(() => undefined), live.directory('/')]);
    expect(timers()).toBe(before);
    live.close();
  });

  it('requests issued in one tick leave in one write, with the exact bytes of each', async () => {
    const chunks: Buffer[] = [];
    const held: net.Socket[] = [];
    const raw = net.createServer((s) => {
      held.push(s);
      s.on('data', (d) => chunks.push(d));
    });
    const p = `${dir}/raw-batch`;
    await new Promise<void>((r) => raw.listen(p, r));
    const c = await XenstoreClient.connect({ path: p, timeoutMs: 60_000 });
    // The stream writes the client's socket makes (each one syscall, write or writev): a
    // socket a server accepted (this test's, or the file's server's) is not the client's.
    const proto = net.Socket.prototype as unknown as { _writeGeneric: (...a: unknown[]) => void };
    const real = proto._writeGeneric;
    let streamWrites = 0;
    proto._writeGeneric = function (this: net.Socket & { server?: unknown }, ...a: unknown[]) {
      if (!held.includes(this) && !this.server) streamWrites++;
      return real.apply(this, a);
    };
    const until = async (n: number) => {
      while (Buffer.concat(chunks).length < n) await new Promise((r) => setTimeout(r, 5));
    };
    // One tick: a read, a string write (multi-byte UTF-8) and a binary write.
    const sent: Promise<unknown>[] = [
      c.read('/a').catch(() => undefined),
      c.write('/b', 'é€😀').catch(() => undefined),
      c.write('/c', Buffer.from([0, 255])).catch(() => undefined),
    ];
    const expected = Buffer.concat([
      encodeMessage(XS_READ, 1, 0, '/a\0'),
      encodeMessage(XS_WRITE, 2, 0, Buffer.from('/b\0é€😀', 'utf8')),
      encodeMessage(XS_WRITE, 3, 0, Buffer.from([0x2f, 0x63, 0, 0, 255])),
    ]);
    try {
      await until(expected.length);
      expect(streamWrites).toBe(1);
      expect(Buffer.concat(chunks)).toEqual(expected);
      // A later tick: a write of its own.
      const later = c.read('/d').catch(() => undefined);
      sent.push(later);
      await until(expected.length + 19);
      expect(streamWrites).toBe(2);
      expect(Buffer.concat(chunks).subarray(expected.length)).toEqual(
        encodeMessage(XS_READ, 4, 0, '/d\0'),
      );
    } finally {
      proto._writeGeneric = real;
    }
    c.close();
    await Promise.all(sent);
    for (const s of held) s.destroy();
    await new Promise<void>((r) => raw.close(() => r()));
  });

  it('connect retries ECONNREFUSED with backoff, and reports it typed when attempts run out', async () => {
    const p = `${dir}/late`;
    // a bound but not listening unix socket refuses connections, like a daemon not yet listening
    const bind = spawnSync('python3', [
      '-c',
      `import socket;s=socket.socket(socket.AF_UNIX);s.bind(${JSON.stringify(p)})`,
    ]);
    expect(bind.status).toBe(0);
    await expect(XenstoreClient.connect({ path: p, connectAttempts: 1 })).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
    const connecting = XenstoreClient.connect({
      path: p,
      connectAttempts: 12,
      connectBackoffMs: 5,
    });
    unlinkSync(p);
    const late = new XenstoreServer();
    await late.listen(p);
    const c = await connecting;
    expect(await c.getDomainPath(1)).toBe('/local/domain/1');
    c.close();
    await late.close();
  });
});

const missing = peerMissing();
describe.skipIf(missing !== undefined)(
  `XenstoreClient against C xenstored 4.17 ${missing ? `(skipped: ${missing})` : ''}`,
  { timeout: 60000 },
  () => {
    let peer: Peer | undefined;
    beforeAll(() => {
      peer = startPeer([]);
    });
    afterAll(() => peer?.stop());

    it('the same client code works unchanged against the real daemon', async () => {
      const a = await XenstoreClient.connect({ path: (peer as Peer).dom0 });
      const b = await XenstoreClient.connect({ path: (peer as Peer).dom0 });
      await exercise(a, b, '/client');
      a.close();
      b.close();
    });
  },
);
