/** The proxy's upstream connections: a unix socket, or the embedded server attached in process. */
import net from 'node:net';
import type { XenstoreConnection, XenstoreServer } from '../server/server.js';
import type { XsMessage } from '../wire/codec.js';
import type { PrivilegedLink } from './privileged/book.js';

/** What a client's upstream is to the proxy: bytes out, and a close after what was written. */
export interface Upstream {
  write(b: Buffer): void;
  /** Whole requests already parsed (the privileged session takes them without parsing again). */
  submit?(msgs: readonly XsMessage[]): void;
  /**
   * A client's bytes arrived: output the upstream owes from before them goes out first (the
   * privileged session's held-back watch events), ahead of any refusal the proxy gives itself.
   */
  catchUp?(): void;
  /** Replies or events are owed to the client and not yet given: a refusal waits behind them. */
  owes?(): boolean;
  /** Close after what was written has gone out. */
  end(): void;
}

/**
 * A connection to the upstream: a unix socket (whose daemon decides who it acts as), or the
 * embedded server attached as `domid` (0 for the privileged mode's dom0 link).
 */
export function openLink(
  target: string | XenstoreServer,
  domid: number,
  onData: (b: Buffer) => void,
  onClose: () => void,
  /** Given, an embedded server's replies and events come here as messages (see PrivilegedLink.send). */
  onMessages?: (msgs: XsMessage[]) => void,
  /** With onMessages: the clock each reply is stamped with as the server queues it. */
  clock?: () => number,
): PrivilegedLink {
  if (typeof target === 'string') {
    const sock = net.createConnection(target);
    sock.on('data', onData);
    sock.on('error', () => undefined);
    sock.on('close', onClose);
    return { write: (b) => sock.write(b), end: () => sock.end() };
  }
  let ending = false;
  const closed = (): void => {
    if (!ending) onClose();
  };
  let conn: XenstoreConnection | undefined = onMessages
    ? target.attachMessages(domid, onMessages, closed, clock)
    : target.attach(
        domid,
        (b) => {
          onData(b);
          return true;
        },
        closed,
      );
  return {
    write: (b) => conn?.receive(b),
    ...(onMessages ? { send: (msgs: readonly XsMessage[]) => conn?.deliver(msgs) } : {}),
    end: () => {
      ending = true;
      conn?.close();
      conn = undefined;
    },
    // XenstoreConnection.receive handles every request of a chunk before returning.
    atomicWrites: true,
  };
}
