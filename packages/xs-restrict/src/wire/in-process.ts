/**
 * Messages as an embedded server gives them to a peer in its own process
 * (XenstoreServer.attachMessages): internal to the package, not exported.
 */
import type { XsMessage } from './codec.js';
import { XS_WATCH_EVENT } from './constants.js';

/**
 * A watch event given to a message sink: its path and token as the server had them, its
 * payload bytes made only if asked for (an in-process peer often needs only the path).
 */
export class WatchEventMessage implements XsMessage {
  readonly type = XS_WATCH_EVENT;
  readonly reqId = 0;
  readonly txId = 0;
  private bytes: Buffer | undefined;
  constructor(
    readonly path: string,
    readonly token: string,
    private readonly text: string,
  ) {}
  get payload(): Buffer {
    this.bytes ??= Buffer.from(this.text);
    return this.bytes;
  }
}

/**
 * A reply from an in-process server's message sink: `at` is the value of the sink's clock when
 * the server queued it (-1 without a clock).
 */
export interface StampedMessage extends XsMessage {
  readonly at: number;
}
