// server/poll.ts: after activity the event loop keeps turning (setImmediate) for the window, then
// stops; an idle server schedules nothing. Counted by the turns it schedules, not by time.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ActivityPoll } from '../src/server/poll.js';
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
