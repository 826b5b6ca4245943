/** Shared by the proxy tests: the nodes a toolstack prepares for a deprivileged DM, and request scripts. */
import { CATALOGUE, type CatalogueOp, PLACEHOLDERS } from '../src/catalogue.js';
import type { XenstoreClient } from '../src/client.js';
import { Allowlist, allowlistFromCatalogue } from '../src/proxy/allowlist.js';
import * as W from '../src/wire/index.js';
import type { RawConn } from './helpers/raw.js';
import { show, z } from './helpers/raw.js';

/** Sample values for the placeholders (they must exist in the fixture). */
const SAMPLE: Record<string, string> = { type: 'vkbd', devid: '0', n: '1', hex: 'f0000000' };

/** Every concrete path a pattern names, with sample values for its placeholders. */
export function instantiate(pattern: string, domid: number): string[] {
  const open = pattern.indexOf('{');
  if (open < 0) return [pattern];
  const close = pattern.indexOf('}', open);
  const inner = pattern.slice(open + 1, close);
  const head = pattern.slice(0, open);
  const tail = pattern.slice(close + 1);
  const choices =
    inner === 'domid'
      ? [String(domid)]
      : PLACEHOLDERS[inner] !== undefined
        ? [SAMPLE[inner] ?? 'x']
        : inner.split(',');
  return choices.flatMap((c) => instantiate(`${head}${c}${tail}`, domid));
}

/**
 * What libxl plus the launcher set up for a deprivileged DM of `domid`:
 * every catalogue path exists, dom0-owned with `b{domid}` where the DM
 * needs it, and guest-owned under the guest's directory.
 */
export async function prepareFixture(dom0: XenstoreClient, domid: number): Promise<void> {
  const home = `/local/domain/${domid}`;
  await dom0.mkdir(home);
  await dom0.setPerms(home, [{ domid, perm: 'n' }]);
  const needed = new Set(
    CATALOGUE.filter((e) => e.deprivNeeds).flatMap((e) => instantiate(e.pattern, domid)),
  );
  for (const e of CATALOGUE) {
    for (const path of instantiate(e.pattern, domid)) {
      if (!path.startsWith('/local/domain/0')) {
        if (!path.startsWith(home)) continue; // toolstack-only, outside the domain tree (/libxl)
        await dom0.write(path, `v:${e.id}`);
        await dom0.setPerms(path, [{ domid, perm: 'n' }]);
        continue;
      }
      await dom0.write(path, `v:${e.id}`);
      const perms: W.XsPerm[] = needed.has(path)
        ? [
            { domid: 0, perm: 'n' },
            { domid, perm: 'b' },
          ]
        : [{ domid: 0, perm: 'n' }];
      await dom0.setPerms(path, perms);
    }
  }
  // Directories the DM lists or watches must be readable to it.
  for (const dir of [
    '/local/domain/0',
    '/local/domain/0/device-model',
    `/local/domain/0/device-model/${domid}`,
    `/local/domain/0/device-model/${domid}/physmap`,
    '/local/domain/0/backend',
    '/local/domain/0/backend/vkbd',
    `/local/domain/0/backend/vkbd/${domid}`,
  ]) {
    await dom0.setPerms(dir, [
      { domid: 0, perm: 'n' },
      { domid, perm: 'r' },
    ]);
  }
  await dom0.setPerms(`/local/domain/0/device-model/${domid}`, [
    { domid: 0, perm: 'n' },
    { domid, perm: 'b' },
  ]);
}

export interface ScriptStep {
  type: number;
  payload: string | Buffer;
  /** For reporting: the catalogue entry and operation. */
  label: string;
}

/** The requests that exercise `op` on `path`. */
export function requestsFor(op: CatalogueOp, path: string, label: string): ScriptStep[] {
  switch (op) {
    case 'read':
      return [
        { type: W.XS_READ, payload: z(path), label },
        { type: W.XS_DIRECTORY, payload: z(path), label },
        { type: W.XS_GET_PERMS, payload: z(path), label },
      ];
    case 'write':
      return [{ type: W.XS_WRITE, payload: `${path}\0written-by-dm`, label }];
    case 'mkdir':
      return [{ type: W.XS_MKDIR, payload: z(path), label }];
    case 'rm':
      return [{ type: W.XS_RM, payload: z(path), label }];
    case 'watch':
      return [
        { type: W.XS_WATCH, payload: z(path, `tok-${label}`), label },
        { type: W.XS_UNWATCH, payload: z(path, `tok-${label}`), label },
      ];
    case 'setPerms':
      return [{ type: W.XS_SET_PERMS, payload: z(path, 'n0', 'r5'), label }];
  }
}

/** Every allowed request of the catalogue for `domid`, removals last (they take nodes away). */
export function allowedScript(domid: number): ScriptStep[] {
  const steps: ScriptStep[] = [];
  const removals: ScriptStep[] = [];
  for (const e of CATALOGUE) {
    if (!e.deprivNeeds) continue;
    for (const op of e.ops) {
      for (const path of instantiate(e.pattern, domid)) {
        const s = requestsFor(op, path, `${e.id}:${op}`);
        (op === 'rm' ? removals : steps).push(...s);
      }
    }
  }
  return [...steps, ...removals];
}

/** Send each step and record every message that arrives up to its reply (watch events included). */
export async function runScript(conn: RawConn, steps: readonly ScriptStep[]): Promise<string[]> {
  const out: string[] = [];
  let reqId = 100;
  for (const s of steps) {
    const id = reqId++;
    conn.send(s.type, id, 0, s.payload);
    for (const m of await conn.until(
      (x) => x.reqId === id && x.type !== W.XS_WATCH_EVENT,
      `reply to ${s.label}`,
    )) {
      out.push(`${s.label} ${normGen(m)}`);
    }
  }
  // A barrier: anything still queued (watch events) arrives before this reply.
  conn.send(W.XS_GET_DOMAIN_PATH, 99, 0, z('0'));
  for (const m of await conn.until((x) => x.reqId === 99, 'barrier')) out.push(`end ${normGen(m)}`);
  return out;
}

function normGen(m: W.XsMessage): string {
  if (m.type === W.XS_DIRECTORY_PART) {
    const i = m.payload.indexOf(0);
    return show({ ...m, payload: Buffer.concat([Buffer.from('<gen>'), m.payload.subarray(i)]) });
  }
  return show(m);
}

/** The catalogue operations outside each entry's allowed set (and no other rule's), as (entry, op, path) triples. */
export function refusedCases(domid: number): { label: string; op: CatalogueOp; path: string }[] {
  const allow = new Allowlist(allowlistFromCatalogue(), domid);
  const all: CatalogueOp[] = ['read', 'write', 'mkdir', 'rm', 'watch', 'setPerms'];
  const out: { label: string; op: CatalogueOp; path: string }[] = [];
  for (const e of CATALOGUE) {
    const allowed = e.deprivNeeds ? e.ops : [];
    for (const op of all) {
      if (allowed.includes(op)) continue;
      const path = instantiate(e.pattern, domid)[0] as string;
      if (allow.match(op, path)) continue;
      out.push({ label: `${e.id}:${op}`, op, path });
    }
  }
  return out;
}
