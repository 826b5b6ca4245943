import { CATALOGUE, type CatalogueEntry, type CatalogueOp, PLACEHOLDERS } from '../catalogue.js';

/** One allowlist rule: the operations a deprivileged DM may perform on nodes matching `pattern`. */
export interface AllowRule {
  /** The catalogue entry the rule comes from. */
  readonly entryId: string;
  readonly pattern: string;
  readonly ops: readonly CatalogueOp[];
}

/** The rules for every catalogue entry a deprivileged DM still needs (`deprivNeeds` with operations). */
export function allowlistFromCatalogue(
  catalogue: readonly CatalogueEntry[] = CATALOGUE,
): AllowRule[] {
  return catalogue
    .filter((e) => e.deprivNeeds && e.ops.length > 0)
    .map((e) => ({ entryId: e.id, pattern: e.pattern, ops: [...e.ops] }));
}

const escapeRe = (s: string): string => s.replace(/[.*+?^$()|[\]\\]/g, '\\$&');

/**
 * A pattern as an anchored regex source. `{name}` is a placeholder from
 * PLACEHOLDERS (one path element's worth); `{a,b}` lists literal
 * alternatives. `{domid}` becomes `domid` when one is given.
 */
export function patternSource(pattern: string, domid?: number): string {
  let out = '';
  let i = 0;
  while (i < pattern.length) {
    const open = pattern.indexOf('{', i);
    if (open < 0) {
      out += escapeRe(pattern.slice(i));
      break;
    }
    const close = pattern.indexOf('}', open);
    if (close < 0) throw new SyntaxError(`pattern ${JSON.stringify(pattern)}: unclosed "{"`);
    out += escapeRe(pattern.slice(i, open));
    const inner = pattern.slice(open + 1, close);
    const shape = PLACEHOLDERS[inner];
    if (inner === 'domid' && domid !== undefined) out += String(domid);
    else if (shape !== undefined) out += shape;
    else out += `(?:${inner.split(',').map(escapeRe).join('|')})`;
    i = close + 1;
  }
  return `^${out}$`;
}

const ALLOWLIST_CACHE_SIZE = 1024;

interface CompiledRule {
  rule: AllowRule;
  re: RegExp;
}

/** Rules with `{domid}` bound to one domain, matched against absolute paths. */
export class Allowlist {
  private readonly compiled: CompiledRule[];
  constructor(
    readonly rules: readonly AllowRule[],
    readonly domid: number,
  ) {
    this.compiled = rules.map((rule) => ({
      rule,
      re: new RegExp(patternSource(rule.pattern, domid)),
    }));
  }

  /** Recent answers, per operation: a DM asks about the same few dozen paths over and over. */
  private readonly cache = new Map<CatalogueOp, Map<string, AllowRule | null>>();
  private cached = 0;

  /** The first rule allowing `op` on `path`, or undefined. */
  match(op: CatalogueOp, path: string): AllowRule | undefined {
    let byPath = this.cache.get(op);
    if (byPath === undefined) {
      byPath = new Map();
      this.cache.set(op, byPath);
    }
    const hit = byPath.get(path);
    if (hit !== undefined) return hit ?? undefined;
    let found: AllowRule | null = null;
    for (const c of this.compiled) {
      if (c.rule.ops.includes(op) && c.re.test(path)) {
        found = c.rule;
        break;
      }
    }
    // Bounded: a guest-chosen stream of paths cannot grow it past ALLOWLIST_CACHE_SIZE entries.
    if (this.cached >= ALLOWLIST_CACHE_SIZE) {
      for (const m of this.cache.values()) m.clear();
      this.cached = 0;
    }
    byPath.set(path, found);
    this.cached++;
    return found ?? undefined;
  }
}

/**
 * Problems between an allowlist and a catalogue, as sentences: a rule with no
 * catalogue entry (or a different pattern, or operations the entry does not
 * list), and a needed entry with no rule. Empty when they agree.
 */
export function allowlistProblems(
  rules: readonly AllowRule[],
  catalogue: readonly CatalogueEntry[] = CATALOGUE,
): string[] {
  const problems: string[] = [];
  const byId = new Map(catalogue.map((e) => [e.id, e]));
  for (const r of rules) {
    const e = byId.get(r.entryId);
    if (!e) {
      problems.push(`rule ${r.entryId} (${r.pattern}): no catalogue entry of that id`);
      continue;
    }
    if (e.pattern !== r.pattern)
      problems.push(`rule ${r.entryId}: pattern ${r.pattern}, catalogue says ${e.pattern}`);
    if (!e.deprivNeeds)
      problems.push(`rule ${r.entryId}: the catalogue says a depriv DM does not need it`);
    for (const op of r.ops)
      if (!e.ops.includes(op))
        problems.push(
          `rule ${r.entryId}: ${op} is not among the catalogue's ops (${e.ops.join(', ')})`,
        );
  }
  const ruled = new Set(rules.map((r) => r.entryId));
  for (const e of catalogue) {
    if (e.deprivNeeds && e.ops.length > 0 && !ruled.has(e.id))
      problems.push(
        `catalogue entry ${e.id} (${e.pattern}): needed by a depriv DM but no rule allows it`,
      );
  }
  return problems;
}
