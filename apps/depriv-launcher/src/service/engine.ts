// The one launch path of the project: `xen-deprivd`, the CLI (in process when no service runs)
// and the libxl shim all reach a device model through DmEngine. It owns the uid leases (through
// the host worker), the QEMU probe (cached on disk per binary identity), one restricting
// xenstore proxy per DM, the confined spawn, pidfd supervision, teardown with the reaper, and
// adoption of the DMs a previous service left running.
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import type { Server } from 'node:net';
import { posix } from 'node:path';
import {
  type DestroyTarget,
  type DmHandle,
  destroy,
  hostRootIsRamfs,
  type LaunchPlan,
  type LaunchRecord,
  launch,
  plan,
  probeQemu,
  processStartTime,
  type QemuCaps,
  recover as recoverRecords,
  verifyConfinement,
} from '@xen-depriv/qemu-launcher';
import { close as closeFd, pidfdOpen } from '@xen-depriv/sys';
import type { Lease, SchemeConfig } from '@xen-depriv/uid-allocator';
import {
  type ProxyUpstream,
  RestrictingProxy,
  XenstoreClient,
  XenstoreServer,
} from '@xen-depriv/xs-restrict';
import { type LibxlDmArgv, rewriteLibxlArgv, socketLinks } from '../libxl-dm/argv.js';
import {
  dom0XenDevices,
  isBlockDevice,
  LEGACY_BACKENDS,
  libxlBridges,
  withFiles,
} from '../libxl-dm/devices.js';
import { dmSeccomp } from '../seccomp.js';
import { XEN_QEMU_BINARY } from '../xen-qemu.js';
import { checkImage, openPlannedFds, reservePort, startBridges } from './devices.js';
import {
  allocOf,
  appendCapped,
  errorText,
  firstCandidate,
  isLease,
  removeCappedLog,
  rmLinkInto,
  safeReaddir,
} from './engine-helpers.js';
import { type GuestPlan, guestPlan } from './guest.js';
import { HostWorker } from './host.js';
import type { AllocatorRef } from './host-worker.js';
import { takeFd, watchExit } from './native.js';
import {
  type DmInfo,
  type DmState,
  EngineError,
  type EngineSettings,
  type ExitInfo,
  type LaunchRequest,
  type LaunchResult,
  type Target,
} from './types.js';

export * from './types.js';

/** What the engine keeps of a DM beyond qemu-launcher's record (for adoption after a restart). */
interface ServiceRecord {
  readonly version: 1;
  readonly domid: number;
  readonly kind: 'config' | 'libxl';
  readonly target: Target;
  readonly alloc: AllocatorRef;
  readonly proxySocket: string;
  readonly links: readonly string[];
  readonly started: string;
}

interface Dm {
  readonly domid: number;
  state: DmState;
  readonly kind: 'config' | 'libxl';
  readonly target: Target;
  readonly started: string;
  readonly adopted: boolean;
  alloc: AllocatorRef;
  lease: Lease | null;
  plan: LaunchPlan | null;
  handle: DestroyTarget | null;
  root: { dev: number; ino: number } | null;
  proxy: RestrictingProxy | null;
  proxySocket: string;
  links: string[];
  stopWatch: (() => void) | null;
  /** Closes the bridges from dom0 to the DM's sockets (VNC). */
  stopBridges: (() => Promise<void>) | null;
  tearing: Promise<ExitInfo> | null;
  /** Settles when the launch is over, however it ended (a destroy waits for it). */
  launched: Promise<void>;
  readonly listeners: Set<(e: ExitInfo) => void>;
}

/** The proxy's socket of domain `domid` (bound at /run/xenstored/socket in its root). */
export const proxySocketPath = (stateDir: string, domid: number): string =>
  posix.join(stateDir, 'xs-proxy', `dm-${domid}.sock`);
/**
 * The proxy's log of domain `domid` (JSON lines, capped: refusals, and with `xenstoreTrace` every
 * request let through), removed with the DM.
 */
const proxyLogPath = (stateDir: string, domid: number): string =>
  posix.join(stateDir, 'xs-proxy', `dm-${domid}.log`);
const serviceRecordPath = (stateDir: string, domid: number): string =>
  posix.join(stateDir, 'service', `dm-${domid}.json`);

