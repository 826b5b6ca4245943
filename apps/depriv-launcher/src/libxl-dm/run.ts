import {
  closeSync,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { posix } from 'node:path';
import {
  compileSeccomp,
  deviceModelAllowlist,
  IOCTL_PRIVCMD_HYPERCALL,
} from '@xen-depriv/privcmd-filter';
import {
  allocatorUidOps,
  createSysSpawner,
  type DeviceNode,
  type DmHandle,
  destroy,
  deviceModelSeccomp,
  type LaunchPlan,
  launch,
  plan,
  probeQemu,
  type SeccompProgram,
  type SpawnedDm,
  type Spawner,
  xenDevices,
} from '@xen-depriv/qemu-launcher';
import { dynamicPoolScheme, type Lease, UidAllocator } from '@xen-depriv/uid-allocator';
import { type ProxyUpstream, RestrictingProxy, XenstoreClient } from '@xen-depriv/xs-restrict';
// Not from config.js: that pulls zod into the DM supervisor's start-up for one constant.
import { XEN_QEMU_BINARY } from '../xen-qemu.js';
import { type LibxlDmArgv, rewriteLibxlArgv } from './argv.js';
import {
  dmLauncherConfig,
  removeDmLeftoversFile,
  saveLauncherConfig,
  writeDmLeftovers,
} from './state.js';

/**
 * Settings of the `device_model_override` entry point. libxl passes its own environment on to
 * the device model, so these come from the environment of `xl create`.
 */
export interface LibxlDmSettings {
  /** Root-only directory for leases, jails, proxy sockets. */
  readonly stateDir: string;
  readonly qemu: string;
  /** The uid pool (the reaper uid is first + count). */
  readonly poolFirst: number;
  readonly poolCount: number;
  /**
   * How the proxy reaches the real xenstored (XEN_DEPRIV_DM_UPSTREAM). `privileged` (default):
   * xs-restrict's privileged upstream, a dom0 connection on which the proxy decides as domain N
   * (permissions, quotas) itself; the launcher grants domain N write access to
   * /local/domain/0/device-model/N before QEMU starts. `dom0`: the proxy's requests act as dom0
   * and its allowlist is the only restriction.
   */
  readonly upstream: 'dom0' | 'privileged';
  readonly xenstoredSocket: string;
  /** Where the proxy's refusals (JSON lines, capped) and the launch summary go. */
  readonly logDir: string;
  /**
   * `init-hypercall` (default): the device-model allow-list plus IOCTL_PRIVCMD_HYPERCALL, which
   * Xen's QEMU needs before it restricts its handles; `strict`: the allow-list as it is.
   */
  readonly seccomp: 'init-hypercall' | 'strict';
}

export function settingsFromEnv(env: NodeJS.ProcessEnv): LibxlDmSettings {
  const upstream = env.XEN_DEPRIV_DM_UPSTREAM ?? 'privileged';
  if (upstream !== 'dom0' && upstream !== 'privileged') {
    throw new Error(`XEN_DEPRIV_DM_UPSTREAM: expected dom0 or privileged, saw "${upstream}"`);
  }
  return {
    stateDir: env.XEN_DEPRIV_DM_STATE_DIR ?? '/run/xen-depriv-dm',
    qemu: env.XEN_DEPRIV_DM_QEMU ?? XEN_QEMU_BINARY,
    poolFirst: Number(env.XEN_DEPRIV_DM_POOL_FIRST ?? 3_220_000),
    poolCount: Number(env.XEN_DEPRIV_DM_POOL_COUNT ?? 1000),
    upstream,
    xenstoredSocket: env.XEN_DEPRIV_DM_XENSTORED ?? '/run/xenstored/socket',
    logDir: env.XEN_DEPRIV_DM_LOG_DIR ?? '/var/log/xen',
    seccomp: env.XEN_DEPRIV_DM_SECCOMP === 'strict' ? 'strict' : 'init-hypercall',
  };
}

/** Where the proxy of domain `domid` listens, and where its log goes (the test reads both). */
export function dmPaths(s: LibxlDmSettings, domid: number) {
  return {
    proxySocket: posix.join(s.stateDir, 'xs-proxy', `dm-${domid}.sock`),
    log: posix.join(s.logDir, `xen-depriv-dm-${domid}.log`),
  };
}

/**
 * libxl runs a dm_restrict device model (and so this launcher) under RLIMIT_FSIZE 256 KiB: a
 * write past it kills the process with SIGXFSZ. Everything the launcher logs goes through this
 * cap, well below the limit.
 */
class CappedLog {
  private fd: number | null;
  private written = 0;
  private dropped = 0;
  constructor(
    path: string,
    private readonly cap = 128 * 1024,
  ) {
    mkdirSync(posix.dirname(path), { recursive: true });
    this.fd = openSync(path, 'w', 0o600);
  }
  line(text: string): void {
    if (this.fd === null) return;
    const b = Buffer.from(`${text}\n`);
    if (this.written + b.length > this.cap) {
      this.dropped++;
      return;
    }
    writeSync(this.fd, b);
    this.written += b.length;
  }
  close(): void {
    if (this.fd === null) return;
    if (this.dropped) writeSync(this.fd, `{"event":"log-capped","dropped":${this.dropped}}\n`);
    closeSync(this.fd);
    this.fd = null;
  }
}

/** The `/dev/xen` nodes Xen's QEMU opens, with the dom0's dynamic misc minors. */
export function dom0XenDevices(): DeviceNode[] {
  const node = (name: string) => {
    const rdev = statSync(`/dev/xen/${name}`).rdev;
    return { major: (rdev >> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
  };
  return [
    ...xenDevices({
      privcmd: node('privcmd'),
      evtchn: node('evtchn'),
      gntdev: node('gntdev'),
      xenbus: node('xenbus'),
    }),
    // libxencall's hypercall buffers (libxencall: "Error on trying to open hypercall buffer
    // device" without it).
    { path: '/dev/xen/hypercall', ...node('hypercall'), mode: 0o600, removeAfterReady: true },
  ];
}

/**
 * The seccomp filter of a libxl-started DM. privcmd-filter's device-model allow-list refuses
 * IOCTL_PRIVCMD_HYPERCALL (ENOTTY), but the filter is installed before exec, so it also covers
 * QEMU's init, before `-xen-domid-restrict`: there Xen's QEMU 7.2 populates the VGA VRAM with
 * xc_domain_populate_physmap_exact (hw/i386/xen/xen-hvm.c xen_ram_alloc), a memory_op hypercall
 * through that ioctl, and dies with "xen: failed to populate ram at 7000000" without it. Allowing
 * it costs nothing after the restriction: the kernel refuses the ioctl (EPERM) on a restricted
 * privcmd fd, and the jail's /dev/xen nodes are gone once the DM is ready.
 */
export function libxlDmSeccomp(
  mode: 'init-hypercall' | 'strict' = 'init-hypercall',
): SeccompProgram {
  if (mode === 'strict') return deviceModelSeccomp();
  return {
    profile: 'privcmd-filter/deviceModelAllowlist+IOCTL_PRIVCMD_HYPERCALL',
    program: compileSeccomp({
      ...deviceModelAllowlist,
      ioctls: [...(deviceModelAllowlist.ioctls ?? []), IOCTL_PRIVCMD_HYPERCALL],
    }),
  };
}

/** The plan plus the files QEMU reads (`-kernel`, `-initrd`), bound read-only into its root. */
export function withFiles(p: LaunchPlan, files: LibxlDmArgv['files']): LaunchPlan {
  if (files.length === 0) return p;
  const dirs = [...new Set(files.map((f) => posix.dirname(f.jail)))];
  const top = [...new Set(dirs.map((d) => d.split('/')[1] as string))];
  return {
    ...p,
    skeleton: [
      ...p.skeleton,
      ...dirs.map((d) => ({ kind: 'dir' as const, path: d, mode: 0o755 })),
      ...files.map((f) => ({ kind: 'file' as const, path: f.jail, mode: 0o444 })),
    ],
    mounts: [
      ...p.mounts,
      ...files.map((f) => ({
        type: 'bind' as const,
        source: f.host,
        target: posix.join(p.paths.jail, f.jail),
        readOnly: true,
      })),
    ],
    rootEntries: [...new Set([...p.rootEntries, ...top])].sort(),
  };
}

/**
 * The legacy backends Debian's QEMU 7.2 registers (hw/xen/xen-legacy-backend.c
 * xen_be_register_common: console, vkbd, 9pfs with CONFIG_VIRTFS, qusb with CONFIG_USB_LIBUSB;
 * the lab's QEMU tries all four).
 */
export const LEGACY_BACKENDS = ['console', 'vkbd', '9pfs', 'qusb'] as const;

const cpuSeconds = (): number => {
  const u = process.cpuUsage();
  return Math.round((u.user + u.system) / 1e5) / 10;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * qemu-launcher's `sys` spawner with one more descriptor (libxl's pre-opened QMP listener, at
 * the number the rewritten `-chardev ...,fd=` names), polling rarely (dom0 has one vCPU, shared
 * with the QEMU it serves), and the spawned DM handed out for its `exited`.
 */
function spawnerWithFd(extra: { target: number; source: number } | null): {
  spawner: Spawner;
  spawned: Promise<SpawnedDm>;
} {
  const base = createSysSpawner({ extraFds: extra ? [extra] : [], pollMs: 250 });
  let resolve!: (dm: SpawnedDm) => void;
  const spawned = new Promise<SpawnedDm>((r) => {
    resolve = r;
  });
  const spawner: Spawner = {
    ...base,
    async spawn(p, fds) {
      const dm = await base.spawn(p, fds);
      resolve(dm);
      return dm;
    },
  };
  return { spawner, spawned };
}

/**
 * The `device_model_override` entry point: libxl execs it as root with QEMU's full argv. It
 * leases a uid, starts a restricting xenstore proxy for the domain, launches Xen's QEMU in jail
 * mode (never root, private root, no-new-privs, seccomp), supervises it, and on SIGHUP/SIGTERM
 * (libxl's destroy by pid), QEMU's exit (libxl's destroy by uid) or the domain's disappearance
 * tears everything down. Returns the process exit code.
 */
export async function runLibxlDm(argv: readonly string[], s: LibxlDmSettings): Promise<number> {
  const parsed = rewriteLibxlArgv(argv);
  const { domid } = parsed;
  const paths = dmPaths(s, domid);
  const log = new CappedLog(paths.log);
  const note = (event: string, extra: Record<string, unknown> = {}) =>
    log.line(JSON.stringify({ time: new Date().toISOString(), event, domid, ...extra }));
  const t0 = performance.now();
  const refusals: Record<string, number> = {};
  let refusedTotal = 0;

  const allocator = new UidAllocator({
    scheme: dynamicPoolScheme({
      first: s.poolFirst,
      count: s.poolCount,
      reaperUid: s.poolFirst + s.poolCount,
    }),
    stateDir: s.stateDir,
  });
  const uids = allocatorUidOps(allocator);
  let lease: Lease | null = null;
  let proxy: RestrictingProxy | null = null;
  let xs: XenstoreClient | null = null;
  let handle: DmHandle | null = null;
  const links: string[] = [];
  let leftovers = false;
  let tearing: Promise<void> | null = null;

  const teardown = (why: string): Promise<void> => {
    tearing ??= (async () => {
      note('teardown', { why });
      const errors: string[] = [];
      const step = async (what: string, fn: () => Promise<unknown> | unknown) => {
        try {
          await fn();
        } catch (e) {
          errors.push(`${what}: ${(e as Error).message}`);
        }
      };
      if (handle) {
        const h = handle;
        await step('destroy', () => destroy(h, { uids }));
      } else if (lease) {
        const l = lease;
        await step('release', () => allocator.release(l, { reap: true }));
      }
      for (const link of links) {
        // libxl's own QMP cleanup usually got there first.
        await step(`unlink ${link}`, () => {
          try {
            if (lstatSync(link).isSymbolicLink()) unlinkSync(link);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
          }
        });
      }
      if (proxy) {
        const p = proxy;
        await step('proxy.close', () => p.close());
      }
      xs?.close();
      // Kept after a failed step, for `xen-depriv recover` to finish.
      if (leftovers && errors.length === 0) {
        await step('leftovers', () => removeDmLeftoversFile(s.stateDir, domid));
      }
      note('done', {
        errors,
        refused: refusedTotal,
        refusals,
        seconds: Math.round((performance.now() - t0) / 100) / 10,
        cpuS: cpuSeconds(),
      });
      log.close();
    })();
    return tearing;
  };
  let wake!: (why: string) => void;
  const stop = new Promise<string>((r) => {
    wake = r;
  });
  for (const sig of ['SIGHUP', 'SIGTERM', 'SIGINT'] as const) process.on(sig, () => wake(sig));

  try {
    note('start', {
      libxlArgv: argv,
      argv: parsed.args,
      notes: parsed.notes,
      upstream: s.upstream,
      seccomp: s.seccomp,
    });
    // Before the lease: `xen-depriv recover --state-dir` needs the pool to check and reclaim it.
    saveLauncherConfig(dmLauncherConfig(s, domid));
    lease = await allocator.acquire(domid);
    xs = await XenstoreClient.connect({ path: s.xenstoredSocket });
    // libxl kills a DM that has a uid of its own by that uid (device-model-kill-uid, from the
    // range-base user it chose): tell it the uid the DM really runs as.
    const killUid = `/local/domain/${domid}/image/device-model-kill-uid`;
    if ((await xs.tryRead(killUid)) !== undefined) await xs.write(killUid, String(lease.uid));
    // Which legacy PV backends QEMU serves, for libxl (libxl__qemu_backend_enabled): QEMU's own
    // MKDIR of these is outside the proxy's allowlist (catalogue entry dm-backends), so the
    // launcher writes them for the QEMU it starts, as root, before QEMU runs.
    for (const type of LEGACY_BACKENDS) {
      await xs.mkdir(`/local/domain/0/device-model/${domid}/backends/${type}`);
    }
    if (s.upstream === 'privileged') {
      const dir = `/local/domain/0/device-model/${domid}`;
      await xs.mkdir(dir);
      await xs.setPerms(dir, [
        { domid: 0, perm: 'n' },
        { domid, perm: 'b' },
      ]);
    }

    mkdirSync(posix.dirname(paths.proxySocket), { recursive: true, mode: 0o711 });
    // What no launch record knows, for `xen-depriv recover` should this process be killed.
    writeDmLeftovers(s.stateDir, {
      domid,
      socket: paths.proxySocket,
      links: parsed.sockets.map((x) => x.host),
    });
    leftovers = true;
    const upstream: ProxyUpstream =
      s.upstream === 'privileged' ? { privileged: s.xenstoredSocket } : s.xenstoredSocket;
    proxy = new RestrictingProxy({
      domid,
      upstream,
      log: (line) => {
        const r = JSON.parse(line) as { event: string; rule?: string; request?: { path?: string } };
        if (r.event === 'refused') {
          refusedTotal++;
          const key = `${r.rule ?? '?'} ${r.request?.path ?? ''}`;
          refusals[key] = (refusals[key] ?? 0) + 1;
        }
        log.line(line);
      },
    });
    await proxy.listen(paths.proxySocket);
    // The DM connects as its own uid; the socket is bound into its root at /run/xenstored/socket.
    const { chownSync, chmodSync } = await import('node:fs');
    chownSync(paths.proxySocket, lease.uid, lease.gid);
    chmodSync(paths.proxySocket, 0o600);

    const caps = await probeQemu(s.qemu);
    const p = withFiles(
      plan(
        {
          domid,
          binary: s.qemu,
          xen: true,
          stateDir: s.stateDir,
          devices: dom0XenDevices(),
          xenstoreSocket: paths.proxySocket,
          args: parsed.args,
          ...(parsed.name === null ? {} : { name: parsed.name }),
        },
        caps,
        lease,
        { seccomp: libxlDmSeccomp(s.seccomp) },
      ),
      parsed.files,
    );
    const { spawner, spawned } = spawnerWithFd(
      parsed.libxlQmpFd === null ? null : { target: 4, source: parsed.libxlQmpFd },
    );
    handle = await launch(p, {
      spawner,
      lease,
      uids,
      destroyOnQmpFailure: false,
      readyTimeoutMs: 60_000,
    });
    lease = await allocator.attachDm(lease, handle.pid);
    for (const sock of parsed.sockets) {
      const target = posix.join(p.paths.run, posix.basename(sock.jail));
      try {
        if (lstatSync(sock.host).isSymbolicLink() && readlinkSync(sock.host) === target) continue;
        rmSync(sock.host, { force: true });
      } catch {
        // Not there.
      }
      mkdirSync(posix.dirname(sock.host), { recursive: true });
      symlinkSync(target, sock.host);
      links.push(sock.host);
    }
    note('running', {
      pid: handle.pid,
      uid: lease.uid,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
      cpuS: cpuSeconds(),
    });
    const dm = await spawned;
    const domainGone = (async () => {
      for (;;) {
        await sleep(2000);
        if (tearing) return 'teardown';
        const there = await xs?.tryRead(`/local/domain/${domid}/domid`).catch(() => 'unknown');
        if (there === undefined) return 'domain gone';
      }
    })();
    const why = await Promise.race([stop, dm.exited.then(() => 'qemu exited'), domainGone]);
    await teardown(why);
    return 0;
  } catch (e) {
    note('failed', { error: (e as Error).message });
    process.stderr.write(`xen-depriv-dm: ${(e as Error).message.slice(0, 500)}\n`);
    await teardown('launch failed');
    return 1;
  }
}
