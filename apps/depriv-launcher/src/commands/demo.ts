import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DeviceModel } from '@xen-depriv/dmop-abi';
import { SimHypervisor } from '@xen-depriv/dmop-abi/sim';
import { MapCache, MapCacheError, MemfdForeignMemory } from '@xen-depriv/memmap';
import { type PolicyContext, qemuXenHvmProfile, SimPrivcmd } from '@xen-depriv/privcmd-filter';
import { pidsOfUid } from '@xen-depriv/qemu-launcher';
import { RestrictingProxy, XenstoreClient, XenstoreServer } from '@xen-depriv/xs-restrict';
import { validateConfig } from '../config.js';
import { EXIT_FAILED } from '../errors.js';
import { color, type Output, processOutput, table, wrap } from '../output.js';
import { assess, isRoot } from '../runtime.js';
import { defaultSettings } from '../service/engine.js';
import { openEngine, requestOf } from '../service/local.js';
import type { RegisterCommand } from './index.js';

type Outcome = 'ok' | 'skipped' | 'failed';

interface StepResult {
  readonly step: string;
  readonly outcome: Outcome;
  readonly detail: string;
  readonly events: { readonly allowed: boolean; readonly what: string; readonly result: string }[];
}

/** HVMMEM_mmio_dm (hvm_op.h): a type QEMU never sets, so the profile refuses it. */
const HVMMEM_mmio_dm = 2;
/** SHUTDOWN_suspend (sched.h): QEMU only ever asks for poweroff or reboot. */
const SHUTDOWN_suspend = 2;

const errText = (e: unknown): string => {
  const x = e as { code?: string; message?: string };
  const reason = (x.message ?? String(e))
    .replace(/^\S+: [A-Z0-9]+ \(errno \d+\): /, '')
    .replace(/^profile [\w-]+: /, '');
  return x.code ? `${x.code}: ${reason}` : reason;
};

class Recorder {
  readonly events: StepResult['events'] = [];
  constructor(private readonly out: Output) {}

  allowed(what: string, result = 'ok'): void {
    this.events.push({ allowed: true, what, result });
    if (!this.out.json) {
      const text = `allowed ${what}${result === 'ok' ? '' : ` → ${result}`}`;
      this.out.line(
        `  ${wrap(text, this.out.width - 2, '          ').replace(/^allowed/, color.ok('allowed'))}`,
      );
    }
  }

  denied(what: string, err: unknown, why = ''): void {
    const result = errText(err) + why;
    this.events.push({ allowed: false, what, result });
    if (!this.out.json) {
      this.out.line(`  ${color.bad('denied ')} ${what}`);
      this.out.line(color.dim(wrap(`          ${result}`, this.out.width, '          ')));
    }
  }

  note(text: string): void {
    if (!this.out.json) this.out.line(color.dim(wrap(`  ${text}`, this.out.width, '  ')));
  }
}

/** Runs `fn`, which must throw: a call the demo expects to be refused. */
async function expectDenied(
  rec: Recorder,
  what: string,
  fn: () => unknown,
  explain: () => string = () => '',
): Promise<void> {
  try {
    await fn();
  } catch (err) {
    rec.denied(what, err, explain());
    return;
  }
  throw new Error(`expected ${what} to be refused, it was allowed`);
}

const hex = (n: number | bigint) => `0x${n.toString(16)}`;