export class DmEngine {
  readonly settings: EngineSettings;
  private readonly host: HostWorker;
  private readonly dms = new Map<number, Dm>();
  private readonly rootEntry: 'pivot_root' | 'chroot';
  private embedded: XenstoreServer | null = null;
  private xs: XenstoreClient | null = null;
  private releaseWatch: { close(): Promise<void> } | null = null;
  private closed = false;

  /** A dry run's engine: plans only; touches no file, starts no thread. */
  private readonly readOnly: boolean;

  private constructor(settings: EngineSettings, readOnly: boolean) {
    this.settings = settings;
    this.readOnly = readOnly;
    this.host = new HostWorker({ inline: readOnly || settings.inlineHost === true });
    this.rootEntry = hostRootIsRamfs() ? 'chroot' : 'pivot_root';
  }

  /** Whether host work (allocator, reaper, /proc scans) runs off the event loop. */
  get offLoop(): boolean {
    return this.host.offLoop;
  }

  /**
   * Opens the engine on a state directory: the embedded xenstored (embedded target) or a dom0
   * connection to the real one, then adoption of what a previous engine left (see `recover`).
   */
  static async open(
    settings: EngineSettings,
    options: { recover?: boolean; readOnly?: boolean } = {},
  ): Promise<DmEngine> {
    const e = new DmEngine(settings, options.readOnly === true);
    if (e.readOnly) return e;
    mkdirSync(settings.stateDir, { recursive: true, mode: 0o700 });
    if (options.recover !== false) await e.recover();
    return e;
  }

  /** The embedded xenstored the proxies of embedded-target DMs act on (made on first use). */
  private embeddedServer(): XenstoreServer {
    this.embedded ??= new XenstoreServer();
    return this.embedded;
  }

  private allocRef(user: SchemeConfig = this.settings.user): AllocatorRef {
    return { user, stateDir: this.settings.stateDir };
  }

  private async dom0Xenstore(): Promise<XenstoreClient> {
    if (this.xs) return this.xs;
    const xs = await XenstoreClient.connect({ path: this.settings.xenstoredSocket });
    this.xs = xs;
    // One watch for every DM: a released domain's DM is torn down (libxl may not say so).
    const w = await xs.watch('@releaseDomain');
    this.releaseWatch = w;
    void (async () => {
      for await (const _ of w) void this.reapGoneDomains();
    })().catch(() => undefined);
    return xs;
  }

  private async reapGoneDomains(): Promise<void> {
    const xs = this.xs;
    if (!xs) return;
    for (const dm of this.dms.values()) {
      if (dm.target !== 'dom0' || dm.state !== 'running') continue;
      const there = await xs.tryRead(`/local/domain/${dm.domid}/domid`).catch(() => 'unknown');
      if (there === undefined) void this.teardown(dm, 'domain gone');
    }
  }

  // ── plan ──────────────────────────────────────────────────────────────────────────────

  private async caps(binary: string): Promise<QemuCaps> {
    try {
      return await probeQemu(
        binary,
        this.readOnly ? {} : { cacheDir: this.settings.probeCacheDir },
      );
    } catch (e) {
      throw new EngineError('HOST_CANNOT', `probe of ${binary}: ${errorText(e)}`, {}, e);
    }
  }

  private resolve(
    req: LaunchRequest,
    vncPort?: number,
  ): {
    domid: number;
    target: Target;
    mode: 'jail' | 'libxl-compat';
    binary: string;
    machine: string | undefined;
    args: readonly string[];
    name: string | undefined;
    user: SchemeConfig;
    libxl: LibxlDmArgv | null;
    guest: GuestPlan | null;
  } {
    if (req.kind === 'libxl') {
      let parsed: LibxlDmArgv;
      try {
        parsed = rewriteLibxlArgv(req.libxlArgv, {
          isBlockDevice,
          ...(vncPort === undefined ? {} : { vncPort }),
        });
      } catch (e) {
        throw new EngineError('BAD_PARAMS', `libxlArgv: ${errorText(e)}`, { key: 'libxlArgv' });
      }
      return {
        domid: parsed.domid,
        target: 'dom0',
        mode: 'jail',
        binary: this.settings.target === 'dom0' ? this.settings.qemu : XEN_QEMU_BINARY,
        machine: undefined,
        args: parsed.args,
        name: parsed.name ?? undefined,
        user: this.settings.user,
        libxl: parsed,
        guest: null,
      };
    }
    return {
      domid: req.domid,
      target: req.target,
      mode: req.mode,
      // An empty binary: the service's own (the RPC layer leaves it empty for dom0 by default).
      binary: req.qemu.binary || this.settings.qemu,
      machine: req.target === 'dom0' ? 'xenfv' : req.qemu.machine,
      args: req.qemu.args,
      name: req.name,
      user: req.user,
      libxl: null,
      guest: req.guest
        ? guestPlan(req.guest, { domid: req.domid, xen: req.target === 'dom0' })
        : null,
    };
  }

