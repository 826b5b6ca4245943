// A recorded start-up sequence (a proxy's trace log) and its replay, for run.mjs and
// startup-cpu.mjs. Each op is [op, path, recordedTxId, recordedClient, refused].
import { readFileSync } from 'node:fs';

/** The request types a replay makes, by the trace's type names. */
const REPLAYED = {
  READ: 'read',
  DIRECTORY: 'directory',
  GET_PERMS: 'getPerms',
  WRITE: 'write',
  MKDIR: 'mkdir',
  WATCH: 'watch',
  TRANSACTION_START: 'txStart',
  TRANSACTION_END: 'txEnd',
};

/**
 * The requests of a proxy's log with `trace: true` (JSON lines, events "forwarded" and
 * "refused"), in order, the recorded domid's path elements made `domid`'s.
 */
export function fromTrace(file, domid) {
  const ops = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const rec = line.trim() && JSON.parse(line);
    const kept = rec?.event === 'forwarded' || rec?.event === 'refused';
    const op = kept ? REPLAYED[rec.request.type] : undefined;
    if (!op) continue;
    const own = String(rec.domid);
    const p = rec.request.path
      ?.split('/')
      .map((x) => (x === own ? String(domid) : x))
      .join('/');
    ops.push([op, p, rec.request.txId, rec.client, rec.event === 'refused']);
  }
  return ops;
}

/**
 * Replay `ops` on fresh connections to `sock` (one per recorded client, opened at its first
 * request), one request at a time; requests in a recorded transaction run in a live one. Returns
 * the wall time in ms up to the last reply; the unwatches and closes follow, untimed. With
 * `steps`, each connect's and request's wall time (ms) is pushed to it in order.
 */
export async function replay(XenstoreClient, sock, ops, steps) {
  const t0 = performance.now();
  let t = t0;
  const step = () => {
    const now = performance.now();
    steps?.push(now - t);
    t = now;
  };
  const conns = new Map();
  const watches = [];
  const txs = new Map();
  let started;
  const no = () => undefined;
  for (const [op, p, recTx, client = 0] of ops) {
    let c = conns.get(client);
    if (!c) {
      c = await XenstoreClient.connect({ path: sock });
      conns.set(client, c);
      step();
    }
    if (recTx !== 0 && started !== undefined && !txs.has(recTx)) {
      txs.set(recTx, started);
      started = undefined;
    }
    const opt = recTx !== 0 && txs.has(recTx) ? { tx: txs.get(recTx) } : undefined;
    if (op === 'read') await c.tryRead(p, opt).catch(no);
    else if (op === 'write') await c.write(p, 'x', opt).catch(no);
    else if (op === 'directory') await c.directory(p, opt).catch(no);
    else if (op === 'getPerms') await c.getPerms(p, opt).catch(no);
    else if (op === 'mkdir') await c.mkdir(p, opt).catch(no);
    else if (op === 'txStart') started = await c.transactionStart();
    else if (op === 'txEnd') {
      if (txs.has(recTx)) await c.transactionEnd(txs.get(recTx), true).catch(no);
      txs.delete(recTx);
    } else watches.push(await c.watch(p, `t${watches.length}`));
    step();
  }
  const ms = performance.now() - t0;
  for (const w of watches) await w.close();
  for (const c of conns.values()) c.close();
  return ms;
}
