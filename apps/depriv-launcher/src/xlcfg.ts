import { ConfigError } from './errors.js';

/** A value of xl.cfg(5): a string, a number, or a list of them. */
export type XlValue = string | number | XlValue[];

/**
 * Parses the subset of xl.cfg(5) syntax that domain configs use: `KEY = VALUE` settings, one
 * per line or separated by `;`, `#` comments, "double" or 'single' quoted strings, integers
 * (decimal or 0x hex) and `[a, b]` lists. Anything else is a ConfigError naming the line.
 */
export function parseXlCfg(text: string): Map<string, XlValue> {
  const out = new Map<string, XlValue>();
  let pos = 0;
  let line = 1;
  const fail = (what: string): never => {
    throw new ConfigError(
      `line ${line}`,
      what,
      'xl.cfg syntax is KEY = "string" | number | [list]',
    );
  };
  const skipBlank = (newlines: boolean): void => {
    while (pos < text.length) {
      const c = text[pos];
      if (c === '#') {
        while (pos < text.length && text[pos] !== '\n') pos++;
      } else if (c === ' ' || c === '\t' || c === '\r' || (newlines && (c === '\n' || c === ';'))) {
        if (c === '\n') line++;
        pos++;
      } else break;
    }
  };
  const parseValue = (): XlValue => {
    skipBlank(true);
    const c = text[pos];
    if (c === '"' || c === "'") {
      const end = text.indexOf(c, pos + 1);
      if (end < 0) return fail('unterminated string');
      const s = text.slice(pos + 1, end);
      if (s.includes('\n')) return fail('newline inside a string');
      pos = end + 1;
      return s;
    }
    if (c === '[') {
      pos++;
      const items: XlValue[] = [];
      skipBlank(true);
      if (text[pos] === ']') {
        pos++;
        return items;
      }
      for (;;) {
        items.push(parseValue());
        skipBlank(true);
        if (text[pos] === ',') {
          pos++;
          skipBlank(true);
          if (text[pos] === ']') {
            pos++;
            return items;
          }
          continue;
        }
        if (text[pos] === ']') {
          pos++;
          return items;
        }
        return fail(`expected , or ] in a list, saw ${JSON.stringify(text[pos] ?? 'end of file')}`);
      }
    }
    const m = /^(0x[0-9a-fA-F]+|-?[0-9]+)/.exec(text.slice(pos));
    if (m?.[1]) {
      pos += m[1].length;
      return Number(m[1]);
    }
    return fail(
      `expected a string, number or list, saw ${JSON.stringify(text.slice(pos, pos + 12))}`,
    );
  };
  for (;;) {
    skipBlank(true);
    if (pos >= text.length) return out;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)[ \t]*=/.exec(text.slice(pos));
    if (!m?.[1])
      return fail(`expected KEY = VALUE, saw ${JSON.stringify(text.slice(pos, pos + 12))}`);
    pos += m[0].length;
    const key = m[1];
    if (out.has(key)) return fail(`${key} is set twice`);
    out.set(key, parseValue());
    skipBlank(false);
    if (pos < text.length && text[pos] !== '\n' && text[pos] !== ';') {
      return fail(`unexpected ${JSON.stringify(text[pos])} after the value of ${key}`);
    }
  }
}
