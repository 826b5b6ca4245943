/**
 * decide() without a socket: every catalogue entry, every operation a device
 * model could ask for on each of its paths (absolute and relative), and the
 * rules that are not the catalogue's (privileged requests, quotas, malformed
 * payloads). A refusal is a value: errno, rule and path are asserted.
 */
import { describe, expect, it } from 'vitest';
import { CATALOGUE, type CatalogueOp } from '../src/catalogue.js';
import { Allowlist, allowlistFromCatalogue, patternSource } from '../src/proxy/allowlist.js';
import { type DecideContext, type Decision, decide } from '../src/proxy/decide.js';
import * as W from '../src/wire/index.js';
import { instantiate } from './proxy-fixture.js';

const DOMID = 7;
const HOME = '/local/domain/0';
const allowlist = new Allowlist(allowlistFromCatalogue(), DOMID);

function ctx(over: Partial<DecideContext> = {}): DecideContext {
  return {
    allowlist,
    homePath: HOME,
    maxTransactions: 10,
    maxWatches: 128,
    transactions: 0,
    watches: 0,
    ...over,
  };
}

const msg = (type: number, payload: string | Buffer, txId = 0): W.XsMessage => ({
  type,
  reqId: 42,
  txId,
  payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
});

/** One request per wire type of each catalogue operation, naming `path`. */
const REQUESTS: [CatalogueOp, number, (path: string) => string][] = [
  ['read', W.XS_READ, (p) => `${p}\0`],
  ['read', W.XS_DIRECTORY, (p) => `${p}\0`],
  ['read', W.XS_DIRECTORY_PART, (p) => `${p}\0${0}\0`],
  ['read', W.XS_GET_PERMS, (p) => `${p}\0`],
  ['write', W.XS_WRITE, (p) => `${p}\0value`],
  ['mkdir', W.XS_MKDIR, (p) => `${p}\0`],
  ['rm', W.XS_RM, (p) => `${p}\0`],
  ['setPerms', W.XS_SET_PERMS, (p) => `${p}\0n0\0b${DOMID}\0`],
  ['watch', W.XS_WATCH, (p) => `${p}\0tok\0`],
];

/** The needed catalogue entries that allow `op` on the concrete `path`. */
function allowing(op: CatalogueOp, path: string): string[] {
  return CATALOGUE.filter(
    (e) =>
      e.deprivNeeds && e.ops.includes(op) && new RegExp(patternSource(e.pattern, DOMID)).test(path),
  ).map((e) => e.id);
}

function expectVerdict(d: Decision, op: CatalogueOp, abs: string, payload: Buffer): void {
  const ids = allowing(op, abs);
  if (ids.length === 0) {
    expect(d).toEqual({
      verdict: 'refuse',
      errno: 'EACCES',
      rule: `not-in-allowlist:${op}`,
      path: abs,
    });
    return;
  }
  if (d.verdict !== 'forward') throw new Error(`${op} ${abs}: refused by ${d.rule}`);
  expect(ids).toContain(d.allowedBy);
  expect(d.payload.toString('latin1')).toBe(payload.toString('latin1'));
  // The absolute path, decoded once here for the session and an embedded server.
  expect(d.path).toBe(abs);
  expect(d.path).toBe(W.firstString(d.payload));
}

describe('decide(): the catalogue', () => {
  for (const entry of CATALOGUE) {
    it(`${entry.id} (${entry.pattern}, ${entry.deprivNeeds ? entry.ops.join('+') || 'no ops' : 'refused'})`, () => {
      const paths = instantiate(entry.pattern, DOMID);
      expect(paths.length).toBeGreaterThan(0);
      for (const abs of paths) {
        for (const [op, type, body] of REQUESTS) {
          const d = decide(msg(type, body(abs)), ctx());
          expectVerdict(d, op, abs, Buffer.from(body(abs)));
          // The same request with a path relative to the DM's home is rewritten to the absolute one.
          if (abs.startsWith(`${HOME}/`)) {
            const rel = abs.slice(HOME.length + 1);
            const r = decide(msg(type, body(rel)), ctx());
            expectVerdict(r, op, abs, Buffer.from(body(abs)));
            if (r.verdict === 'forward' && type === W.XS_WATCH)
              expect(r.watch).toEqual({ path: abs, token: 'tok', strip: `${HOME}/` });
          }
        }
      }
      // A needed entry's own operations are allowed by the entry itself or one that also names it.
      if (entry.deprivNeeds)
        for (const op of entry.ops) expect(allowing(op, paths[0] as string)).toContain(entry.id);
    });
  }

  it('a path outside every pattern is refused for every operation', () => {
    for (const [op, type, body] of REQUESTS) {
      expect(decide(msg(type, body('/local/domain/0/elsewhere')), ctx())).toEqual({
        verdict: 'refuse',
        errno: 'EACCES',
        rule: `not-in-allowlist:${op}`,
        path: '/local/domain/0/elsewhere',
      });
    }
  });
});

