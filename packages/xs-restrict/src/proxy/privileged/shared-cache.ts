/**
 * One perms cache for every privileged session of a proxy whose daemon is an embedded server in
 * the same process, kept exact by one dom0 connection of its own instead of one per session.
 *
 * Why it is exact (the per-session cache's argument, perms-cache.ts, rests on one link's order of
 * events and replies): the server handles a request and fires its watches before the handler
 * returns, and flushes every other connection's events at once (fireWatches), so this link's
 * events reach the cache while the change is made, before the reply to the request that made it
 * is even queued. Each reply a session's link gets is stamped with the cache's clock when the
 * server queues it (XenstoreServer.attachMessages' clock): the number of changes made before it.
 * Perms learnt from a reply with that stamp hold until an event names the node or an ancestor,
 * as on a session's own link; a reply delivered with others of the same write is not stamped
 * later than it was made.
 */
import type { XenstoreConnection, XenstoreServer } from '../../server/server.js';
import type { XsMessage } from '../../wire/codec.js';
import { XS_WATCH } from '../../wire/constants.js';
import { WatchEventMessage } from '../../wire/in-process.js';
import { CACHE_WATCH_PATHS, PermsCache } from './perms-cache.js';

export class SharedPermsCache {
  readonly cache = new PermsCache();
  private conn: XenstoreConnection | undefined;
  private oks = 0;

  constructor(server: XenstoreServer) {
    this.conn = server.attachMessages(
      0,
      (msgs) => this.take(msgs),
      () => {
        // The server let the connection go: nothing the cache holds can be trusted any more.
        this.conn = undefined;
        this.cache.reset();
      },
    );
    this.conn.deliver(
      CACHE_WATCH_PATHS.map((p, i) => ({
        type: XS_WATCH,
        reqId: i + 1,
        txId: 0,
        payload: Buffer.from(`${p}\0${this.cache.token}\0`),
      })),
    );
    // Their replies and first events came before deliver returned.
    if (this.oks === CACHE_WATCH_PATHS.length) this.cache.watchingFrom(this.cache.now);
  }

  /** The clock to stamp a session's replies with as the server queues them. */
  readonly clock = (): number => this.cache.now;

  private take(msgs: readonly XsMessage[]): void {
    for (const m of msgs) {
      // A message sink's events are WatchEventMessages (XenstoreConnection.queueEvent).
      if (m instanceof WatchEventMessage) this.cache.changed(m.path);
      else if (m.type === XS_WATCH) this.oks++;
    }
  }

  /** Stop watching (the proxy closed). */
  close(): void {
    const conn = this.conn;
    this.conn = undefined;
    conn?.close();
    this.cache.reset();
  }
}
