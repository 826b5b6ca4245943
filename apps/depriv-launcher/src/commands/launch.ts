import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type DestroyTarget,
  destroy,
  formatPlan,
  type LaunchRecord,
  type LaunchStep,
  launch,
  recover,
  verifyConfinement,
} from '@xen-depriv/qemu-launcher';
import { type Lease, type SchemeConfig, schemeFromConfig } from '@xen-depriv/uid-allocator';
import { checkHostForConfig, type LaunchConfig, loadConfig, validateConfig } from '../config.js';
import { CliError, ConfigError, EXIT_FAILED, EXIT_USAGE } from '../errors.js';
import { cleanDmLeftovers, LAUNCHER_FILE, saveLauncherConfig } from '../libxl-dm/state.js';
import { createLogger } from '../log.js';
import { color, type Output, processOutput, wrap } from '../output.js';
import {
  allocatorFor,
  assess,
  checksTable,
  planFor,
  probe,
  readRecords,
  requireDom0,
  requireRoot,
  uidOpsFor,
} from '../runtime.js';
import type { RegisterCommand } from './index.js';

const DEFAULT_STATE_DIR = '/run/xen-depriv';
export function launcherConfig(stateDir: string): LaunchConfig {
  let text: string;
  try {
    text = readFileSync(join(stateDir, LAUNCHER_FILE), 'utf8');
  } catch {
    // Nothing was launched from here: any valid config with this state dir reaches no lease.
    return validateConfig({ domid: 1, stateDir });
  }
  return validateConfig({ ...(JSON.parse(text) as object), stateDir });
}

// Test hook: the e2e test of `recover` kills the launcher at a named step, as a crash would.
function crashHook(): ((step: LaunchStep | string) => void) | undefined {
  const at = process.env.XEN_DEPRIV_TEST_CRASH_AT;
  if (!at) return undefined;
  return (step) => {
    if (step === at) process.kill(process.pid, 'SIGKILL');
  };
}

function firstCandidate(config: LaunchConfig): { uid: number; gid: number } {
  let scheme: ReturnType<typeof schemeFromConfig>;
  try {
    scheme = schemeFromConfig(
      config.user as SchemeConfig,
      config.user.scheme === 'pool' ? { reaperUid: config.user.first + config.user.count } : {},
    );
  } catch (err) {
    throw new ConfigError('user', (err as Error).message);
  }
  for (const c of scheme.candidates(config.domid)) return c;
  throw new ConfigError('user', `the scheme has no uid for domain ${config.domid}`);
}

function recordFor(stateDir: string, domid: number): LaunchRecord {
  const r = readRecords(stateDir).find((x) => x.domid === domid);
  if (!r) {
    throw new CliError(`no device model of domain ${domid} in ${stateDir}`, {
      hint: 'see `xen-depriv recover --state-dir DIR` for what a state directory holds',
    });
  }
  return r;
}

function parseDomid(text: string): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || n < 1 || n > 0x7fef) {
    throw new CliError(`expected a domid 1..32751, saw ${JSON.stringify(text)}`, {
      exitCode: EXIT_USAGE,
    });
  }
  return n;
}

