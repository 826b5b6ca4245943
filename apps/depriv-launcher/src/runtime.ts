import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  allocatorUidOps,
  type ConfinementCheck,
  deviceModelSeccomp,
  type LaunchPlan,
  type LaunchRecord,
  plan,
  probeQemu,
  type QemuCaps,
  type UidOps,
  xenDevices,
} from '@xen-depriv/qemu-launcher';
import {
  type Lease,
  type SchemeConfig,
  schemeFromConfig,
  UidAllocator,
} from '@xen-depriv/uid-allocator';
import { type LaunchConfig, XEN_QEMU_BINARY } from './config.js';
import { CliError, EXIT_USAGE } from './errors.js';
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

/**
 * The reaper uid sits just past the pool, so a pool starting at 3,000,000 keeps every uid the
 * launcher touches at 3,000,000 and up.
 */
export function allocatorFor(config: LaunchConfig): UidAllocator {
  const user = config.user as SchemeConfig;
  const extra = user.scheme === 'pool' ? { reaperUid: user.first + user.count } : {};
  try {
    return new UidAllocator({ scheme: schemeFromConfig(user, extra), stateDir: config.stateDir });
  } catch (err) {
    throw new CliError(`user: ${(err as Error).message}`, { exitCode: EXIT_USAGE, cause: err });
  }
}

export function uidOpsFor(config: LaunchConfig): UidOps {
  return allocatorUidOps(allocatorFor(config));
}

export async function probe(config: LaunchConfig): Promise<QemuCaps> {
  return probeQemu(config.qemu.binary);
}

/** The plan of one DM; with `lease` absent a placeholder uid shows what would be used. */
export function planFor(
  config: LaunchConfig,
  caps: QemuCaps,
  lease: Pick<Lease, 'uid' | 'gid'>,
  domid = config.domid,
): LaunchPlan {
  const dom0 = config.target === 'dom0';
  return plan(
    {
      domid,
      binary: caps.binary,
      mode: config.mode,
      machine: dom0 ? 'xenfv' : config.qemu.machine,
      args: config.qemu.args,
      stateDir: config.stateDir,
      ...(config.name === undefined ? {} : { name: config.name }),
      ...(dom0
        ? { xen: true, xenstoreSocket: DOM0.xenstoreSocket, devices: xenDevices(dom0Devices()) }
        : {}),
    },
    caps,
    lease,
    { seccomp: deviceModelSeccomp() },
  );
}

/** The misc minors of /dev/xen/* are dynamic: read them from the dom0's nodes. */
function dom0Devices() {
  const node = (name: string) => {
    // Linux's dev_t encoding (new_encode_dev): minor low 8 bits, major 12 bits, minor high bits.
    const rdev = statSync(`/dev/xen/${name}`).rdev;
    return { major: (rdev >> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
  };
  return {
    privcmd: node('privcmd'),
    evtchn: node('evtchn'),
    gntdev: node('gntdev'),
    xenbus: node('xenbus'),
  };
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
