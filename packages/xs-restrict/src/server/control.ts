/**
 * XS_CONTROL as C xenstored 4.17 answers it (xenstored_control.c): `help`,
 * `check`, `log on|off`, `logfile`, `memreport` (accepted once a log file is
 * set, as C does; no report is written), `print`, `quota` and `quota-soft`,
 * with C's texts byte for byte. `live-update` answers EINVAL, and
 * `quota <domid>` reports memory as 0 (C's figure is its allocator's).
 */
import type { XenstoreQuotas } from '../rules/quotas.js';
import { splitStrings } from '../wire/strings.js';
import type { XenstoreConnection } from './connection.js';
import type { ServerCore } from './core.js';
import { atoi } from './domain.js';
import { XsFail } from './node.js';

const HELP =
  'check\t\nlog\ton|off\nlive-update\t[-c <cmdline>] [-F] [-t <timeout>] <file>\n    Default timeout is 60 seconds.\nlogfile\t<file>\nmemreport\t[<file>]\nprint\t<string>\nquota\t[set <name> <val>|<domid>]\nquota-soft\t[set <name> <val>]\nhelp\t\n';

/** `quota` and `quota set`: C's names, the field of ours each maps to, and C's description. */
const HARD: [string, keyof XenstoreQuotas | 'outstanding' | 'memory', string][] = [
  ['nodes', 'nodesPerDomain', 'Nodes per domain'],
  ['watches', 'watchesPerDomain', 'Watches per domain'],
  ['transactions', 'transactionsPerConnection', 'Transactions per domain'],
  ['outstanding', 'outstanding', 'Outstanding requests per domain'],
  ['transaction-nodes', 'nodesPerTransaction', 'Max. number of accessed nodes per transaction'],
  ['memory', 'memory', 'Total Xenstore memory per domain (error level)'],
  ['node-size', 'entrySize', 'Max. size of a node'],
  ['path-max', 'pathLength', 'Max. length of a node path'],
  ['permissions', 'permsPerNode', 'Max. number of permissions per node'],
];

const line = (name: string, value: number, what: string): string =>
  `${name.padEnd(17)}: ${String(value).padStart(8)} ${what}\n`;

function hardValue(core: ServerCore, key: (typeof HARD)[number][1]): number {
  if (key === 'outstanding' || key === 'memory') return core.reportedQuotas[key];
  return core.quotas[key];
}

/** `quota <domid>`: what the domain uses (memory is not accounted here: C's figure is its allocator's). */
function domainUsage(core: ServerCore, domid: number): string {
  if (domid !== 0 && !core.domains.get(domid)?.introduced) throw new XsFail('ENOENT');
  let watches = 0;
  let transactions = 0;
  for (const c of core.connections) {
    if (c.domid !== domid) continue;
    watches += c.watches.length;
    transactions += c.transactions.size;
  }
  const row = (name: string, v: number): string => `${name.padEnd(16)}: ${String(v).padStart(8)}\n`;
  return `Domain ${domid}:\n${row('nodes', core.entries.get(domid) ?? 0)}${row('watches', watches)}${row('transactions', transactions)}${row('outstanding', 0)}${row('memory', 0)}`;
}

function quota(core: ServerCore, args: string[]): string {
  if (args.length === 0)
    return `Quota settings:\n${HARD.map(([n, k, w]) => line(n, hardValue(core, k), w)).join('')}`;
  if (args[0] === 'set') {
    const [, name, val] = args;
    const q = HARD.find(([n]) => n === name);
    if (args.length !== 3 || !q || val === undefined) throw new XsFail('EINVAL');
    const v = atoi(val);
    const key = q[1];
    if (key === 'outstanding' || key === 'memory') core.reportedQuotas[key] = v;
    else core.quotas[key] = v;
    return 'OK';
  }
  if (args.length !== 1) throw new XsFail('EINVAL');
  return domainUsage(core, atoi(args[0] as string) >>> 0);
}

function quotaSoft(core: ServerCore, args: string[]): string {
  if (args.length === 0)
    return `Quota settings:\n${line('memory', core.reportedQuotas.memorySoft, 'Total Xenstore memory per domain (warning level)')}`;
  if (args.length === 3 && args[0] === 'set' && args[1] === 'memory') {
    core.reportedQuotas.memorySoft = atoi(args[2] as string);
    return 'OK';
  }
  throw new XsFail('EINVAL');
}

const COMMANDS: Record<string, (core: ServerCore, args: string[]) => string> = {
  check: (_core, args) => (args.length === 0 ? 'OK' : fail()),
  log: (_core, args) =>
    args.length === 1 && (args[0] === 'on' || args[0] === 'off') ? 'OK' : fail(),
  logfile: (core, args) => {
    if (args.length !== 1) fail();
    core.reportedQuotas.logfile = true;
    return 'OK';
  },
  // C writes the report to its log file, and refuses without one; there is no report here.
  memreport: (core, args) => (args.length === 0 && core.reportedQuotas.logfile ? 'OK' : fail()),
  print: (_core, args) => (args.length === 1 ? 'OK' : fail()),
  quota,
  'quota-soft': quotaSoft,
  help: (_core, args) => (args.length === 0 ? HELP : fail()),
};

function fail(): never {
  throw new XsFail('EINVAL');
}

/** XS_CONTROL (dom0 only; the table's XS_FLAG_PRIV refuses guests first). */
export function control(core: ServerCore, _conn: XenstoreConnection, p: Buffer): string {
  const [cmd, ...args] = splitStrings(p);
  const f = cmd === undefined ? undefined : COMMANDS[cmd];
  if (f === undefined || !Object.hasOwn(COMMANDS, cmd as string)) throw new XsFail('EINVAL');
  return `${f(core, args)}\0`;
}
