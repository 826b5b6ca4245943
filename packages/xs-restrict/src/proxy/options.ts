/** The proxy's options, limits, log records and statistics. */
import type { XenstoreQuotas } from '../rules/quotas.js';
import type { XenstoreServer } from '../server/server.js';
import { XENSTORE_HEADER_SIZE, XENSTORE_PAYLOAD_MAX, type XsErrno } from '../wire/constants.js';
import type { AllowRule } from './allowlist.js';

/** Per-client bounds the proxy enforces on the device model. */
export interface ProxyLimits {
  /** Watches of all the proxy's clients together (xenstored's per-domain count; refused with E2BIG). */
  maxWatches: number;
  /** Open transactions per client (refused with ENOSPC). */
  maxTransactions: number;
  /** Requests forwarded and not yet answered per client; beyond it the proxy stops reading that client. */
  maxInFlight: number;
  /** Reply bytes queued for a client that does not read; beyond it the client is closed. */
  maxOutputBytes: number;
  /** Concurrent clients (QEMU opens a handful of xenstore connections). */
  maxClients: number;
}

export const DEFAULT_PROXY_LIMITS: Readonly<ProxyLimits> = {
  maxWatches: 128,
  maxTransactions: 10,
  maxInFlight: 64,
  maxOutputBytes: 256 * 1024,
  maxClients: 16,
};

/**
 * Where the proxy forwards to. A string is a unix socket whose connections
 * already act as the proxied domid (the C xenstored peer's `domN.sock`,
 * `XenstoreServer.listenDomain`); a server is attached to as that domid.
 */
export type ProxyUpstream = string | XenstoreServer | PrivilegedUpstream;

/**
 * The daemon's privileged socket (`/run/xenstored/socket`), or a server
 * attached to as dom0: the proxy then decides every request as xenstored
 * 4.17 decides it for the proxied domid (see README, "Privileged upstream").
 */
export interface PrivilegedUpstream {
  privileged: string | XenstoreServer;
}

export interface RestrictingProxyOptions {
  /** The guest domain the device model serves; every request acts as this domid upstream. */
  domid: number;
  upstream: ProxyUpstream;
  /** Default: allowlistFromCatalogue(CATALOGUE). */
  allowlist?: readonly AllowRule[];
  /** Where the DM's relative paths point: it is a dom0 backend, so `/local/domain/0`. */
  homePath?: string;
  limits?: Partial<ProxyLimits>;
  /**
   * Privileged upstream only: the daemon's quotas to apply to the domid (xenstored's `-Q`).
   * Default: the embedded server's own quotas, or C xenstored 4.17's defaults for a socket path.
   */
  quotas?: Partial<XenstoreQuotas>;
  /** Receives one JSON line per refusal or client-closing event. Default: stderr. */
  log?: (line: string) => void;
  /**
   * Also log every request let through (event `forwarded`, with its type, ids, absolute path and
   * the allowing rule): a device model's whole xenstore traffic, such as the start-up sequence a
   * QEMU makes (bench/xenstore-proxy replays one with `--sequence`). Default false.
   */
  trace?: boolean;
  /**
   * Keep polling for this many microseconds after a client sent data, instead of blocking at
   * once (0 to 1000000; default 0, block at once): as `XenstoreServer`'s `pollMicros`.
   */
  pollMicros?: number;
}

/** A refusal, a client-closing event or (with `trace`) a forwarded request, as logged (one JSON object per line). */
export interface ProxyLogRecord {
  time: string;
  domid: number;
  client: number;
  event:
    | 'forwarded'
    | 'refused'
    | 'protocol-error'
    | 'slow-reader'
    | 'event-overflow'
    | 'upstream-closed'
    | 'too-many-clients';
  request?: { type: string; reqId: number; txId: number; path?: string };
  rule?: string;
  errno?: XsErrno;
  detail?: string;
}

export interface ProxyClientStats {
  id: number;
  inFlight: number;
  watches: number;
  transactions: number;
  /** Bytes held by the two parsers (client side, upstream side) for partial messages. */
  parserBytes: number;
  /** Reply bytes queued in the client socket. */
  outputBytes: number;
}

/** The most bytes of message data the proxy holds for one client besides its socket's output queue. */
export function proxyClientBufferBound(): number {
  return 2 * (XENSTORE_HEADER_SIZE + XENSTORE_PAYLOAD_MAX);
}