async function stepXenstore(
  rec: Recorder,
  dir: string,
  domid: number,
  other: number,
): Promise<string> {
  const server = new XenstoreServer();
  const dom0Path = join(dir, 'xenstored.sock');
  const proxyPath = join(dir, `xenstore-proxy-dom${domid}.sock`);
  const refusals: { rule?: string }[] = [];
  const proxy = new RestrictingProxy({
    domid,
    upstream: server,
    log: (line) => {
      const r = JSON.parse(line) as { event: string; rule?: string };
      if (r.event === 'refused') refusals.push(r);
    },
  });
  await server.listen(dom0Path);
  await proxy.listen(proxyPath);
  const clients: XenstoreClient[] = [];
  try {
    const dom0 = await XenstoreClient.connect({ path: dom0Path });
    clients.push(dom0);
    const dmDir = `/local/domain/0/device-model/${domid}`;
    await dom0.write('/local/domain/0/name', 'Domain-0');
    await dom0.mkdir(dmDir);
    await dom0.setPerms(dmDir, [
      { domid: 0, perm: 'n' },
      { domid, perm: 'b' },
    ]);
    await dom0.write(`/local/domain/${other}/console/tty`, '/dev/pts/7');
    // Left owned by dom0 alone: the allowlist passes QEMU's write, the daemon's permissions refuse it.
    await dom0.write(`/local/domain/${domid}/console/tty`, '');
    rec.note(
      `dom0 made ${dmDir} writable by dom${domid}; the DM's only xenstore socket is the restricting proxy, acting as dom${domid} upstream`,
    );
    const dm = await XenstoreClient.connect({ path: proxyPath });
    clients.push(dm);
    await dm.write(`${dmDir}/state`, 'running');
    rec.allowed(`DM write ${dmDir}/state`);
    const seen = await dom0.readString(`${dmDir}/state`);
    rec.allowed('dom0 read it back', JSON.stringify(seen));
    const denied = async (what: string, fn: () => Promise<unknown>) => {
      const before = refusals.length;
      await expectDenied(rec, what, fn, () => {
        const rule = refusals[before]?.rule;
        return rule ? ` (proxy rule ${rule})` : ' (the daemon refused it)';
      });
    };
    await denied('DM read /local/domain/0/name (not a QEMU key)', () =>
      dm.readString('/local/domain/0/name'),
    );
    await denied(`DM write ${dmDir}/evil`, () => dm.write(`${dmDir}/evil`, 'x'));
    await denied(`DM read /local/domain/${other}/console/tty (another guest)`, () =>
      dm.readString(`/local/domain/${other}/console/tty`),
    );
    await denied(`DM set_target ${domid} → 0 (privileged)`, () => dm.setTarget(domid, 0));
    await denied(`DM write /local/domain/${domid}/console/tty (dom0's node)`, () =>
      dm.write(`/local/domain/${domid}/console/tty`, '/dev/pts/3'),
    );
    return `${refusals.length} refused by the proxy, 1 by xenstored`;
  } finally {
    for (const c of clients) await c.close();
    await proxy.close();
    await server.close();
  }
}

function stepDmOp(rec: Recorder, hv: SimHypervisor, domid: number, other: number): string {
  const context: PolicyContext = {
    guestMemoryEndGfn: 0x1000n,
    ioRanges: [
      { type: 'port', start: 0x3f8n, end: 0x3ffn },
      { type: 'mmio', start: 0xf0000000n, end: 0xf0ffffffn },
    ],
  };
  const privcmd = new SimPrivcmd({ domid, profile: qemuXenHvmProfile, context, backend: hv });
  const dm = new DeviceModel(privcmd);
  rec.note(
    `HVM dom${domid} (16 MiB) in the simulated hypervisor; privcmd restricted to it, profile ${qemuXenHvmProfile.name}`,
  );
  const id = dm.createIoreqServer(domid, 1);
  rec.allowed('create_ioreq_server', `id ${id}`);
  dm.mapIoRangeToIoreqServer(domid, id, false, 0x3f8n, 0x3ffn);
  rec.allowed('map_io_range port 0x3f8-0x3ff (declared UART)');
  dm.setIoreqServerState(domid, id, true);
  rec.allowed('set_ioreq_server_state enabled');
  dm.injectMsi(domid, 0xfee00000n, 0x4041);
  rec.allowed('inject_msi addr 0xfee00000 (local APIC window)');
  dm.setIsaIrqLevel(domid, 4, 1);
  rec.allowed('set_isa_irq_level irq 4');
  const seen = hv.domain(domid);
  rec.note(
    `hypervisor state: ${seen.ioreqServers.size} ioreq server, ${seen.interrupts.length} interrupts delivered`,
  );
  expectDeniedSync(rec, 'map_io_range port 0x60-0x64 (undeclared)', () =>
    dm.mapIoRangeToIoreqServer(domid, id, false, 0x60n, 0x64n),
  );
  expectDeniedSync(rec, 'inject_msi addr 0xfed00000 (outside the APIC)', () =>
    dm.injectMsi(domid, 0xfed00000n, 0),
  );
  expectDeniedSync(rec, `set_mem_type HVMMEM_mmio_dm gfn ${hex(0x100)}`, () =>
    dm.setMemType(domid, HVMMEM_mmio_dm, 0x100n, 1),
  );
  expectDeniedSync(rec, 'remote_shutdown SHUTDOWN_suspend', () =>
    dm.shutdown(domid, SHUTDOWN_suspend),
  );
  expectDeniedSync(rec, `create_ioreq_server on dom${other} (not its guest)`, () =>
    dm.createIoreqServer(other, 1),
  );
  const { allowed, denied } = privcmd.counts;
  privcmd.close();
  return `${allowed} allowed, ${denied} denied`;
}