  private hostCan(target: Target): void {
    if (target === 'dom0' && this.settings.target !== 'dom0') {
      throw new EngineError(
        'HOST_CANNOT',
        'target dom0: this host is not a Xen dom0 (no /dev/xen/privcmd or xenstored)',
        { key: 'target' },
      );
    }
  }

  /**
   * The plan a request gets: everything that will run (root entry, descriptors passed, files
   * bound, the proxy's socket, the seccomp program), as a value. `lease` absent: the scheme's
   * first candidate stands in for the uid the lease will give.
   */
  async plan(
    req: LaunchRequest,
    lease?: Pick<Lease, 'uid' | 'gid'>,
    vncPort?: number,
  ): Promise<LaunchPlan> {
    const r = this.resolve(req, vncPort);
    this.hostCan(r.target);
    const caps = await this.caps(r.binary);
    const ids = lease ?? firstCandidate(r.user, r.domid);
    const xen = r.target === 'dom0';
    let p: LaunchPlan;
    try {
      p = plan(
        {
          domid: r.domid,
          binary: r.binary,
          mode: r.mode,
          xen,
          ...(r.machine === undefined ? {} : { machine: r.machine }),
          args: [...(r.guest?.args ?? []), ...r.args],
          stateDir: this.settings.stateDir,
          xenstoreSocket: proxySocketPath(this.settings.stateDir, r.domid),
          ...(r.name === undefined ? {} : { name: r.name }),
          ...(xen ? { devices: dom0XenDevices() } : {}),
          passedFds: [
            ...(r.libxl === null || r.libxl.libxlQmpFd === null
              ? []
              : [{ target: 4, name: 'libxl-qmp', kind: 'socket' as const }]),
            ...(r.libxl?.passedFds ?? []),
            ...(r.guest?.passedFds ?? []),
          ],
          bridges: [...(r.guest?.bridges ?? []), ...(r.libxl ? libxlBridges(r.libxl) : [])],
        },
        caps,
        ids,
        { seccomp: dmSeccomp(), rootEntry: this.rootEntry },
      );
    } catch (e) {
      throw new EngineError('BAD_PARAMS', errorText(e), {}, e);
    }
    return r.libxl ? withFiles(p, r.libxl.files) : p;
  }

  // ── launch ────────────────────────────────────────────────────────────────────────────

