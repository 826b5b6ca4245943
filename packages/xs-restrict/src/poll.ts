/**
 * Polling after activity, as KVM's halt-polling and QEMU's iothread `poll-max-ns` do: for a
 * short window after a socket had data, the event loop keeps polling (a zero-timeout epoll per
 * turn, by a chain of setImmediate callbacks) instead of blocking. A request that arrives in the
 * window is read at once, without waking an idle core, which on an idle machine is most of a
 * round trip. The cost is CPU during the window only: an idle server blocks as before.
 */
/** An ActivityPoll for `pollMicros` (0 to 1000000; 0: none, block at once), or a RangeError. */
export function activityPoll(pollMicros: number | undefined): ActivityPoll | undefined {
  const us = pollMicros ?? 0;
  if (!(Number.isFinite(us) && us >= 0 && us <= 1_000_000))
    throw new RangeError(`pollMicros: expected 0..1000000, got ${us}`);
  return us > 0 ? new ActivityPoll(us) : undefined;
}

export class ActivityPoll {
  private last = 0;
  /** The socket that had data last, and when another one last did. */
  private lastBy: unknown = undefined;
  private mixedAt = 0;
  private running = false;
  private stopped = false;
  private readonly windowMs: number;

  constructor(windowMicros: number) {
    this.windowMs = windowMicros / 1000;
  }

  /** A socket (`by`) had data: poll for the next window. */
  touch(by?: unknown): void {
    if (this.stopped) return;
    this.last = performance.now();
    if (by !== this.lastBy) {
      this.lastBy = by;
      this.mixedAt = this.last;
    }
    if (!this.running) {
      this.running = true;
      setImmediate(this.turn);
    }
  }

  /**
   * `by` is the only busy socket: no other had data for a whole window. Then a reply written
   * at once overlaps that client's next requests; with several busy, the replies to one read
   * share a write, and the syscalls saved go to the others.
   */
  solo(by: unknown): boolean {
    return by === this.lastBy && this.last - this.mixedAt > this.windowMs;
  }

  /** No more polling (the server closes). */
  stop(): void {
    this.stopped = true;
  }

  private readonly turn = (): void => {
    if (!this.stopped && performance.now() - this.last < this.windowMs) setImmediate(this.turn);
    else this.running = false;
  };
}
