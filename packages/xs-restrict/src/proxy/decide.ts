/**
 * The proxy's refusals as values: `decide()` looks at one request of a
 * deprivileged device model and returns either the request to forward
 * (with its path made absolute) or a refusal with the errno the DM gets and
 * the rule that refused it. Pure: no socket, no state beyond its arguments.
 */
import type { CatalogueOp } from '../catalogue.js';
import type { XsMessage } from '../wire/codec.js';
import {
  XENSTORE_PAYLOAD_MAX,
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
  XS_UNWATCH,
  XS_WATCH,
  XS_WRITE,
  type XsErrno,
} from '../wire/constants.js';
import { splitStrings } from '../wire/strings.js';
import type { Allowlist } from './allowlist.js';

/** XS_FLAG_PRIV requests: never a device model's. */
const PRIVILEGED = new Map<number, string>([
  [XS_CONTROL, 'CONTROL'],
  [XS_INTRODUCE, 'INTRODUCE'],
  [XS_RELEASE, 'RELEASE'],
  [XS_SET_TARGET, 'SET_TARGET'],
  [XS_RESUME, 'RESUME'],
  [XS_IS_DOMAIN_INTRODUCED, 'IS_DOMAIN_INTRODUCED'],
]);

/** Requests that name a node, and the catalogue operation each one is. */
const PATH_OPS = new Map<number, CatalogueOp>([
  [XS_READ, 'read'],
  [XS_DIRECTORY, 'read'],
  [XS_DIRECTORY_PART, 'read'],
  [XS_GET_PERMS, 'read'],
  [XS_WRITE, 'write'],
  [XS_MKDIR, 'mkdir'],
  [XS_RM, 'rm'],
  [XS_SET_PERMS, 'setPerms'],
  [XS_WATCH, 'watch'],
]);

/** A watch as the client set it and as it is registered upstream. */
export interface ClientWatch {
  /** Absolute path as registered upstream. */
  path: string;
  token: string;
  /** Prefix (with trailing '/') to strip from events, for a watch the client set with a relative path. */
  strip: string | undefined;
}

export type Decision =
  | {
      verdict: 'forward';
      /** The payload to send upstream: the request's own, or one with its path made absolute. */
      payload: Buffer;
      /** The catalogue entry whose rule allowed a path request. */
      allowedBy?: string;
      /** A path request's absolute path: the first string of `payload`, decoded. */
      path?: string;
      /** XS_WATCH: the watch, recorded when the daemon accepts it. */
      watch?: ClientWatch;
      /** XS_UNWATCH: the key of the watch it removes. */
      watchKey?: string;
    }
  | {
      verdict: 'refuse';
      errno: XsErrno;
      /** Which rule refused: `privileged-op:NAME`, `not-in-allowlist:OP`, `quota:…`, `malformed`, … */
      rule: string;
      /** The absolute path, for a request that named one. */
      path?: string;
    };

/** What decide() needs to know besides the request. */
export interface DecideContext {
  readonly allowlist: Allowlist;
  /** Where the DM's relative paths point (it is a dom0 backend: `/local/domain/0`). */
  readonly homePath: string;
  readonly maxTransactions: number;
  readonly maxWatches: number;
  /** This client's transactions, open or being started. */
  readonly transactions: number;
  /** Watches of all the proxy's clients, set or being set. */
  readonly watches: number;
}

function refuse(errno: XsErrno, rule: string, path?: string): Decision {
  return path === undefined
    ? { verdict: 'refuse', errno, rule }
    : { verdict: 'refuse', errno, rule, path };
}

function absolute(ctx: DecideContext, path: string): string {
  return path.startsWith('/') || path.startsWith('@') ? path : `${ctx.homePath}/${path}`;
}

/** The proxy's verdict on one request of the device model. */
export function decide(m: XsMessage, ctx: DecideContext): Decision {
  const priv = PRIVILEGED.get(m.type);
  if (priv !== undefined) return refuse('EACCES', `privileged-op:${priv}`);
  switch (m.type) {
    case XS_GET_DOMAIN_PATH:
    case XS_TRANSACTION_END:
    case XS_RESET_WATCHES:
      return { verdict: 'forward', payload: m.payload };
    case XS_TRANSACTION_START:
      if (m.txId === 0 && ctx.transactions >= ctx.maxTransactions)
        return refuse('ENOSPC', 'quota:transactions');
      return { verdict: 'forward', payload: m.payload };
    case XS_UNWATCH: {
      const [path, token] = splitStrings(m.payload);
      if (path === undefined || token === undefined) return refuse('EINVAL', 'malformed');
      const abs = absolute(ctx, path);
      return {
        verdict: 'forward',
        payload: Buffer.from(`${abs}\0${token}\0`),
        watchKey: `${abs}\0${token}`,
      };
    }
  }
  const op = PATH_OPS.get(m.type);
  if (op === undefined) return refuse('EACCES', 'unknown-type');
  const z = m.payload.indexOf(0);
  if (z < 0) return refuse('EINVAL', 'malformed');
  const given = m.payload.toString('utf8', 0, z);
  const abs = absolute(ctx, given);
  const rule = ctx.allowlist.match(op, abs);
  if (!rule) return refuse('EACCES', `not-in-allowlist:${op}`, abs);
  const rest = m.payload.subarray(z + 1);
  const payload = abs === given ? m.payload : Buffer.concat([Buffer.from(`${abs}\0`), rest]);
  if (payload.length > XENSTORE_PAYLOAD_MAX) return refuse('E2BIG', 'payload-after-rewrite', abs);
  if (m.type !== XS_WATCH)
    return { verdict: 'forward', payload, allowedBy: rule.entryId, path: abs };
  const token = splitStrings(rest)[0];
  if (token === undefined) return refuse('EINVAL', 'malformed', abs);
  if (ctx.watches >= ctx.maxWatches) return refuse('E2BIG', 'quota:watches', abs);
  const strip = abs === given ? undefined : `${ctx.homePath}/`;
  return {
    verdict: 'forward',
    payload,
    allowedBy: rule.entryId,
    path: abs,
    watch: { path: abs, token, strip },
  };
}