function expectDeniedSync(rec: Recorder, what: string, fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    rec.denied(what, err);
    return;
  }
  throw new Error(`expected ${what} to be refused, it was allowed`);
}

function stepMemory(rec: Recorder, domid: number): string {
  const guest = new MemfdForeignMemory({ domid, frames: 0x1000 });
  const cache = new MapCache({ foreignMemory: guest, domid });
  try {
    const text = 'written by the device model';
    const gpa = 0x12345;
    const view = cache.translate(gpa, text.length, true);
    view.set(new TextEncoder().encode(text));
    cache.unlock(view);
    rec.allowed(`DM write ${hex(gpa)} through the mapcache`, `${text.length} bytes`);
    const back = new TextDecoder().decode(guest.read(gpa, text.length));
    if (back !== text)
      throw new Error(`expected ${JSON.stringify(text)} in guest RAM, saw ${JSON.stringify(back)}`);
    rec.allowed(`guest RAM (the memfd) at ${hex(gpa)}`, JSON.stringify(back));
    guest.write(0x80000, new TextEncoder().encode('written by the guest'));
    const dmView = cache.translate(0x80000, 20);
    rec.allowed(
      'DM read 0x80000 through the mapcache',
      JSON.stringify(new TextDecoder().decode(dmView)),
    );
    expectDeniedSync(rec, `DM map gfn ${hex(0x1000)} (past the guest's RAM)`, () =>
      cache.translate(0x1000 * 4096, 16),
    );
    const s = cache.stats;
    rec.note(
      `mapcache: ${s.entries} buckets mapped (${s.mappedBytes >> 20} MiB), ${s.hits} hits, ${s.misses} misses`,
    );
    return 'bytes match both ways';
  } catch (err) {
    if (err instanceof MapCacheError) throw new Error(`mapcache: ${err.message}`);
    throw err;
  } finally {
    cache.close();
    guest.close();
  }
}

interface QemuResult {
  detail: string;
  confined: { name: string; ok: boolean; actual: string }[];
}

async function stepQemu(
  rec: Recorder,
  out: Output,
  dir: string,
  domid: number,
  binary: string,
): Promise<QemuResult> {
  const stateDir = join(dir, 'state');
  // The one launch path: the service's engine, in process, on the embedded defaults.
  const user = { scheme: 'pool' as const, first: 3_300_000, count: 64 };
  const engine = await openEngine(defaultSettings({ stateDir, target: 'embedded', user }));
  let launched = false;
  try {
    const req = requestOf(
      validateConfig({ domid, stateDir, qemu: { binary, machine: 'none', args: [] }, user }),
    );
    const r = await engine.launch(req);
    launched = true;
    const p = await engine.plan(req, { uid: r.uid, gid: r.gid });
    rec.note(`${binary}; xenstore through its restricting proxy`);
    rec.allowed(`launch -M none as uid ${r.uid} in its jail`, `pid ${r.pid}, ${r.status}`);
    const report = await engine.check(domid);
    const verdict = assess(report.checks);
    const rows = report.checks.map((c) => [
      c.name,
      c.ok ? color.ok('yes') : verdict.limited.includes(c) ? color.warn('lim') : color.bad('NO'),
      c.actual,
    ]);
    if (!out.json) {
      out.line(
        table(['check', 'ok', 'seen in /proc'], rows, out.width - 2)
          .split('\n')
          .map((l) => `  ${l}`)
          .join('\n'),
      );
    }
    const passed = report.checks.filter((c) => c.ok).length;
    for (const c of verdict.limited) {
      rec.note(`lim: ${c.name} is ${c.actual}, not ${c.expected}: ${r.limitations.join('; ')}`);
    }
    if (!verdict.ok) {
      throw new Error(`confinement: ${verdict.failed.map((c) => c.name).join(', ')} failed`);
    }
    await engine.destroy(domid);
    launched = false;
    const left: string[] = [];
    if (pidsOfUid(r.uid).length) left.push(`processes of uid ${r.uid}`);
    const leases = readdirSafe(join(stateDir, 'leases')).filter((n) => !n.startsWith('.'));
    if (leases.length) left.push(`leases ${leases.join(' ')}`);
    if (existsSync(dirname(p.paths.jail))) left.push(`jail ${dirname(p.paths.jail)}`);
    if (existsSync(p.paths.qmpSocket)) left.push(`socket ${p.paths.qmpSocket}`);
    if (existsSync(r.xenstoreSocket)) left.push(`socket ${r.xenstoreSocket}`);
    if (existsSync(p.paths.state)) left.push(`record ${p.paths.state}`);
    if (left.length) throw new Error(`left behind after destroy: ${left.join(', ')}`);
    rec.allowed(`destroy pid ${r.pid}: quit, reap uid ${r.uid}, release`, 'nothing left');
    return {
      detail: `${passed}/${report.checks.length} checks pass${verdict.limited.length ? `, ${verdict.limited.length} lim.` : ''}; uid ${r.uid}`,
      confined: report.checks.map((c) => ({ name: c.name, ok: c.ok, actual: c.actual })),
    };
  } finally {
    if (launched) await engine.destroy(domid).catch(() => undefined);
    await engine.close();
  }
}

