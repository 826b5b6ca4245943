import { formatPlan, verifyConfinement } from '@xen-depriv/qemu-launcher';
import {
  checkHostForConfig,
  type LaunchConfig,
  launchConfigSchema,
  loadConfig,
} from '../config.js';
import { CliError, ConfigError, type ErrorCode, EXIT_FAILED, EXIT_USAGE } from '../errors.js';
import { createLogger } from '../log.js';
import { color, type Output, processOutput, table, wrap } from '../output.js';
import { assess, checksTable, readRecords, requireDom0, requireRoot } from '../runtime.js';
import { DeprivdClient, RpcError } from '../service/client.js';
import {
  DEFAULT_STATE_DIR,
  type DmEngine,
  type DmInfo,
  EngineError,
  type LaunchResult,
} from '../service/engine.js';
import { guestPlan } from '../service/guest.js';
import { openEngine, requestOf, settingsForConfig } from '../service/local.js';
import { DEFAULT_SOCKET } from '../service/paths.js';
import { ERRORS } from '../service/schema.js';
import { xlKeysHelp } from '../xlkeys.js';
import type { RegisterCommand } from './index.js';

// Test hook: the e2e test of `recover` kills the launcher at a named step, as a crash would.
function crashHook(): ((step: string) => void) | undefined {
  const at = process.env.XEN_DEPRIV_TEST_CRASH_AT;
  if (!at) return undefined;
  return (step) => {
    if (step === at) process.kill(process.pid, 'SIGKILL');
  };
}

const socketDefault = () => process.env.XEN_DEPRIVD_SOCKET ?? DEFAULT_SOCKET;

const RPC_CODES: Readonly<Record<number, ErrorCode>> = {
  [ERRORS.INVALID_PARAMS.code]: 'usage',
  [ERRORS.EXISTS.code]: 'exists',
  [ERRORS.NOT_FOUND.code]: 'not-found',
  [ERRORS.HOST_CANNOT.code]: 'not-dom0',
  [ERRORS.FORBIDDEN.code]: 'not-root',
};

const ENGINE_CODES: Readonly<Record<string, ErrorCode>> = {
  BAD_PARAMS: 'usage',
  EXISTS: 'exists',
  NOT_FOUND: 'not-found',
  HOST_CANNOT: 'not-dom0',
};

