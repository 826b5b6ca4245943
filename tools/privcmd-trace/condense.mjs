// Condenses a privcmd-trace recording for committing: every distinct request (all fields but `seq`
// equal) is kept once, where it first occurred, with `repeat` counting its occurrences. The order
// of first occurrences, and so every restriction and bind before the requests that depend on it,
// is kept; repeats of an identical request get the same answer from the kernel and the models.
//   node tools/privcmd-trace/condense.mjs FULL.jsonl > CONDENSED.jsonl
import { readFileSync } from 'node:fs';

export function condense(text) {
  const first = new Map();
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    const r = JSON.parse(line);
    const { seq: _seq, ...rest } = r;
    const key = JSON.stringify(rest);
    const seen = first.get(key);
    if (seen) seen.repeat++;
    else first.set(key, { ...r, repeat: 1 });
  }
  return `${[...first.values()].map((r) => JSON.stringify(r)).join('\n')}\n`;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop())) {
  process.stdout.write(condense(readFileSync(process.argv[2], 'utf8')));
}
