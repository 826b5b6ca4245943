import type { CatalogueEntry } from './catalogue.js';

const cell = (s: string): string => s.replaceAll('|', '\\|');

/** The catalogue as the table of docs/audits/xenstore-keys.md (the test keeps the two equal). */
export function catalogueTable(catalogue: readonly CatalogueEntry[]): string {
  const head = [
    '| id | path | QEMU does | written by | when | needed by | source | depriv DM | replacement |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const rows = catalogue.map((e) => {
    const ops = e.ops.length === 0 ? '(toolstack only)' : e.ops.join(', ');
    const depriv = e.deprivNeeds ? 'allowed' : 'refused';
    const repl =
      e.replacement ?? (e.readBeforeDrop ? 'also read by the launcher before the drop' : '');
    return `| ${[e.id, `\`${e.pattern}\``, ops, e.writtenBy, e.when, e.feature, e.source, depriv, repl].map(cell).join(' | ')} |`;
  });
  return [...head, ...rows].join('\n');
}
