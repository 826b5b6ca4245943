import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CATALOGUE, type CatalogueEntry } from '../src/catalogue.js';
import { catalogueTable } from '../src/catalogue-markdown.js';
import {
  Allowlist,
  type AllowRule,
  allowlistFromCatalogue,
  allowlistProblems,
  patternSource,
} from '../src/proxy/allowlist.js';
import { nodePathProblem } from '../src/rules/paths.js';
import { instantiate } from './proxy-fixture.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const DOC = path.join(repo, 'docs/audits/xenstore-keys.md');
const BEGIN = '<!-- catalogue:begin (generated from packages/xs-restrict/src/catalogue.ts) -->';
const END = '<!-- catalogue:end -->';

/** Biome reformats markdown tables (padding, dash runs); compare modulo that. */
const normTable = (s: string): string =>
  s
    .split('\n')
    .map((l) => l.trim().replace(/\s+/g, ' ').replace(/-{3,}/g, '---'))
    .filter((l) => l !== '')
    .join('\n');

describe('the xenstore key catalogue', () => {
  it('and the default allowlist agree: no rule without an entry, no needed entry without a rule', () => {
    expect(allowlistProblems(allowlistFromCatalogue())).toEqual([]);
  });

  it('reports a rule with no catalogue entry, a widened rule, and a needed entry with no rule', () => {
    const rules = allowlistFromCatalogue();
    const extra: AllowRule = { entryId: 'made-up', pattern: '/tool/x', ops: ['read'] };
    expect(allowlistProblems([...rules, extra])).toEqual([
      'rule made-up (/tool/x): no catalogue entry of that id',
    ]);
    const widened = rules.map((r) =>
      r.entryId === 'dm-state' ? { ...r, ops: [...r.ops, 'rm' as const] } : r,
    );
    expect(allowlistProblems(widened)).toEqual([
      "rule dm-state: rm is not among the catalogue's ops (write)",
    ]);
    const missing = rules.filter((r) => r.entryId !== 'console-tty');
    expect(allowlistProblems(missing)).toEqual([
      'catalogue entry console-tty (/local/domain/{domid}/console/tty): needed by a depriv DM but no rule allows it',
    ]);
    const unneeded: CatalogueEntry[] = CATALOGUE.map((e) =>
      e.id === 'dm-state' ? { ...e, deprivNeeds: false } : e,
    );
    expect(allowlistProblems(rules, unneeded)).toEqual([
      'rule dm-state: the catalogue says a depriv DM does not need it',
    ]);
  });

  it('has unique ids, valid patterns, and a replacement for everything a depriv DM loses', () => {
    const ids = CATALOGUE.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const e of CATALOGUE) {
      expect(() => new RegExp(patternSource(e.pattern, 5)), e.id).not.toThrow();
      for (const p of instantiate(e.pattern, 5))
        expect(nodePathProblem(p), `${e.id}: ${p}`).toBeUndefined();
      if (!e.deprivNeeds && e.ops.length > 0) expect(e.replacement, e.id).toBeTruthy();
    }
  });

  it('placeholders match exactly one path element (property)', () => {
    const allow = new Allowlist(allowlistFromCatalogue(), 5);
    fc.assert(
      fc.property(
        fc.constantFrom(...CATALOGUE.filter((e) => e.deprivNeeds && e.ops.length > 0)),
        fc.stringMatching(/^[a-z0-9/]{1,12}$/),
        (e, junk) => {
          const p = instantiate(e.pattern, 5)[0] as string;
          const op = e.ops[0] as CatalogueEntry['ops'][number];
          expect(allow.match(op, p)).toBeDefined();
          // Neither a child nor a sibling prefix of an allowed node is allowed by that rule.
          const r = allow.match(op, `${p}/${junk}`);
          if (r) expect(r.entryId).not.toBe(e.id);
          expect(allow.match(op, `${p}${junk}x/`)).toBeUndefined();
        },
      ),
      { numRuns: 500 },
    );
    // Another domid never matches {domid}.
    expect(allow.match('write', '/local/domain/0/device-model/6/state')).toBeUndefined();
    expect(allow.match('write', '/local/domain/0/device-model/55/state')).toBeUndefined();
    expect(allow.match('write', '/local/domain/0/device-model/5/state')?.entryId).toBe('dm-state');
  });

  const qemu = path.join(repo, '.sources/qemu-7.2+dfsg');
  it.skipIf(!existsSync(qemu))(
    'names QEMU functions that exist in the QEMU 7.2 sources (needs scripts/fetch-sources.sh)',
    () => {
      for (const e of CATALOGUE) {
        for (const part of e.source.split(';')) {
          const m = /^\s*((?:hw|accel)\/[^:]+):(.+)$/.exec(part);
          if (!m) continue;
          const text = readFileSync(path.join(qemu, m[1] as string), 'utf8');
          for (const fn of (m[2] as string).split(',')) {
            const name = fn
              .trim()
              .replace(/\s*\(.*$/, '')
              .replace(/\*$/, '');
            expect(text.includes(name), `${e.id}: ${name} in ${m[1]}`).toBe(true);
          }
        }
      }
      // Every key QEMU's xen code reads or writes by name appears in the catalogue.
      const keys = new Set<string>();
      const files = [
        'hw/xen/xen-bus.c',
        'hw/block/xen-block.c',
        'hw/net/xen_nic.c',
        'hw/display/xenfb.c',
        'hw/char/xen_console.c',
        'hw/xen/xen-legacy-backend.c',
      ];
      for (const f of files) {
        const text = readFileSync(path.join(qemu, f), 'utf8');
        for (const m of text.matchAll(
          /xen(?:store|_device)_(?:read|write)_(?:be|fe)?_?\w*\([^,]+,\s*"([a-z0-9-]+)"|xen_device_(?:backend|frontend)_(?:printf|scanf)\(xendev,\s*"([a-z0-9-]+)"|xenstore_read_(?:int|str)\([^,]+,\s*"([a-z0-9-]+)"/g,
        )) {
          keys.add((m[1] ?? m[2] ?? m[3]) as string);
        }
      }
      expect(keys.size).toBeGreaterThan(30);
      const all = CATALOGUE.map((e) => e.pattern).join(' ');
      const missing = [...keys].filter(
        (k) => !new RegExp(`[/{,]${k}[},]|/${k}$|/${k} `).test(all) && !all.includes(`/${k}`),
      );
      expect(missing).toEqual([]);
      expect(readdirSync(path.join(qemu, 'hw/xen')).length).toBeGreaterThan(5);
    },
  );

  it('is what docs/audits/xenstore-keys.md shows (XSR_WRITE_DOC=1 rewrites the table)', () => {
    const table = catalogueTable(CATALOGUE);
    const doc = readFileSync(DOC, 'utf8');
    const b = doc.indexOf(BEGIN);
    const e = doc.indexOf(END);
    expect(b, `${DOC} needs the markers`).toBeGreaterThan(0);
    if (process.env.XSR_WRITE_DOC === '1') {
      writeFileSync(DOC, `${doc.slice(0, b + BEGIN.length)}\n\n${table}\n\n${doc.slice(e)}`);
      return;
    }
    expect(normTable(doc.slice(b + BEGIN.length, e))).toBe(normTable(table));
  });
});
