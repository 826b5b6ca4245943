/**
 * One handler per `XS_*` request, in a table like xenstored's wire_funcs:
 * each returns the reply payload (sent with the request's type) or throws
 * XsFail; XS_FLAG_PRIV requests are refused with EACCES for guests.
 */
import type { XsMessage } from '../wire/codec.js';
import {
  XS_CONTROL,
  XS_DIRECTORY,
  XS_DIRECTORY_PART,
  XS_GET_DOMAIN_PATH,
  XS_GET_PERMS,
  XS_INTRODUCE,
  XS_IS_DOMAIN_INTRODUCED,
  XS_MKDIR,
  XS_READ,
  XS_RELEASE,
  XS_RESET_WATCHES,
  XS_RESUME,
  XS_RM,
  XS_SET_PERMS,
  XS_SET_TARGET,
  XS_TRANSACTION_END,
  XS_TRANSACTION_START,
  XS_TYPE_COUNT,
  XS_UNWATCH,
  XS_WATCH,
  XS_WRITE,
} from '../wire/constants.js';
import type { XenstoreConnection } from './connection.js';
import { control } from './control.js';
import type { ServerCore } from './core.js';
import * as domain from './domain.js';
import { XsFail } from './node.js';
import * as nodes from './nodes.js';
import { type Transaction, transactionEnd, transactionStart } from './transaction.js';
import { resetWatches, unwatch, watch } from './watch.js';

/** A reply payload, or undefined when the handler replied itself. */
type Handler = (
  core: ServerCore,
  conn: XenstoreConnection,
  payload: Buffer,
  tx: Transaction | undefined,
) => Uint8Array | string | undefined;

interface WireFunc {
  handler: Handler;
  /** XS_FLAG_PRIV: dom0 (or the privileged domid) only. */
  priv: boolean;
  /** XS_FLAG_NOTID: the tx_id is not looked up (WATCH and UNWATCH ignore it). */
  noTx: boolean;
}

const WIRE_FUNCS: (WireFunc | undefined)[] = new Array(XS_TYPE_COUNT);
const def = (type: number, handler: Handler, flags: { priv?: boolean; noTx?: boolean } = {}) => {
  WIRE_FUNCS[type] = { handler, priv: flags.priv === true, noTx: flags.noTx === true };
};

def(XS_READ, nodes.read);
def(XS_DIRECTORY, nodes.directory);
def(XS_DIRECTORY_PART, nodes.directoryPart);
def(XS_GET_PERMS, nodes.getPerms);
def(XS_WRITE, nodes.write);
def(XS_MKDIR, nodes.mkdir);
def(XS_RM, nodes.rm);
def(XS_SET_PERMS, nodes.setPerms);
def(
  XS_WATCH,
  (core, conn, p) => {
    watch(core, conn, p);
    return undefined;
  },
  { noTx: true },
);
def(XS_UNWATCH, unwatch, { noTx: true });
def(XS_RESET_WATCHES, (core, conn) => resetWatches(core, conn));
def(XS_TRANSACTION_START, (core, conn, _p, tx) => transactionStart(core, conn, tx));
def(XS_TRANSACTION_END, (core, conn, p, tx) => transactionEnd(core, conn, tx, p));
def(XS_GET_DOMAIN_PATH, domain.getDomainPath);
def(XS_IS_DOMAIN_INTRODUCED, domain.isDomainIntroduced, { priv: true });
def(XS_INTRODUCE, domain.doIntroduce, { priv: true });
def(XS_RELEASE, (core, conn, p) => domain.releaseOrResume(core, conn, p, true), { priv: true });
def(XS_RESUME, (core, conn, p) => domain.releaseOrResume(core, conn, p, false), { priv: true });
def(XS_SET_TARGET, domain.setTarget, { priv: true });
def(XS_CONTROL, control, { priv: true });

/** Process one request from `conn`: exactly one reply is queued (plus any watch events). */
export function handleRequest(core: ServerCore, conn: XenstoreConnection, m: XsMessage): void {
  try {
    const f = WIRE_FUNCS[m.type];
    if (f === undefined) throw new XsFail('ENOSYS');
    if (f.priv && !conn.privileged) throw new XsFail('EACCES');
    let tx: Transaction | undefined;
    if (!f.noTx && m.txId !== 0) {
      tx = conn.transactions.get(m.txId);
      if (!tx) throw new XsFail('ENOENT');
    }
    const payload = f.handler(core, conn, m.payload, tx);
    if (payload !== undefined) conn.reply(m.type, payload);
  } catch (e) {
    // Anything but an XsFail is a bug of ours: answer EIO rather than take down every connection.
    conn.replyError(e instanceof XsFail ? e.errno : 'EIO');
  }
}