function readdirSafe(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

export const registerDemo: RegisterCommand = (program, globals) => {
  program
    .command('demo')
    .description(
      'the whole flow on embedded defaults, no Xen needed: xenstore, DM_OP policy, guest memory, a confined QEMU, teardown',
    )
    .option('--qemu <binary>', 'the QEMU to launch confined', '/usr/bin/qemu-system-x86_64')
    .action(async (opts: { qemu: string }) => {
      const out = processOutput(Boolean(globals().json));
      const dir = mkdtempSync(join(tmpdir(), 'xen-depriv-demo-'));
      const hv = new SimHypervisor();
      const domid = hv.createHvmDomain({ memoryPages: 0x1000, vcpus: 2 });
      const other = hv.createHvmDomain({ memoryPages: 0x100 });
      const results: StepResult[] = [];
      const total = 5;
      const run = async (
        title: string,
        fn: (rec: Recorder) => Promise<string> | string,
      ): Promise<void> => {
        if (!out.json) out.line(color.bold(`[${results.length + 1}/${total}] ${title}`));
        const rec = new Recorder(out);
        let outcome: Outcome = 'ok';
        let detail: string;
        try {
          detail = await fn(rec);
          if (detail.startsWith('skipped:')) {
            outcome = 'skipped';
            detail = detail.slice('skipped:'.length).trim();
          }
        } catch (err) {
          outcome = 'failed';
          detail = (err as Error).message;
          if (!out.json) out.line(`  ${color.bad('failed:')} ${detail}`);
        }
        results.push({ step: title, outcome, detail, events: rec.events });
        if (!out.json) out.line();
      };

      try {
        await run('xenstore through the restricting proxy', (rec) =>
          stepXenstore(rec, dir, domid, other),
        );
        await run('DM_OP policy on a simulated HVM guest', (rec) =>
          stepDmOp(rec, hv, domid, other),
        );
        await run('guest memory through the mapcache (memfd)', (rec) => stepMemory(rec, domid));
        await run('a real QEMU, confined, checked, destroyed', async (rec) => {
          if (!isRoot()) {
            rec.note('not root: a confined launch changes uids, namespaces and mounts');
            rec.note('run `sudo npm run demo` to see this step');
            return 'skipped: needs root';
          }
          if (!existsSync(opts.qemu)) {
            rec.note(`${opts.qemu} is missing: apt-get install qemu-system-x86`);
            return `skipped: no ${opts.qemu}`;
          }
          const r = await stepQemu(rec, out, dir, domid, opts.qemu);
          return r.detail;
        });
      } finally {
        await run('teardown: sockets, state, temp files', (rec) => {
          rmSync(dir, { recursive: true, force: true });
          if (existsSync(dir)) throw new Error(`${dir} is still there`);
          rec.allowed(`removed ${dir}`);
          return 'nothing left';
        });
      }

      const failed = results.filter((r) => r.outcome === 'failed').length;
      if (out.json) {
        out.line(JSON.stringify({ ok: failed === 0, root: isRoot(), steps: results }));
      } else {
        const mark = (o: Outcome) =>
          o === 'ok'
            ? color.ok('ok')
            : o === 'skipped'
              ? color.warn('skipped')
              : color.bad('FAILED');
        out.line(color.bold('summary'));
        out.line(
          table(
            ['step', 'result', 'detail'],
            results.map((r, i) => [`${i + 1}. ${SHORT[i] ?? r.step}`, mark(r.outcome), r.detail]),
            out.width,
          ),
        );
      }
      if (failed) process.exitCode = EXIT_FAILED;
    });
};

const SHORT = ['xenstore', 'DM_OP policy', 'guest memory', 'confined QEMU', 'teardown'];