describe('decide(): the rules beside the catalogue', () => {
  it.each([
    [W.XS_CONTROL, 'CONTROL'],
    [W.XS_INTRODUCE, 'INTRODUCE'],
    [W.XS_RELEASE, 'RELEASE'],
    [W.XS_SET_TARGET, 'SET_TARGET'],
    [W.XS_RESUME, 'RESUME'],
    [W.XS_IS_DOMAIN_INTRODUCED, 'IS_DOMAIN_INTRODUCED'],
  ])('privileged request %i (%s) is refused with EACCES', (type, name) => {
    expect(decide(msg(type, '7\0'), ctx())).toEqual({
      verdict: 'refuse',
      errno: 'EACCES',
      rule: `privileged-op:${name}`,
    });
  });

  it.each([W.XS_WATCH_EVENT, W.XS_ERROR, 20, W.XS_TYPE_COUNT, 0xffff])(
    'type %i is refused as unknown',
    (type) => {
      expect(decide(msg(type, 'x\0'), ctx())).toEqual({
        verdict: 'refuse',
        errno: 'EACCES',
        rule: 'unknown-type',
      });
    },
  );

  it('forwards GET_DOMAIN_PATH, TRANSACTION_END and RESET_WATCHES unchanged', () => {
    for (const type of [W.XS_GET_DOMAIN_PATH, W.XS_TRANSACTION_END, W.XS_RESET_WATCHES]) {
      const m = msg(type, '7\0');
      expect(decide(m, ctx())).toEqual({ verdict: 'forward', payload: m.payload });
    }
  });

  it('TRANSACTION_START: ENOSPC at the per-client limit (quota:transactions), nested starts pass to the daemon', () => {
    expect(decide(msg(W.XS_TRANSACTION_START, '\0'), ctx({ transactions: 9 })).verdict).toBe(
      'forward',
    );
    expect(decide(msg(W.XS_TRANSACTION_START, '\0'), ctx({ transactions: 10 }))).toEqual({
      verdict: 'refuse',
      errno: 'ENOSPC',
      rule: 'quota:transactions',
    });
    expect(decide(msg(W.XS_TRANSACTION_START, '\0', 5), ctx({ transactions: 10 })).verdict).toBe(
      'forward',
    );
  });

  it('WATCH: E2BIG at the proxy-wide limit (quota:watches)', () => {
    const path = `${HOME}/backend/vkbd/${DOMID}/0/state`;
    const body = `${path}\0tok\0`;
    expect(allowing('watch', path).length).toBeGreaterThan(0);
    expect(decide(msg(W.XS_WATCH, body), ctx({ watches: 127 })).verdict).toBe('forward');
    expect(decide(msg(W.XS_WATCH, body), ctx({ watches: 128 }))).toEqual({
      verdict: 'refuse',
      errno: 'E2BIG',
      rule: 'quota:watches',
      path,
    });
  });

  it('malformed payloads: no nul, a watch without a token, an unwatch without one', () => {
    expect(decide(msg(W.XS_READ, '/local/domain/0'), ctx())).toEqual({
      verdict: 'refuse',
      errno: 'EINVAL',
      rule: 'malformed',
    });
    const path = `${HOME}/backend/vkbd/${DOMID}/0/state`;
    expect(decide(msg(W.XS_WATCH, `${path}\0`), ctx())).toEqual({
      verdict: 'refuse',
      errno: 'EINVAL',
      rule: 'malformed',
      path,
    });
    expect(decide(msg(W.XS_UNWATCH, `${path}\0`), ctx())).toEqual({
      verdict: 'refuse',
      errno: 'EINVAL',
      rule: 'malformed',
    });
  });

  it('UNWATCH: the path made absolute, keyed as the watch was', () => {
    expect(decide(msg(W.XS_UNWATCH, `backend/vkbd/${DOMID}/0/state\0tok\0`), ctx())).toEqual({
      verdict: 'forward',
      payload: Buffer.from(`${HOME}/backend/vkbd/${DOMID}/0/state\0tok\0`),
      watchKey: `${HOME}/backend/vkbd/${DOMID}/0/state\0tok`,
    });
  });

  it('a relative path whose absolute form no longer fits the payload limit: E2BIG', () => {
    const rel = `backend/vkbd/${DOMID}/0/state`;
    const data = 'v'.repeat(W.XENSTORE_PAYLOAD_MAX - rel.length - 1);
    expect(decide(msg(W.XS_WRITE, `${rel}\0${data}`), ctx())).toEqual({
      verdict: 'refuse',
      errno: 'E2BIG',
      rule: 'payload-after-rewrite',
      path: `${HOME}/${rel}`,
    });
  });
});
