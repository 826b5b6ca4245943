import { CATALOGUE, type CatalogueEntry, type CatalogueOp, PLACEHOLDERS } from './catalogue.js';

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

  /** The first rule allowing `op` on `path`, or undefined. */
  match(op: CatalogueOp, path: string): AllowRule | undefined {
    for (const c of this.compiled) {
      if (c.rule.ops.includes(op) && c.re.test(path)) return c.rule;
    }
    return undefined;
  }
}
