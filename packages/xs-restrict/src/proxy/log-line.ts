/**
 * The proxy's JSON log line, written out field by field. A refusal's line is formatted on the
 * proxy's thread between a DM's requests, and at a QEMU start-up, after a quiet spell, building
 * the record and serialising it with JSON.stringify held up the DM's next request by tens of µs
 * (bench/xenstore-proxy/README.md). The line is exactly what `JSON.stringify` gives for the
 * record with its keys in this order, the order every record of the proxy has.
 */
import type { ProxyLogRecord } from './options.js';

/** A record's fields besides the time, the domid and the client. */
export type LogFields = Omit<ProxyLogRecord, 'time' | 'domid' | 'client'>;

const str = (s: string): string => JSON.stringify(s);

/** `JSON.stringify({ time, domid, client, event, request, rule, errno, detail })`, the undefined ones left out. */
export function logLine(time: string, domid: number, client: number, rec: LogFields): string {
  let s = `{"time":${str(time)},"domid":${domid},"client":${client},"event":${str(rec.event)}`;
  const r = rec.request;
  if (r !== undefined) {
    s += `,"request":{"type":${str(r.type)},"reqId":${r.reqId},"txId":${r.txId}`;
    if (r.path !== undefined) s += `,"path":${str(r.path)}`;
    s += '}';
  }
  if (rec.rule !== undefined) s += `,"rule":${str(rec.rule)}`;
  if (rec.errno !== undefined) s += `,"errno":${str(rec.errno)}`;
  if (rec.detail !== undefined) s += `,"detail":${str(rec.detail)}`;
  return `${s}}`;
}

let minute = Number.NaN;
let prefix = '';

/** `new Date(ms).toISOString()`, its date, hour and minute formatted once a minute. */
export function isoTime(ms: number): string {
  const m = Math.floor(ms / 60_000);
  if (m !== minute) {
    const iso = new Date(m * 60_000).toISOString();
    // Every ISO string ends in "ss.mmmZ"; the year before it may have 4 or 6 digits and a sign.
    prefix = iso.slice(0, iso.length - 7);
    minute = m;
  }
  const inMinute = ms - m * 60_000;
  const sec = Math.floor(inMinute / 1000);
  const milli = inMinute - sec * 1000;
  return `${prefix}${sec < 10 ? '0' : ''}${sec}.${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`;
}
