import { stripVTControlCharacters } from 'node:util';
import pc from 'picocolors';
import stringWidth from 'string-width';
import wrapAnsi from 'wrap-ansi';

/** Where a command writes: lets tests capture output and fix the terminal width. */
export interface Output {
  readonly json: boolean;
  readonly width: number;
  line(text?: string): void;
  error(text: string): void;
}

export function processOutput(json: boolean): Output {
  return {
    json,
    width: Math.max(40, Math.min(process.stdout.columns || Number(process.env.COLUMNS) || 80, 160)),
    line: (text = '') => process.stdout.write(`${text}\n`),
    error: (text) => process.stderr.write(`${text}\n`),
  };
}

// picocolors honours NO_COLOR, FORCE_COLOR and whether stdout is a terminal.
export const color = {
  ok: (s: string) => pc.green(s),
  bad: (s: string) => pc.red(s),
  warn: (s: string) => pc.yellow(s),
  dim: (s: string) => pc.dim(s),
  bold: (s: string) => pc.bold(s),
};

/** Columns a string takes on a terminal: colours do not count, wide characters count twice. */
const visible = (s: string) => stringWidth(s);

function clip(s: string, width: number): string {
  if (visible(s) <= width) return s;
  // Cut on terminal columns, not UTF-16 units: a wide character never straddles the edge.
  const cut = wrapAnsi(stripVTControlCharacters(s), Math.max(1, width - 1), {
    hard: true,
    trim: false,
  }).split('\n')[0] as string;
  return `${cut}…`;
}

/**
 * A plain text table no wider than `width`: columns shrink from the widest down, and cells
 * that still do not fit are clipped with an ellipsis.
 */
export function table(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  width = 80,
): string {
  const cols = headers.length;
  const widths = headers.map((h, i) =>
    Math.max(visible(h), ...rows.map((r) => visible(r[i] ?? ''))),
  );
  const gap = 2;
  const budget = width - gap * (cols - 1);
  while (widths.reduce((a, b) => a + b, 0) > budget) {
    const widest = widths.indexOf(Math.max(...widths));
    if ((widths[widest] ?? 0) <= 4) break;
    widths[widest] = (widths[widest] ?? 0) - 1;
  }
  const render = (cells: readonly string[]) =>
    cells
      .map((c, i) => {
        const w = widths[i] ?? 0;
        const v = clip(c, w);
        return i === cols - 1 ? v : v + ' '.repeat(Math.max(0, w - visible(v)));
      })
      .join(' '.repeat(gap))
      .trimEnd();
  const rule = widths.map((w) => '─'.repeat(w)).join(' '.repeat(gap));
  return [render(headers), rule, ...rows.map(render)].join('\n');
}

/** p-th percentile (nearest rank) of a sorted list. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

/** A small text histogram of latencies in ms, `buckets` rows, bars scaled to `width`. */
export function histogram(values: readonly number[], buckets = 8, width = 80): string {
  if (values.length === 0) return '(no samples)';
  const min = Math.min(...values);
  const max = Math.max(...values);
  const span = max - min || 1;
  const counts = new Array<number>(buckets).fill(0);
  for (const v of values) {
    const i = Math.min(buckets - 1, Math.floor(((v - min) / span) * buckets));
    counts[i] = (counts[i] ?? 0) + 1;
  }
  const top = Math.max(...counts);
  const label = (i: number) => `${(min + (span * i) / buckets).toFixed(0).padStart(7)} ms`;
  const countWidth = String(top).length;
  const barWidth = Math.max(10, width - 10 - 3 - countWidth - 2);
  return counts
    .map((c, i) =>
      `${label(i)} │${'█'.repeat(Math.round((c / top) * barWidth)).padEnd(barWidth)} ${String(c).padStart(countWidth)}`.trimEnd(),
    )
    .join('\n');
}

/**
 * Word-wraps `text` to `width` columns (wrap-ansi: colours and wide characters measured as the
 * terminal shows them), every line after the first indented by `indent`; a word longer than a
 * line is clipped with an ellipsis rather than split.
 */
export function wrap(text: string, width: number, indent = ''): string {
  const first = /^\s*/.exec(text)?.[0] ?? '';
  const body = text.slice(first.length).replace(/\s+/g, ' ').trim();
  const [head = '', ...more] = wrapAnsi(body, Math.max(1, width - visible(first)), {
    hard: false,
  }).split('\n');
  const rest = more.join(' ');
  const tail =
    rest === ''
      ? []
      : wrapAnsi(rest, Math.max(1, width - visible(indent)), { hard: false })
          .split('\n')
          .map((l) => indent + l);
  return [first + head, ...tail].map((l) => clip(l, width)).join('\n');
}
