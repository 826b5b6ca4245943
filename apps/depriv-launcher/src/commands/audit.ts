import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  compileSeccomp,
  deviceModelAllowlist,
  qemuXenHvmProfile,
} from '@xen-depriv/privcmd-filter';
import { disassembleSeccomp } from '@xen-depriv/privcmd-filter/seccomp';
import { allowlistFromCatalogue, CATALOGUE, DEFAULT_QUOTAS } from '@xen-depriv/xs-restrict';
import { color, processOutput, table, wrap } from '../output.js';
import type { RegisterCommand } from './index.js';

export const registerAudit: RegisterCommand = (program, globals) => {
  const audit = program.command('audit').description('print the audits and the compiled filters');
  audit
    .command('seccomp')
    .description("the device model's seccomp allowlist and its compiled BPF program, disassembled")
    .action(() => {
      const out = processOutput(Boolean(globals().json));
      const program = compileSeccomp(deviceModelAllowlist);
      if (out.json) {
        out.line(
          JSON.stringify({
            ok: true,
            allowlist: deviceModelAllowlist,
            instructions: program.length / 8,
            programHex: Buffer.from(program).toString('hex'),
          }),
        );
        return;
      }
      out.line(
        `# device-model seccomp filter: ${deviceModelAllowlist.syscalls.length} syscalls, ${program.length / 8} BPF instructions`,
      );
      out.line(disassembleSeccomp(program));
    });

  audit
    .command('privcmd')
    .description("the DM_OP profile the device model's privcmd passes, and the privcmd ops audit")
    .action(() => {
      const out = processOutput(Boolean(globals().json));
      const audit = readAuditTable();
      const profile = JSON.parse(JSON.stringify(qemuXenHvmProfile, bigintHex)) as {
        name: string;
        limits: { maxBufs: number; maxBufSize: number };
        ops: Record<string, Record<string, unknown>>;
      };
      if (out.json) {
        out.line(JSON.stringify({ ok: true, profile, audit: audit?.table ?? null }));
        return;
      }
      out.line(
        color.bold(
          `# DM_OP profile ${profile.name}: ${Object.keys(profile.ops).length} ops allowed, at most ${profile.limits.maxBufs} buffers of ${profile.limits.maxBufSize} bytes`,
        ),
      );
      out.line(
        table(
          ['op', 'rule'],
          Object.entries(profile.ops).map(([op, rule]) => [
            op,
            Object.entries(rule)
              .map(
                ([k, v]) =>
                  `${k} ${Array.isArray(v) ? v.join(k === 'msiAddress' ? '..' : ',') : String(v)}`,
              )
              .join(', ') || '(any arguments)',
          ]),
          out.width,
        ),
      );
      out.line(color.dim('every other DM_OP is denied with EPERM'));
      out.line();
      if (!audit) {
        out.line('# privcmd ops audit: the table (privcmd-filter/audit/privcmd-ops.json) is not');
        out.line('  installed with the package; read docs/audits/privcmd-ops.md in the repository');
        return;
      }
      out.line(wrap(`# privcmd ops audit (${audit.table.source})`, out.width, '  '));
      out.line(
        table(
          ['operation', 'class', 'uses'],
          audit.table.entries.map((e) => [e.name, e.class, String(e.uses?.length ?? 0)]),
          out.width,
        ),
      );
      out.line();
      for (const [k, v] of Object.entries(audit.table.classes)) {
        out.line(wrap(`${k}: ${v}`, out.width, '  '));
      }
    });

  audit
    .command('xenstore')
    .description('the xenstore keys QEMU uses and what the restricting proxy lets a DM do')
    .action(() => {
      const out = processOutput(Boolean(globals().json));
      const rules = allowlistFromCatalogue(CATALOGUE);
      if (out.json) {
        out.line(
          JSON.stringify({
            ok: true,
            catalogue: CATALOGUE,
            allowlist: rules.length,
            quotas: DEFAULT_QUOTAS,
          }),
        );
        return;
      }
      const allowed = CATALOGUE.filter((e) => e.deprivNeeds).length;
      out.line(
        wrap(
          `# xenstore keys of QEMU 7.2 / Xen 4.17: ${CATALOGUE.length} entries, ${allowed} a depriv DM still uses (${rules.length} proxy rules)`,
          out.width,
          '  ',
        ),
      );
      out.line(
        table(
          ['key ({domid} = the guest)', 'QEMU does', 'depriv DM'],
          CATALOGUE.map((e) => [
            e.pattern.replace('/local/domain/', '/l/d/'),
            e.ops.join(',') || '-',
            e.deprivNeeds ? color.ok('allowed') : color.warn('refused'),
          ]),
          out.width,
        ),
      );
      out.line(color.dim('/l/d/ is /local/domain/; every other request of the DM is EACCES,'));
      out.line(color.dim('privileged ops (introduce, release, set_target, ...) included'));
      out.line();
      out.line(color.bold('# per-domain quotas the daemon enforces (xenstored defaults)'));
      out.line(
        table(
          ['quota', 'limit'],
          Object.entries(DEFAULT_QUOTAS).map(([k, v]) => [k, String(v)]),
          out.width,
        ),
      );
    });
};

const bigintHex = (_key: string, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v);

interface AuditTable {
  source: string;
  classes: Record<string, string>;
  entries: { name: string; kind: string; class: string; uses?: string[] }[];
}

/** privcmd-filter's machine-readable audit, beside its dist/ in a checkout or an install. */
function readAuditTable(): { table: AuditTable } | null {
  try {
    const entry = fileURLToPath(import.meta.resolve('@xen-depriv/privcmd-filter'));
    const path = fileURLToPath(new URL('../audit/privcmd-ops.json', `file://${entry}`));
    return { table: JSON.parse(readFileSync(path, 'utf8')) as AuditTable };
  } catch {
    return null;
  }
}
