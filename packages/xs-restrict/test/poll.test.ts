// poll.ts: after activity the event loop keeps turning (setImmediate) for the window, then
// stops; an idle server schedules nothing. Counted by the turns it schedules, not by time.
import { mkdtempSync, rmSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { XenstoreClient } from '../src/client.js';
import { ActivityPoll } from '../src/poll.js';
import { RestrictingProxy } from '../src/proxy/proxy.js';
import { XenstoreServer } from '../src/server/server.js';

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

describe('XenstoreServer pollMicros', () => {
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
