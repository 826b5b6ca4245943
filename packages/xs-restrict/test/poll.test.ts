// poll.ts: after activity the event loop keeps turning (setImmediate) for the window, then
// stops; an idle server schedules nothing. Counted by the turns it schedules, not by time.
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { ActivityPoll } from '../src/poll.js';
import { RestrictingProxy } from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';
import { encodeMessage, MessageParser, XS_READ, XS_WRITE } from '../src/wire/index.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('ActivityPoll (polling after activity)', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('turns the loop through the window after touch(), then stops by itself', async () => {
    const spy = vi.spyOn(globalThis, 'setImmediate');
    const poll = new ActivityPoll(20_000);
    poll.touch();
    await pause(5);
    const during = spy.mock.calls.length;
    // Still inside the 20 ms window: more than the first turn has run.
    expect(during).toBeGreaterThan(1);
    await pause(100);
    const after = spy.mock.calls.length;
    await pause(50);
    // Past the window: no more turns.
    expect(spy.mock.calls.length).toBe(after);
  });

  it('touch() while polling extends the window without a second chain', async () => {
    const spy = vi.spyOn(globalThis, 'setImmediate');
    const poll = new ActivityPoll(50_000);
    poll.touch();
    poll.touch();
    poll.touch();
    // One chain: one callback queued however often touched.
    expect(spy.mock.calls.length).toBe(1);
    poll.stop();
  });

  it('stop() ends the chain at its next turn, and touch() after it does nothing', async () => {
    const spy = vi.spyOn(globalThis, 'setImmediate');
    const poll = new ActivityPoll(1_000_000);
    poll.touch();
    poll.stop();
    await pause(20);
    expect(spy.mock.calls.length).toBe(1);
    poll.touch();
    await pause(20);
    expect(spy.mock.calls.length).toBe(1);
  });
});

describe('ActivityPoll.solo (one busy socket)', () => {
  it('a socket is solo once no other had data for a whole window; another one ends it', async () => {
    const poll = new ActivityPoll(2_000);
    const a = {};
    const b = {};
    try {
      poll.touch(a);
      // Not for the first window: others may be about to speak.
      expect(poll.solo(a)).toBe(false);
      await pause(5);
      poll.touch(a);
      expect(poll.solo(a)).toBe(true);
      expect(poll.solo(b)).toBe(false);
      poll.touch(b);
      expect(poll.solo(a)).toBe(false);
      expect(poll.solo(b)).toBe(false);
      poll.touch(a);
      expect(poll.solo(a)).toBe(false);
      await pause(5);
      poll.touch(a);
      expect(poll.solo(a)).toBe(true);
    } finally {
      poll.stop();
    }
  });
});

describe('XenstoreServer pollMicros', () => {
  it('polling, with one busy client every reply to a read leaves at once; with two, the rest share a write', async () => {
    const dir = mkdtempSync('/tmp/xs-poll-');
    // A window long enough that a loaded machine's scheduling cannot stretch the second client's
    // request and the first one's next read apart by more than it (the test would then see solo).
    const server = new XenstoreServer({ pollMicros: 100_000 });
    const clients: Socket[] = [];
    const writes = new Map<unknown, string[][]>();
    const real = Socket.prototype.write;
    vi.spyOn(Socket.prototype, 'write').mockImplementation(function (this: Socket, ...args) {
      const b = args[0];
      if (!clients.includes(this) && Buffer.isBuffer(b)) {
        const list = writes.get(this) ?? [];
        list.push(new MessageParser().push(b).map((m) => `${m.reqId}:${m.payload}`));
        writes.set(this, list);
      }
      return real.apply(this, args as Parameters<typeof real>);
    });
    const open = async () => {
      const c = createConnection(`${dir}/xs.sock`);
      clients.push(c);
      await new Promise((r) => c.once('connect', r));
      let replies = 0;
      const parser = new MessageParser();
      let waiting: { n: number; done: () => void } | null = null;
      c.on('data', (d) => {
        replies += parser.push(d).length;
        if (waiting && replies >= waiting.n) waiting.done();
      });
      // Sends the requests in one write, resolves once every reply so far is in.
      return (...reqs: Buffer[]) =>
        new Promise<void>((done) => {
          waiting = { n: replies + reqs.length, done };
          c.write(Buffer.concat(reqs));
        });
    };
    const read = (id: number) => encodeMessage(XS_READ, id, 0, '/a\0');
    try {
      await server.listen(`${dir}/xs.sock`);
      const a = await open();
      await a(encodeMessage(XS_WRITE, 1, 0, '/a\0one'));
      // A whole window with only this client.
      await pause(150);
      await a(read(2), read(3), read(4));
      const [aSide] = [...writes.keys()];
      expect(writes.get(aSide)).toEqual([['1:OK\0'], ['2:one'], ['3:one'], ['4:one']]);
      // Another client speaks within the window: the first reply at once, the rest together.
      const b = await open();
      await b(read(1));
      await a(read(5), read(6), read(7));
      expect(writes.get(aSide)?.slice(4)).toEqual([['5:one'], ['6:one', '7:one']]);
    } finally {
      for (const c of clients) c.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([-1, Number.NaN, 1_000_001, Number.POSITIVE_INFINITY])(
    'pollMicros %s is a RangeError naming the range',
    (v) => {
      expect(() => new XenstoreServer({ pollMicros: v })).toThrow(
        new RangeError(`pollMicros: expected 0..1000000, got ${v}`),
      );
    },
  );
});

describe('RestrictingProxy pollMicros', () => {
  it.each([-1, Number.NaN, 1_000_001])('pollMicros %s is a RangeError naming the range', (v) => {
    expect(
      () => new RestrictingProxy({ domid: 5, upstream: '/nonexistent', pollMicros: v }),
    ).toThrow(new RangeError(`pollMicros: expected 0..1000000, got ${v}`));
  });

  it('a polling privileged proxy before a polling server: the DM writes its key, is refused the rest', async () => {
    const dir = mkdtempSync('/tmp/xs-poll-');
    const server = new XenstoreServer({ pollMicros: 200 });
    const proxy = new RestrictingProxy({
      domid: 5,
      upstream: { privileged: server },
      pollMicros: 200,
      log: () => undefined,
    });
    try {
      await server.listen(`${dir}/xs.sock`);
      await proxy.listen(`${dir}/proxy.sock`);
      const dom0 = await XenstoreClient.connect({ path: `${dir}/xs.sock` });
      const dm = await XenstoreClient.connect({ path: `${dir}/proxy.sock` });
      const state = '/local/domain/0/device-model/5/state';
      await dom0.write(state, '');
      await dom0.setPerms(state, [
        { domid: 0, perm: 'n' },
        { domid: 5, perm: 'b' },
      ]);
      await dm.write(state, 'running');
      expect(await dom0.readString(state)).toBe('running');
      await expect(dm.read('/local/domain/0/name')).rejects.toMatchObject({ code: 'EACCES' });
      dm.close();
      dom0.close();
    } finally {
      await proxy.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