/** An engine or RPC error as the CLI reports it: one line, the code and exit code of its kind. */
function cliError(e: unknown, what: string): CliError {
  if (e instanceof CliError) return e;
  const data = (e as { data?: { key?: unknown; detail?: unknown } }).data;
  if (typeof data?.key === 'string' && typeof data.detail === 'string') {
    // A config problem, named by its key, wherever it was found (here or in the service).
    return new ConfigError(data.key, data.detail);
  }
  const code =
    e instanceof RpcError
      ? (RPC_CODES[e.code] ?? 'failed')
      : e instanceof EngineError
        ? (ENGINE_CODES[e.code] ?? 'failed')
        : 'failed';
  return new CliError(`${what}: ${(e as Error).message}`, { code, cause: e });
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

/** The config as launch params over RPC: the service's own state directory applies. */
function configParams(config: LaunchConfig): Record<string, unknown> {
  const { stateDir: _ignored, user, ...rest } = config;
  // The schema's default scheme is not a choice: the service's own pool applies then.
  const isDefault =
    JSON.stringify(user) === JSON.stringify(launchConfigSchema.parse({ domid: 1 }).user);
  return isDefault ? rest : { ...rest, user };
}

/** Runs `fn` against the service when it listens at `socket`, else against an engine here. */
async function viaServiceOr<T>(
  socket: string,
  remote: (c: DeprivdClient) => Promise<T>,
  local: () => Promise<T>,
): Promise<{ value: T; via: 'service' | 'in-process' }> {
  const client = await DeprivdClient.connect(socket).catch(() => null);
  if (client === null) return { value: await local(), via: 'in-process' };
  try {
    return { value: await remote(client), via: 'service' };
  } finally {
    client.close();
  }
}

function printLaunch(out: Output, r: LaunchResult, via: string): void {
  if (out.json) {
    out.line(JSON.stringify({ ok: true, via, ...r }));
    return;
  }
  out.line(
    `${color.ok('launched')} domain ${r.domid}: pid ${r.pid}, uid ${r.uid}, ${r.status} (${via})`,
  );
  out.line(`  qmp      ${r.qmpSocket}`);
  out.line(`  xenstore ${r.xenstoreSocket} (restricting proxy)`);
  out.line(`  log      ${r.log}`);
  for (const l of r.limitations)
    out.line(wrap(`  ${color.warn('limitation:')} ${l}`, out.width, '    '));
}

export const registerLaunch: RegisterCommand = (program, globals) => {
  program
    .command('launch')
    .description(
      'launch a deprivileged device model from CONFIG (JSON, or xl.cfg keys): through xen-deprivd when it runs, else in this process',
    )
    .argument('<config>', 'path of the config file (.json, or xl.cfg syntax)')
    .option('--dry-run', 'validate and print the launch plan, do nothing')
    .option('--socket <path>', "xen-deprivd's socket (XEN_DEPRIVD_SOCKET)", socketDefault())
    .addHelpText(
      'after',
      () => `
JSON keys: domid, name, mode (jail|libxl-compat), target (embedded|dom0),
  qemu.{binary,machine,args}, user ({scheme:"pool",first,count} | range-base |
  shared | per-vm), stateDir, guest.{memoryMb,vcpus,maxVcpus,boot,vga,
  videoramMb,usb,usbDevices,localtime,disks,nics,vnc,serial}.
${xlKeysHelp(78)}
target "dom0" needs xen-deprivd (the DM's xenstore proxy lives in it).`,
    )
    .action(async (configPath: string, opts: { dryRun?: boolean; socket: string }) => {
      const g = globals();
      const out = processOutput(Boolean(g.json));
      const log = createLogger(Boolean(g.logJson));
      const config = loadConfig(configPath);
      // As any user a dry run works; a launch needs root before anything is looked at.
      if (!opts.dryRun) requireRoot('launch');
      checkHostForConfig(config, { dryRun: opts.dryRun === true });
      requireDom0(config);
      if (opts.dryRun) {
        // The printed plan is what would run: the same engine code, touching nothing.
        const engine = await openEngine(settingsForConfig(config), { readOnly: true });
        try {
          const p = await engine.plan(requestOf(config));
          log.info({ domid: p.domid, uid: p.uid, argv: p.argv, dryRun: true }, 'launch plan');
          const guest = guestPlan(config.guest, {
            domid: config.domid,
            xen: config.target === 'dom0',
          }).notes;
          out.line(
            out.json
              ? JSON.stringify({ ok: true, dryRun: true, plan: JSON.parse(formatPlan(p)), guest })
              : [formatPlan(p).trimEnd(), ...guest.map((n) => `guest: ${n}`)].join('\n'),
          );
        } catch (e) {
          throw cliError(e, `plan of domain ${config.domid}`);
        } finally {
          await engine.close();
        }
        return;
      }
      let r: { value: LaunchResult; via: 'service' | 'in-process' };
      try {
        r = await viaServiceOr(
          opts.socket,
          (c) => c.call<LaunchResult>('launch', configParams(config)),
          async () => {
            if (config.target === 'dom0') {
              throw new CliError(
                `target dom0 needs xen-deprivd: nothing listens at ${opts.socket}`,
                {
                  code: 'no-service',
                  hint: 'start it (systemctl start xen-deprivd, or xen-deprivd --socket PATH) and launch again',
                },
              );
            }
            const engine = await openEngine(settingsForConfig(config), { recover: false });
            try {
              return await engine.launch(requestOf(config), { beforeStep: crashHook() });
            } finally {
              // The DM outlives this process; a later destroy, recover or service adopts it.
              await engine.close();
            }
          },
        );
      } catch (e) {
        throw cliError(e, `launch of domain ${config.domid}`);
      }
      log.info(
        { domid: config.domid, dmPid: r.value.pid, uid: r.value.uid },
        'device model running',
      );
      printLaunch(out, r.value, r.via);
      process.exit(0);
    });

  program
    .command('destroy')
    .description('take down the device model of DOMID: quit, kill, reap its uid, release, clean')
    .argument('<domid>', 'the domain whose device model to destroy')
    .option('--state-dir <dir>', 'state directory (in process only)', DEFAULT_STATE_DIR)
    .option('--socket <path>', "xen-deprivd's socket (XEN_DEPRIVD_SOCKET)", socketDefault())
    .action(async (domidText: string, opts: { stateDir: string; socket: string }) => {
      const out = processOutput(Boolean(globals().json));
      const domid = parseDomid(domidText);
      requireRoot('destroy');
      let r: { value: { pid: number | null; uid: number | null }; via: string };
      try {
        r = await viaServiceOr(
          opts.socket,
          (c) => c.call<{ pid: number | null; uid: number | null }>('destroy', { domid }),
          async () => {
            const engine = await openEngine(settingsForDir(opts.stateDir));
            try {
              return await engine.destroy(domid);
            } finally {
              await engine.close();
            }
          },
        );
      } catch (e) {
        throw cliError(e, `destroy of domain ${domid}`);
      }
      out.line(
        out.json
          ? JSON.stringify({ ok: true, domid, pid: r.value.pid, uid: r.value.uid, via: r.via })
          : `${color.ok('destroyed')} domain ${domid}: pid ${r.value.pid ?? '-'} gone, uid ${r.value.uid ?? '-'} empty and released, jail removed (${r.via})`,
      );
    });

  program
    .command('check')
    .description(
      'the confinement report of a running device model, check by check: of a domain (DOMID or --domid N) or of any process (--pid N)',
    )
    .argument('[domid]', 'the domain whose device model to check (same as --domid)')
    .option('--domid <n>', 'the domain whose device model to check')
    .option('--pid <n>', 'any process: checked without a plan to compare with')
    .option('--state-dir <dir>', 'state directory (in process only)', DEFAULT_STATE_DIR)
    .option('--socket <path>', "xen-deprivd's socket (XEN_DEPRIVD_SOCKET)", socketDefault())
    .action(
      async (
        arg: string | undefined,
        opts: { stateDir: string; pid?: string; domid?: string; socket: string },
      ) => {
        const out = processOutput(Boolean(globals().json));
        const given = [arg, opts.domid, opts.pid].filter((x) => x !== undefined);
        if (given.length !== 1) {
          throw new CliError('check: expected exactly one of DOMID, --domid N or --pid N', {
            code: 'usage',
          });
        }
        requireRoot('check', "it reads other users' /proc entries");
        type Report = {
          domid: number | null;
          pid: number;
          checks: ReturnType<typeof verifyConfinement>['checks'];
        };
        let report: Report;
        if (opts.pid !== undefined) {
          const pid = Number(opts.pid);
          if (!/^[0-9]+$/.test(opts.pid) || pid < 1) {
            throw new CliError(`--pid: expected a pid, saw ${JSON.stringify(opts.pid)}`, {
              code: 'usage',
            });
          }
          try {
            report = { domid: null, pid, checks: verifyConfinement(pid).checks };
          } catch (e) {
            throw cliError(e, `check of pid ${pid}`);
          }
        } else {
          const domid = parseDomid((arg ?? opts.domid) as string);
          try {
            report = (
              await viaServiceOr(
                opts.socket,
                (c) => c.call<Report>('check', { domid }),
                async () => {
                  const r = readRecords(opts.stateDir).find((x) => x.domid === domid);
                  if (!r || r.pid === null) {
                    throw new CliError(`domain ${domid} has no device model in ${opts.stateDir}`, {
                      code: 'not-found',
                      hint: 'check --pid N checks any process; xen-depriv list shows the domains',
                    });
                  }
                  return {
                    domid,
                    pid: r.pid,
                    checks: verifyConfinement(r.pid, r.plan, r.root ? { expectedRoot: r.root } : {})
                      .checks,
                  };
                },
              )
            ).value;
          } catch (e) {
            throw cliError(e, `check of domain ${domid}`);
          }
        }
        const verdict = assess(report.checks);
        if (out.json) {
          out.line(
            JSON.stringify({
              ok: verdict.ok,
              pid: report.pid,
              domid: report.domid,
              failed: verdict.failed.map((c) => c.name),
              limited: verdict.limited.map((c) => c.name),
              checks: report.checks,
            }),
          );
        } else {
          out.line(
            `pid ${report.pid}${report.domid !== null ? ` (domain ${report.domid})` : ''}: ${verdict.ok ? color.ok('confined') : color.bad('NOT confined')}, ${report.checks.filter((c) => c.ok).length}/${report.checks.length} checks pass`,
          );
          out.line(checksTable(report.checks, out.width));
        }
        if (!verdict.ok) process.exitCode = EXIT_FAILED;
      },
    );

  program
    .command('list')
    .description('the device models of this host: domid, pid, uid, mode, state, age')
    .option('--state-dir <dir>', 'state directory (in process only)', DEFAULT_STATE_DIR)
    .option('--socket <path>', "xen-deprivd's socket (XEN_DEPRIVD_SOCKET)", socketDefault())
    .action(async (opts: { stateDir: string; socket: string }) => {
      const out = processOutput(Boolean(globals().json));
      const { value: dms, via } = await viaServiceOr(
        opts.socket,
        async (c) => (await c.call<{ dms: DmInfo[] }>('list')).dms,
        async () =>
          readRecords(opts.stateDir).map(
            (r): DmInfo => ({
              domid: r.domid,
              pid: r.pid,
              uid: r.plan.uid,
              mode: r.plan.mode,
              target: r.plan.xen ? 'dom0' : 'embedded',
              kind: 'config',
              state: r.phase,
              started: '',
              ageSeconds: 0,
              adopted: false,
            }),
          ),
      );
      if (out.json) {
        out.line(JSON.stringify({ ok: true, via, dms }));
        return;
      }
      out.line(
        table(
          ['domid', 'pid', 'uid', 'mode', 'state', 'age'],
          dms.map((d) => [
            String(d.domid),
            String(d.pid ?? '-'),
            String(d.uid ?? '-'),
            d.mode,
            d.state,
            via === 'service' ? age(d.ageSeconds) : '-',
          ]),
          out.width,
        ),
      );
      out.line(
        color.dim(
          `${dms.length} device model(s), from ${via === 'service' ? 'xen-deprivd' : opts.stateDir}`,
        ),
      );
    });

  program
    .command('status')
    .description("xen-deprivd's status: pid, target, device models, memory")
    .option('--socket <path>', "xen-deprivd's socket (XEN_DEPRIVD_SOCKET)", socketDefault())
    .action(async (opts: { socket: string }) => {
      const out = processOutput(Boolean(globals().json));
      const client = await DeprivdClient.connect(opts.socket).catch((e: Error) => {
        throw new CliError(`cannot reach xen-deprivd at ${opts.socket}: ${e.message}`, {
          code: 'no-service',
        });
      });
      if (client === null) {
        throw new CliError(`xen-deprivd is not running (nothing listens at ${opts.socket})`, {
          code: 'no-service',
          hint: 'systemctl start xen-deprivd, or xen-deprivd --socket PATH --state-dir DIR',
        });
      }
      try {
        const s = await client.call<Record<string, unknown>>('status');
        if (out.json) out.line(JSON.stringify({ ok: true, ...s }));
        else
          out.line(
            table(
              ['key', 'value'],
              Object.entries(s).map(([k, v]) => [k, String(v)]),
              out.width,
            ),
          );
      } finally {
        client.close();
      }
    });

  program
    .command('recover')
    .description('adopt running device models, finish launches and destroys left half done')
    .option('--state-dir <dir>', 'state directory to recover (in process only)', DEFAULT_STATE_DIR)
    .option('--socket <path>', "xen-deprivd's socket (XEN_DEPRIVD_SOCKET)", socketDefault())
    .action(async (opts: { stateDir: string; socket: string }) => {
      const out = processOutput(Boolean(globals().json));
      requireRoot('recover');
      type R = Awaited<ReturnType<DmEngine['recover']>>;
      const { value: r, via } = await viaServiceOr(
        opts.socket,
        (c) => c.call<R>('recover'),
        async () => {
          const engine = await openEngine(settingsForDir(opts.stateDir), { recover: false });
          try {
            return await engine.recover();
          } finally {
            await engine.close();
          }
        },
      );
      const summary = { ok: r.errors.length === 0, via, ...r };
      if (out.json) out.line(JSON.stringify(summary));
      else printRecover(out, summary);
      if (!summary.ok) process.exitCode = EXIT_FAILED;
    });
};

function settingsForDir(stateDir: string) {
  return settingsForConfig({ stateDir } as Pick<LaunchConfig, 'stateDir'>);
}

function age(s: number): string {
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

function printRecover(
  out: Output,
  s: {
    adopted: number[];
    finished: number[];
    errors: { domid: number; error: string }[];
    leasesReclaimed: number[];
    via: string;
  },
): void {
  out.line(
    `recover (${s.via}): ${s.finished.length} half-done launch(es) or destroy(s) finished${s.finished.length ? ` (domains ${s.finished.join(', ')})` : ''}`,
  );
  if (s.adopted.length) out.line(`  running, kept: domains ${s.adopted.join(', ')}`);
  if (s.leasesReclaimed.length)
    out.line(`  stale leases reclaimed: uids ${s.leasesReclaimed.join(', ')}`);
  for (const e of s.errors) out.error(`  ${color.bad('error')} domain ${e.domid}: ${e.error}`);
}