  /**
   * Launches a DM and resolves once it answers QMP. A domid with a DM (in any state) is
   * refused with EXISTS before anything is done. `onExit` hears when the DM ends.
   */
  async launch(
    req: LaunchRequest,
    options: {
      onExit?: (e: ExitInfo) => void;
      beforeStep?: ((step: string) => void) | undefined;
    } = {},
  ): Promise<LaunchResult> {
    if (this.closed) throw new EngineError('HOST_CANNOT', 'the engine is closing');
    const r = this.resolve(req);
    this.hostCan(r.target);
    const existing = this.dms.get(r.domid) ?? this.liveRecord(r.domid);
    if (existing) {
      throw new EngineError(
        'EXISTS',
        `domain ${r.domid} has a device model already (${'state' in existing ? existing.state : 'running'}); destroy it first`,
        { domid: r.domid },
      );
    }
    const alloc = this.allocRef(r.user);
    const dm: Dm = {
      domid: r.domid,
      state: 'launching',
      kind: req.kind,
      target: r.target,
      started: new Date().toISOString(),
      adopted: false,
      alloc,
      lease: null,
      plan: null,
      handle: null,
      root: null,
      proxy: null,
      proxySocket: proxySocketPath(this.settings.stateDir, r.domid),
      links: [],
      stopWatch: null,
      stopBridges: null,
      tearing: null,
      launched: Promise.resolve(),
      listeners: new Set(options.onExit ? [options.onExit] : []),
    };
    let launchOver!: () => void;
    dm.launched = new Promise<void>((r) => {
      launchOver = r;
    });
    this.dms.set(r.domid, dm);
    const passed: number[] = [];
    let closeDevices: () => void = () => {};
    const reserved = new Map<string, Server>();
    let vncPort: number | undefined;
    try {
      dm.lease = await this.host.acquire(alloc, r.domid);
      const lease = dm.lease;
      if (r.target === 'dom0') await this.prepareDom0Xenstore(r.domid, lease, r.libxl !== null);
      dm.proxy = await this.startProxy(r.domid, r.target, dm.proxySocket, lease);
      // VNC's port first: QEMU is told the port dom0 got (libxl's `to=99` finds a free one).
      if (r.libxl?.vnc) {
        const v = r.libxl.vnc;
        const got = await reservePort(v.host, v.port, v.findUnused);
        reserved.set('vnc', got.server);
        vncPort = got.port;
      }
      const p = await this.plan(req, lease, vncPort);
      dm.plan = p;
      // Before QEMU starts: libxl connects to its QMP path as soon as QEMU says it runs.
      if (r.libxl) this.linkSockets(dm, p, r.libxl);
      this.writeServiceRecord(dm);
      const passedFds: Record<string, number> = {};
      if (r.libxl?.libxlQmpFd != null) {
        if (req.kind !== 'libxl' || req.shimPid === null) {
          throw new EngineError(
            'BAD_PARAMS',
            'libxlArgv names a pre-opened QMP descriptor (-chardev ...,fd=N): shimPid is needed to take it',
            { key: 'shimPid' },
          );
        }
        const fd = takeFd(req.shimPid, r.libxl.libxlQmpFd);
        passed.push(fd);
        passedFds['libxl-qmp'] = fd;
      }
      for (const s of r.libxl?.shimFds ?? []) {
        if (req.kind !== 'libxl' || req.shimPid === null) {
          throw new EngineError('BAD_PARAMS', `libxlArgv passes fd ${s.fd}: shimPid is needed`, {
            key: 'shimPid',
          });
        }
        const fd = takeFd(req.shimPid, s.fd);
        passed.push(fd);
        passedFds[s.name] = fd;
      }
      // The guest's images and taps, opened and made as root; the DM gets descriptors only.
      const devices = await openPlannedFds(p);
      closeDevices = devices.close;
      Object.assign(passedFds, devices.fds);
      for (const image of r.libxl?.images ?? []) {
        const fd = devices.fds[image.name];
        if (fd !== undefined) checkImage(image, fd);
      }
      const handle: DmHandle = await launch(p, {
        lease,
        uids: this.host.uidOps(alloc),
        destroyOnQmpFailure: false,
        readyTimeoutMs: this.settings.readyTimeoutMs,
        passedFds,
        beforeStep: options.beforeStep,
      });
      dm.handle = handle;
      dm.root = handle.root;
      // Our copies of libxl's listener, the images and taps: QEMU has its own now.
      for (const fd of passed.splice(0)) closeFd(fd);
      closeDevices();
      await this.serveBridges(dm, p, handle.pid, reserved);
      dm.lease = await this.host.attachDm(alloc, lease, handle.pid);
      dm.handle = { ...handle, lease: dm.lease };
      this.writeServiceRecord(dm);
      dm.stopWatch = watchExit(handle.pid, () => void this.teardown(dm, 'qemu exited'));
      dm.state = 'running';
      launchOver();
      // The engine talks QMP only to quit; libxl and the toolstack have their own sockets.
      return {
        domid: r.domid,
        pid: handle.pid,
        uid: lease.uid,
        gid: lease.gid,
        status: handle.status ?? 'unknown',
        qmpSocket: p.paths.qmpSocket,
        log: p.paths.log,
        xenstoreSocket: dm.proxySocket,
        spawner: handle.spawner,
        limitations: handle.limitations,
        notes: r.libxl?.notes ?? [],
      };
    } catch (e) {
      for (const fd of passed) closeFd(fd);
      closeDevices();
      for (const server of reserved.values()) server.close();
      launchOver();
      await this.teardown(dm, 'launch failed');
      if (e instanceof EngineError) throw e;
      throw new EngineError(
        'LAUNCH_FAILED',
        `launch of domain ${r.domid}: ${errorText(e)}`,
        { domid: r.domid, step: (e as { step?: string }).step ?? null },
        e,
      );
    }
  }