export const registerLaunch: RegisterCommand = (program, globals) => {
  program
    .command('launch')
    .description('launch a deprivileged device model from CONFIG (JSON, or xl.cfg keys)')
    .argument('<config>', 'path of the config file (.json, or xl.cfg syntax)')
    .option('--dry-run', 'validate and print the launch plan, do nothing')
    .addHelpText(
      'after',
      `
JSON keys: domid, name, mode (jail|libxl-compat), target (embedded|dom0),
  qemu.{binary,machine,args}, user ({scheme:"pool",first,count} | range-base |
  shared | per-vm), stateDir.
xl.cfg keys: name, domid, type/builder = "hvm", dm_restrict = 1,
  device_model_user, device_model_override, device_model_args,
  device_model_version = "qemu-xen", xen_depriv_mode, xen_depriv_state_dir.`,
    )
    .action(async (configPath: string, opts: { dryRun?: boolean }) => {
      const g = globals();
      const out = processOutput(Boolean(g.json));
      const log = createLogger(Boolean(g.logJson));
      const config = loadConfig(configPath);
      checkHostForConfig(config);
      requireDom0(config);
      const caps = await probe(config);
      if (opts.dryRun) {
        // The uid the scheme would try first; the real one comes from the lease at launch.
        const { uid, gid } = firstCandidate(config);
        const p = planFor(config, caps, { uid, gid });
        log.info({ domid: p.domid, uid: p.uid, argv: p.argv, dryRun: true }, 'launch plan');
        out.line(
          out.json
            ? JSON.stringify({ ok: true, dryRun: true, plan: JSON.parse(formatPlan(p)) })
            : formatPlan(p).trimEnd(),
        );
        return;
      }
      requireRoot('launch');
      saveLauncherConfig(config);
      const allocator = allocatorFor(config);
      const uids = uidOpsFor(config);
      let lease: Lease = await allocator.acquire(config.domid);
      log.info({ domid: config.domid, uid: lease.uid }, 'lease acquired');
      const p = (() => {
        try {
          return planFor(config, caps, lease);
        } catch (err) {
          void allocator.release(lease);
          throw err;
        }
      })();
      let dm: Awaited<ReturnType<typeof launch>>;
      try {
        dm = await launch(p, {
          lease,
          uids,
          destroyOnQmpFailure: false,
          beforeStep: crashHook(),
        });
      } catch (err) {
        await allocator.release(lease).catch(() => undefined);
        throw new CliError(`launch of domain ${config.domid}: ${(err as Error).message}`, {
          cause: err,
          hint: `the QEMU log, if any: ${p.paths.log}`,
        });
      }
      lease = await allocator.attachDm(lease, dm.pid);
      const status = (await dm.qmp?.execute('query-status')) as { status?: string } | undefined;
      // The DM outlives this process: close our QMP session without condemning it.
      dm.qmp?.close();
      log.info({ domid: config.domid, pid: dm.pid, uid: p.uid }, 'device model running');
      const result = {
        ok: true,
        domid: config.domid,
        pid: dm.pid,
        uid: p.uid,
        gid: p.gid,
        status: status?.status ?? 'unknown',
        spawner: dm.spawner,
        limitations: dm.limitations,
        qmpSocket: p.paths.qmpSocket,
        log: p.paths.log,
        stateDir: config.stateDir,
      };
      if (out.json) out.line(JSON.stringify(result));
      else {
        out.line(
          `${color.ok('launched')} domain ${result.domid}: pid ${result.pid}, uid ${result.uid}, ${result.status}`,
        );
        out.line(`  qmp ${result.qmpSocket}`);
        out.line(`  log ${result.log}`);
        for (const l of dm.limitations) {
          out.line(wrap(`  ${color.warn('limitation:')} ${l}`, out.width, '    '));
        }
      }
      process.exit(0);
    });

  program
    .command('destroy')
    .description('take down the device model of DOMID: quit, kill, reap its uid, release, clean')
    .argument('<domid>', 'the domain whose device model to destroy')
    .option('--state-dir <dir>', 'state directory it was launched with', DEFAULT_STATE_DIR)
    .action(async (domidText: string, opts: { stateDir: string }) => {
      const out = processOutput(Boolean(globals().json));
      requireRoot('destroy');
      const domid = parseDomid(domidText);
      const r = recordFor(opts.stateDir, domid);
      const config = launcherConfig(opts.stateDir);
      const target: DestroyTarget = {
        plan: r.plan,
        pid: r.pid,
        startTime: r.startTime,
        lease: r.lease,
      };
      try {
        await destroy(target, { uids: uidOpsFor(config) });
      } catch (err) {
        throw new CliError(`destroy of domain ${domid}: ${(err as Error).message}`, {
          cause: err,
          hint: 'run `xen-depriv recover` to finish what is left',
        });
      }
      out.line(
        out.json
          ? JSON.stringify({ ok: true, domid, pid: r.pid, uid: r.plan.uid })
          : `${color.ok('destroyed')} domain ${domid}: pid ${r.pid} gone, uid ${r.plan.uid} empty and released, jail removed`,
      );
    });

  program
    .command('check')
    .description('the confinement report of a running device model, check by check')
    .argument('<pid|domid>', 'a domid launched from --state-dir, or any pid')
    .option('--state-dir <dir>', 'state directory it was launched with', DEFAULT_STATE_DIR)
    .option('--pid', 'read the argument as a pid even if a domain has that number')
    .action((arg: string, opts: { stateDir: string; pid?: boolean }) => {
      const out = processOutput(Boolean(globals().json));
      const n = Number(arg);
      if (!/^[0-9]+$/.test(arg) || n < 1) {
        throw new CliError(`expected a pid or domid, saw ${JSON.stringify(arg)}`, {
          exitCode: EXIT_USAGE,
        });
      }
      const r = opts.pid ? undefined : readRecords(opts.stateDir).find((x) => x.domid === n);
      const pid = r ? r.pid : n;
      if (pid === null) throw new CliError(`domain ${n} has no running device model`);
      let report: ReturnType<typeof verifyConfinement>;
      try {
        report = r
          ? verifyConfinement(pid, r.plan, r.root ? { expectedRoot: r.root } : {})
          : verifyConfinement(pid);
      } catch (err) {
        throw new CliError(`check of pid ${pid}: ${(err as Error).message}`, { cause: err });
      }
      const verdict = assess(report.checks);
      if (out.json) {
        out.line(
          JSON.stringify({
            ok: verdict.ok,
            pid,
            domid: r?.domid ?? null,
            failed: verdict.failed.map((c) => c.name),
            limited: verdict.limited.map((c) => c.name),
            checks: report.checks,
          }),
        );
      } else {
        out.line(
          `pid ${pid}${r ? ` (domain ${r.domid})` : ''}: ${verdict.ok ? color.ok('confined') : color.bad('NOT confined')}, ${report.checks.filter((c) => c.ok).length}/${report.checks.length} checks pass`,
        );
        out.line(checksTable(report.checks, out.width));
        for (const c of verdict.limited) {
          out.line(
            wrap(
              `${color.warn('lim:')} ${c.name} ${c.actual}: the bounding set is not cleared; no-new-privs makes it unreachable`,
              out.width,
              '  ',
            ),
          );
        }
      }
      if (!verdict.ok) process.exitCode = EXIT_FAILED;
    });

  program
    .command('recover')
    .description('finish launches and destroys a crashed launcher left half done')
    .option('--state-dir <dir>', 'state directory to recover', DEFAULT_STATE_DIR)
    .action(async (opts: { stateDir: string }) => {
      const out = processOutput(Boolean(globals().json));
      requireRoot('recover');
      const config = launcherConfig(opts.stateDir);
      const result = await recover(opts.stateDir, { uids: uidOpsFor(config) });
      const leases = await allocatorFor(config).recover();
      // xen-depriv-dm's proxy socket and QMP symlinks, of domains whose launcher died and whose
      // QEMU is gone (or never started).
      const keep = new Set([
        ...result.running.map((r) => r.domid),
        ...result.errors.map((e) => e.domid),
      ]);
      const dmLeftovers = cleanDmLeftovers(opts.stateDir, keep);
      const summary = {
        ok: result.errors.length === 0,
        finished: result.finished,
        running: result.running.map((r) => ({ domid: r.domid, pid: r.pid })),
        errors: result.errors.map((e) => ({ domid: e.domid, error: e.error.message })),
        leasesReclaimed: leases.reclaimed.map((s) => s.uid),
        dmLeftoversRemoved: dmLeftovers.flatMap((d) => d.removed),
      };
      if (out.json) out.line(JSON.stringify(summary));
      else printRecover(out, summary);
      if (!summary.ok) process.exitCode = EXIT_FAILED;
    });
};

function printRecover(
  out: Output,
  s: {
    finished: readonly number[];
    running: { domid: number; pid: number | null }[];
    errors: { domid: number; error: string }[];
    leasesReclaimed: number[];
    dmLeftoversRemoved: string[];
  },
): void {
  out.line(
    `recover: ${s.finished.length} half-done launch(es) or destroy(s) finished${s.finished.length ? ` (domains ${s.finished.join(', ')})` : ''}`,
  );
  for (const r of s.running) out.line(`  domain ${r.domid}: still running as pid ${r.pid}, kept`);
  if (s.leasesReclaimed.length)
    out.line(`  stale leases reclaimed: uids ${s.leasesReclaimed.join(', ')}`);
  if (s.dmLeftoversRemoved.length)
    out.line(`  xen-depriv-dm leftovers removed: ${s.dmLeftoversRemoved.join(', ')}`);
  for (const e of s.errors) out.error(`  ${color.bad('error')} domain ${e.domid}: ${e.error}`);
}
