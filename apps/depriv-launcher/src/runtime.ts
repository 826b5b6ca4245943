import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ConfinementCheck, LaunchPlan, LaunchRecord } from '@xen-depriv/qemu-launcher';
import { type LaunchConfig, XEN_QEMU_BINARY } from './config.js';
import { CliError } from './errors.js';
import { color, table } from './output.js';

/** Where a real dom0 keeps what the `dom0` target points the flow at. */
export const DOM0 = {
  xenstoreSocket: '/run/xenstored/socket',
  xenbus: '/dev/xen/xenbus',
  privcmd: '/dev/xen/privcmd',
  qemu: XEN_QEMU_BINARY,
} as const;

export function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

export function requireRoot(what: string, why = 'it changes uids, namespaces and mounts'): void {
  if (!isRoot()) {
    throw new CliError(`${what} needs root (${why})`, {
      code: 'not-root',
      hint: 'run it with sudo, or try `xen-depriv launch --dry-run CONFIG` as any user',
    });
  }
}

/** Fails with exit 3 when the config targets dom0 on a host that is not one. */
export function requireDom0(config: LaunchConfig): void {
  if (config.target !== 'dom0') return;
  const missing: string[] = [DOM0.privcmd].filter((p) => !existsSync(p));
  if (!existsSync(DOM0.xenstoreSocket) && !existsSync(DOM0.xenbus)) missing.push(DOM0.xenbus);
  if (missing.length) {
    throw new CliError(`target dom0: this host is not a Xen dom0 (no ${missing.join(', ')})`, {
      code: 'not-dom0',
      hint: 'use target "embedded" (the default) to run the flow without Xen',
    });
  }
}

/** The launch records under `stateDir/state`, parsed; a broken one is skipped. */
export function readRecords(stateDir: string): LaunchRecord[] {
  const dir = join(stateDir, 'state');
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const out: LaunchRecord[] = [];
  for (const n of names.sort()) {
    try {
      const raw = JSON.parse(readFileSync(join(dir, n), 'utf8')) as LaunchRecord & {
        plan: { seccomp: { profile: string; program: string } | null };
      };
      if (raw.version !== 1 || typeof raw.domid !== 'number') continue;
      const s = raw.plan.seccomp;
      out.push({
        ...raw,
        plan: {
          ...raw.plan,
          seccomp:
            s === null
              ? null
              : { profile: s.profile, program: new Uint8Array(Buffer.from(s.program, 'base64')) },
        } as LaunchPlan,
      });
    } catch {
      // A record being written (tmp + rename) or damaged: `recover` reports it.
    }
  }
  return out;
}

export function checksTable(checks: readonly ConfinementCheck[], width: number): string {
  return table(
    ['check', 'ok', 'expected', 'actual'],
    checks.map((c) => {
      const limited = assess(checks).limited.includes(c);
      return [
        c.name,
        c.ok ? color.ok('yes') : limited ? color.warn('lim') : color.bad('NO'),
        c.expected,
        c.ok ? c.actual : limited ? color.warn(c.actual) : color.bad(c.actual),
      ];
    }),
    width,
  );
}

/**
 * A report's verdict. One failing check is tolerated and shown apart: a bounding set left full
 * while no-new-privs is set and every other capability set is empty. The bounding set only caps
 * what execve of a file with capabilities could gain, and no-new-privs already forbids that gain
 * (qemu-launcher's `sys` spawner declares it as a limitation).
 */
export function assess(checks: readonly ConfinementCheck[]): {
  ok: boolean;
  failed: ConfinementCheck[];
  limited: ConfinementCheck[];
} {
  const byName = new Map(checks.map((c) => [c.name, c]));
  const inert = [
    'noNewPrivs',
    'capabilities.eff',
    'capabilities.prm',
    'capabilities.inh',
    'capabilities.amb',
  ].every((n) => byName.get(n)?.ok === true);
  const limited = checks.filter((c) => !c.ok && c.name === 'capabilities.bnd' && inert);
  const failed = checks.filter((c) => !c.ok && !limited.includes(c));
  return { ok: failed.length === 0, failed, limited };
}