  /**
   * Serves a running DM's bridges, and tells libxl's readers of a dom0 guest where each serial
   * console is: `/local/domain/N/serial/I/tty`, the pty made in dom0 (`xl console` opens it).
   * libxl itself writes it only for a QEMU `pty` chardev, which the DM has not.
   */
  private async serveBridges(
    dm: Dm,
    p: LaunchPlan,
    pid: number,
    reserved: ReadonlyMap<string, Server>,
  ): Promise<void> {
    const bridges = await startBridges(p.bridges ?? [], { pid, reserved });
    dm.stopBridges = bridges.stop;
    if (dm.target !== 'dom0') return;
    const xs = Object.keys(bridges.ptys).length > 0 ? await this.dom0Xenstore() : null;
    for (const [name, path] of Object.entries(bridges.ptys)) {
      const m = /^serial(\d+)$/.exec(name);
      if (m && xs) await xs.write(`/local/domain/${dm.domid}/serial/${m[1]}/tty`, path);
    }
  }

  /** A record of a live DM this engine does not hold (another process launched it). */
  private liveRecord(domid: number): LaunchRecord | null {
    const path = posix.join(this.settings.stateDir, 'state', `dm-${domid}.json`);
    if (!existsSync(path)) return null;
    try {
      const r = JSON.parse(readFileSync(path, 'utf8')) as LaunchRecord;
      return r.pid !== null && processStartTime(r.pid) === r.startTime ? r : null;
    } catch {
      return null;
    }
  }

  /** What libxl expects of a dom0 DM's xenstore, done as root before QEMU runs. */
  private async prepareDom0Xenstore(domid: number, lease: Lease, libxl: boolean): Promise<void> {
    const xs = await this.dom0Xenstore();
    if (libxl) {
      // libxl kills a DM with a uid of its own by that uid: tell it the uid the DM really has.
      const killUid = `/local/domain/${domid}/image/device-model-kill-uid`;
      if ((await xs.tryRead(killUid)) !== undefined) await xs.write(killUid, String(lease.uid));
    }
    // Legacy PV backends QEMU serves, for libxl (libxl__qemu_backend_enabled); QEMU's own MKDIR
    // of these is outside the proxy's allowlist (catalogue entry dm-backends).
    for (const type of LEGACY_BACKENDS) {
      await xs.mkdir(`/local/domain/0/device-model/${domid}/backends/${type}`);
    }
    if (this.settings.upstream === 'privileged') {
      const dir = `/local/domain/0/device-model/${domid}`;
      await xs.setPerms(dir, [
        { domid: 0, perm: 'n' },
        { domid, perm: 'b' },
      ]);
    }
  }

  private async startProxy(
    domid: number,
    target: Target,
    socket: string,
    lease: Lease,
  ): Promise<RestrictingProxy> {
    const upstream: ProxyUpstream =
      target === 'embedded'
        ? this.embeddedServer()
        : this.settings.upstream === 'privileged'
          ? { privileged: this.settings.xenstoredSocket }
          : this.settings.xenstoredSocket;
    mkdirSync(posix.dirname(socket), { recursive: true, mode: 0o711 });
    rmSync(socket, { force: true });
    const logPath = proxyLogPath(this.settings.stateDir, domid);
    const proxy = new RestrictingProxy({
      domid,
      upstream,
      log: (line) => appendCapped(logPath, line),
      ...(this.settings.xenstoreTrace ? { trace: true } : {}),
    });
    await proxy.listen(socket);
    // The DM connects as its own uid; nobody else may.
    chownSync(socket, lease.uid, lease.gid);
    chmodSync(socket, 0o600);
    return proxy;
  }

  private linkSockets(dm: Dm, p: LaunchPlan, libxl: LibxlDmArgv): void {
    for (const { link, target } of socketLinks(libxl, p.paths.run)) {
      try {
        if (lstatSync(link).isSymbolicLink() && readlinkSync(link) === target) continue;
        rmSync(link, { force: true });
      } catch {
        // Not there.
      }
      mkdirSync(posix.dirname(link), { recursive: true });
      symlinkSync(target, link);
      dm.links.push(link);
    }
  }

  private writeServiceRecord(dm: Dm): void {
    const path = serviceRecordPath(this.settings.stateDir, dm.domid);
    mkdirSync(posix.dirname(path), { recursive: true, mode: 0o700 });
    const rec: ServiceRecord = {
      version: 1,
      domid: dm.domid,
      kind: dm.kind,
      target: dm.target,
      alloc: dm.alloc,
      proxySocket: dm.proxySocket,
      links: dm.links,
      started: dm.started,
    };
    writeFileSync(`${path}.tmp`, `${JSON.stringify(rec)}\n`, { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  }

  // ── teardown ──────────────────────────────────────────────────────────────────────────

  /**
   * Takes one DM down: QMP quit, SIGTERM, SIGKILL, the reaper on its uid (a fork loop
   * included), verify the uid empty, release the lease, remove jail, proxy, links and
   * records; then tells every listener. One teardown per DM, however many ask.
   */
  private teardown(dm: Dm, reason: string): Promise<ExitInfo> {
    dm.tearing ??= (async () => {
      dm.state = 'destroying';
      dm.stopWatch?.();
      dm.stopWatch = null;
      const errors: string[] = [];
      const step = async (what: string, fn: () => unknown) => {
        try {
          await fn();
        } catch (e) {
          errors.push(`${what}: ${errorText(e)}`);
        }
      };
      const pid = dm.handle?.pid ?? null;
      if (dm.handle) {
        const h = dm.handle;
        await step('destroy', () => destroy(h, { uids: this.host.uidOps(dm.alloc) }));
      } else if (dm.plan) {
        const p = dm.plan;
        await step('destroy', () =>
          destroy(
            { plan: p, pid: null, startTime: null, lease: dm.lease },
            { uids: this.host.uidOps(dm.alloc) },
          ),
        );
      } else if (dm.lease) {
        const l = dm.lease;
        await step('release', () => this.host.release(dm.alloc, l, true));
      }
      for (const link of dm.links) {
        await step(`unlink ${link}`, () => {
          try {
            if (lstatSync(link).isSymbolicLink()) unlinkSync(link);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
          }
        });
      }
      if (dm.proxy) {
        const proxy = dm.proxy;
        await step('proxy.close', () => proxy.close());
      }
      if (dm.stopBridges) {
        const stop = dm.stopBridges;
        await step('bridges', () => stop());
      }
      await step('proxy socket', () => rmSync(dm.proxySocket, { force: true }));
      await step('proxy log', () =>
        removeCappedLog(proxyLogPath(this.settings.stateDir, dm.domid)),
      );
      if (dm.target === 'dom0' && dm.kind === 'config' && dm.lease) {
        // The launch made /local/domain/0/device-model/N (backends, QEMU's keys); libxl removes
        // its domains' on destroy, nobody else would remove this one.
        await step('xenstore device-model', async () => {
          const xs = await this.dom0Xenstore();
          await xs.rm(`/local/domain/0/device-model/${dm.domid}`).catch((e: { code?: string }) => {
            if (e.code !== 'ENOENT') throw e;
          });
        });
      }
      if (errors.length === 0) {
        await step('service record', () =>
          rmSync(serviceRecordPath(this.settings.stateDir, dm.domid), { force: true }),
        );
      }
      if (this.dms.get(dm.domid) === dm) this.dms.delete(dm.domid);
      const info: ExitInfo = { domid: dm.domid, pid, uid: dm.lease?.uid ?? null, reason, errors };
      for (const l of dm.listeners) {
        try {
          l(info);
        } catch {
          // A listener's failure is its own.
        }
      }
      dm.listeners.clear();
      return info;
    })();
    return dm.tearing;
  }

  /** Destroys the DM of `domid`; NOT_FOUND when there is none, DESTROY_FAILED when a step failed. */
  async destroy(domid: number): Promise<ExitInfo> {
    const dm = this.dms.get(domid);
    if (!dm) {
      throw new EngineError('NOT_FOUND', `domain ${domid} has no device model here`, { domid });
    }
    // A destroy during the launch (libxl gave up, the shim got SIGHUP) waits for it to end.
    await dm.launched;
    const info = await this.teardown(dm, 'destroyed');
    if (info.errors.length > 0) {
      throw new EngineError(
        'DESTROY_FAILED',
        `destroy of domain ${domid}: ${info.errors.join('; ')}`,
        { domid, errors: info.errors },
      );
    }
    return info;
  }

  /** Hears when the DM of `domid` ends; NOT_FOUND when there is none. Returns an unsubscribe. */
  watch(domid: number, onExit: (e: ExitInfo) => void): { info: DmInfo; cancel: () => void } {
    const dm = this.dms.get(domid);
    if (!dm || dm.state === 'destroying') {
      throw new EngineError('NOT_FOUND', `domain ${domid} has no device model here`, { domid });
    }
    dm.listeners.add(onExit);
    return { info: this.info(dm), cancel: () => dm.listeners.delete(onExit) };
  }

  // ── inspection ────────────────────────────────────────────────────────────────────────

  private info(dm: Dm): DmInfo {
    return {
      domid: dm.domid,
      pid: dm.handle?.pid ?? null,
      uid: dm.lease?.uid ?? null,
      mode: dm.plan?.mode ?? 'jail',
      target: dm.target,
      kind: dm.kind,
      state: dm.state,
      started: dm.started,
      ageSeconds: Math.max(0, Math.round((Date.now() - Date.parse(dm.started)) / 1000)),
      adopted: dm.adopted,
    };
  }

  list(): DmInfo[] {
    return [...this.dms.values()].sort((a, b) => a.domid - b.domid).map((d) => this.info(d));
  }

  /** The confinement report of a running DM, computed on the host worker. */
  async check(domid: number): Promise<{
    domid: number;
    pid: number;
    checks: Awaited<ReturnType<HostWorker['check']>>['checks'];
  }> {
    const dm = this.dms.get(domid);
    const pid = dm?.handle?.pid ?? null;
    if (!dm || pid === null || dm.state !== 'running' || dm.plan === null) {
      throw new EngineError('NOT_FOUND', `domain ${domid} has no running device model here`, {
        domid,
      });
    }
    const report = await this.host.check(pid, dm.plan, dm.root);
    return { domid, pid, checks: report.checks };
  }

  // ── adoption ──────────────────────────────────────────────────────────────────────────

  /**
   * Run at open: every DM a previous engine launched that still runs is adopted (pidfd
   * supervision, its proxy listening again at its socket); every launch or destroy left half
   * done is finished (jail, lease, records); stale leases of dead holders are reclaimed.
   */
  async recover(): Promise<{
    adopted: number[];
    finished: number[];
    errors: { domid: number; error: string }[];
    leasesReclaimed: number[];
  }> {
    const stateDir = this.settings.stateDir;
    const records = new Map<number, ServiceRecord>();
    const dir = posix.join(stateDir, 'service');
    for (const name of safeReaddir(dir).filter((n) => /^dm-\d+\.json$/.test(n))) {
      try {
        const r = JSON.parse(readFileSync(posix.join(dir, name), 'utf8')) as ServiceRecord;
        if (r.version === 1) records.set(r.domid, r);
      } catch {
        // Half written: the launch record decides.
      }
    }
    const byDomid = new Map<number, AllocatorRef>();
    for (const r of records.values()) byDomid.set(r.domid, r.alloc);
    const result = await recoverRecords(stateDir, {
      uids: {
        name: 'uid-allocator (host worker)',
        reap: (uid, lease) =>
          this.host.uidOps(allocOf(lease, byDomid, this.allocRef())).reap(uid, lease),
        verifyEmpty: (uid) => this.host.uidOps(this.allocRef()).verifyEmpty(uid),
        release: (lease) =>
          this.host.uidOps(allocOf(lease, byDomid, this.allocRef())).release(lease),
      },
    });
    const adopted: number[] = [];
    const errors = result.errors.map((e) => ({ domid: e.domid, error: e.error.message }));
    for (const r of result.running) {
      if (this.dms.has(r.domid)) continue;
      const rec = records.get(r.domid);
      try {
        await this.adopt(r, rec ?? null);
        adopted.push(r.domid);
      } catch (e) {
        errors.push({ domid: r.domid, error: errorText(e) });
      }
    }
    for (const domid of result.finished) {
      const rec = records.get(domid);
      for (const link of rec?.links ?? []) rmLinkInto(link, posix.join(stateDir, `dm-${domid}`));
      rmSync(proxySocketPath(stateDir, domid), { force: true });
      removeCappedLog(proxyLogPath(stateDir, domid));
      rmSync(serviceRecordPath(stateDir, domid), { force: true });
    }
    // Service records without a launch record: a launch that died before qemu-launcher wrote
    // its first record (only the lease may exist; the lease recovery below reclaims it).
    for (const [domid, rec] of records) {
      if (this.dms.has(domid) || result.finished.includes(domid)) continue;
      if (existsSync(posix.join(stateDir, 'state', `dm-${domid}.json`))) continue;
      rmSync(rec.proxySocket, { force: true });
      rmSync(serviceRecordPath(stateDir, domid), { force: true });
    }
    const refs = new Map<string, AllocatorRef>([
      [JSON.stringify(this.allocRef()), this.allocRef()],
    ]);
    for (const rec of records.values()) refs.set(JSON.stringify(rec.alloc), rec.alloc);
    const leasesReclaimed: number[] = [];
    for (const ref of refs.values()) {
      try {
        leasesReclaimed.push(...(await this.host.recoverLeases(ref)).reclaimed);
      } catch (e) {
        errors.push({ domid: -1, error: `leases: ${errorText(e)}` });
      }
    }
    return { adopted, finished: [...result.finished], errors, leasesReclaimed };
  }

  private async adopt(r: LaunchRecord, rec: ServiceRecord | null): Promise<void> {
    const pid = r.pid as number;
    // The pidfd is taken before the start time is read again: a pid reused in between is seen.
    const pidfd = pidfdOpen(pid);
    if (processStartTime(pid) !== r.startTime) {
      closeFd(pidfd);
      throw new Error(`pid ${pid} is no longer domain ${r.domid}'s device model`);
    }
    const lease = isLease(r.lease) ? r.lease : null;
    if (lease === null) {
      closeFd(pidfd);
      throw new Error(`domain ${r.domid}: its record holds no uid-allocator lease`);
    }
    const dm: Dm = {
      domid: r.domid,
      state: 'running',
      kind: rec?.kind ?? 'config',
      target: rec?.target ?? (r.plan.xen ? 'dom0' : 'embedded'),
      started: rec?.started ?? new Date().toISOString(),
      adopted: true,
      alloc: rec?.alloc ?? this.allocRef(),
      lease,
      plan: r.plan,
      handle: { plan: r.plan, pid, startTime: r.startTime, lease },
      root: r.root,
      proxy: null,
      proxySocket: rec?.proxySocket ?? proxySocketPath(this.settings.stateDir, r.domid),
      links: [...(rec?.links ?? [])],
      stopWatch: null,
      stopBridges: null,
      tearing: null,
      launched: Promise.resolve(),
      listeners: new Set(),
    };
    this.dms.set(r.domid, dm);
    dm.stopWatch = watchExit(pid, () => void this.teardown(dm, 'qemu exited'), pidfd);
    try {
      await this.serveBridges(dm, r.plan, pid, new Map());
    } catch {
      // The address is taken meanwhile: the DM runs on without its VNC bridge.
    }
    // A DM that reconnects to xenstore finds its proxy again at the same path.
    try {
      dm.proxy = await this.startProxy(r.domid, dm.target, dm.proxySocket, lease);
    } catch {
      // Xen's QEMU needs xenstore only during its init, long over: the DM runs on without.
    }
    if (dm.target === 'dom0') await this.dom0Xenstore().catch(() => undefined);
  }

  /** Stops serving: proxies and watches close; the DMs run on, to be adopted by the next engine. */
  async close(): Promise<void> {
    this.closed = true;
    for (const dm of this.dms.values()) {
      dm.stopWatch?.();
      await dm.proxy?.close().catch(() => undefined);
      dm.listeners.clear();
    }
    this.dms.clear();
    await this.releaseWatch?.close().catch(() => undefined);
    this.xs?.close();
    await this.host.close();
  }

  /** Verifies a DM from this process (the CLI's in-process `check`, where no worker is needed). */
  static verify(pid: number, p: LaunchPlan, root: { dev: number; ino: number } | null) {
    return verifyConfinement(pid, p, root ? { expectedRoot: root } : {});
  }
}
