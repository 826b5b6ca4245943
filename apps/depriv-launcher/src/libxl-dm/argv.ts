import { posix } from 'node:path';
import type { PassedFd } from '@xen-depriv/qemu-launcher';

/**
 * What the launcher makes of the argv libxl gives a `device_model_override` (QEMU's full
 * command line without argv[0]), for a jail-mode plan: the launcher's plan already says
 * `-xen-domid`, `-xen-domid-restrict`, `-nodefaults`, `-no-user-config` and `-name`, and never
 * lets QEMU drop privileges itself, so those (and `-runas`, `-chroot`) are taken out; paths
 * QEMU would open outside its private root are mapped into it.
 */
export interface LibxlDmArgv {
  readonly domid: number;
  readonly name: string | null;
  /** Appended after the plan's own arguments. */
  readonly args: readonly string[];
  /** The QMP listener libxl pre-opened (`-chardev socket,id=libxl-cmd,fd=N`), moved to `qmpFdTarget`. */
  readonly libxlQmpFd: number | null;
  /** Host files QEMU reads (`-kernel`, `-initrd`), bound read-only at `jail` in its root. */
  readonly files: readonly { readonly host: string; readonly jail: string }[];
  /**
   * QMP sockets QEMU creates by path (libxenstat's): created in the DM's own `/run` (`jail`),
   * reachable from the host through a symlink at `host`.
   */
  readonly sockets: readonly { readonly host: string; readonly jail: string }[];
  /**
   * The guest's devices as descriptors: each disk image the launcher opens (`-drive file=PATH`
   * became `-add-fd` + `/dev/fdset/N`), each tap it creates (`-netdev type=tap,ifname=...`
   * became `-netdev tap,fd=N`), and libxl's own descriptors taken from the shim (`-incoming
   * fd:N` on restore).
   */
  readonly passedFds: readonly PassedFd[];
  /** Descriptors of the shim (libxl's) to take by number, by passed-fd name. */
  readonly shimFds: readonly { readonly name: string; readonly fd: number }[];
  /** Images QEMU will read a format of, for the launcher's checks (qcow2 backing files). */
  readonly images: readonly {
    readonly name: string;
    readonly path: string;
    readonly format: string;
  }[];
  /**
   * VNC as libxl asked (`-vnc HOST:DISPLAY[,password=on][,to=99]`): dom0 listens on `host` at
   * `port` (or the next free one up to +99 with `findUnused`); QEMU listens at `dmHost:port` on
   * its own loopback, so that it reports the port dom0 serves when libxl asks (query-vnc).
   */
  readonly vnc: {
    readonly host: string;
    readonly port: number;
    readonly findUnused: boolean;
    readonly dmHost: string;
  } | null;
  /** `-serial pty` lines: QEMU serves each on a unix socket in its /run, dom0 gets a pty. */
  readonly serials: readonly { readonly index: number; readonly socket: string }[];
  /** What was dropped or changed, one short note each, for the launch log. */
  readonly notes: readonly string[];
}

export interface RewriteOptions {
  /** The descriptor number QEMU gets libxl's QMP listener at. Default 4. */
  readonly qmpFdTarget?: number;
  /** The first descriptor number of the guest's devices. Default 5. */
  readonly firstDeviceFd?: number;
  /** The TCP port dom0 got for VNC (the launcher binds it first); default 5900 + display. */
  readonly vncPort?: number;
  /** Whether a disk path is a block device (QEMU then needs `host_device`); default never. */
  readonly isBlockDevice?: (path: string) => boolean;
  /** Directory in the DM's root holding `-kernel`/`-initrd`. Default `/boot`. */
  readonly bootDir?: string;
}

export class LibxlArgvError extends Error {}

/** Options of QEMU's that take a value (what follows them is never an option). */
const DROP_WITH_VALUE = new Set(['-runas', '-chroot', '-xen-domid', '-name']);
const DROP_ALONE = new Set([
  '-xen-domid-restrict',
  '-no-shutdown',
  '-nodefaults',
  '-no-user-config',
]);
const FILE_OPTIONS: Readonly<Record<string, string>> = { '-kernel': 'kernel', '-initrd': 'initrd' };
/** Character-device backends that need /dev/ptmx and devpts, which the private root has not. */
const PTY_OPTIONS = new Set(['-parallel', '-monitor']);

function chardevFields(spec: string): string[] {
  return spec.split(',');
}

/** QEMU's option syntax: fields split at single commas, `,,` is a comma inside a value. */
export function optionFields(spec: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < spec.length; i++) {
    const c = spec[i];
    if (c === ',' && spec[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (c === ',') {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out;
}

const joinFields = (fields: readonly string[]) =>
  fields.map((f) => f.replaceAll(',', ',,')).join(',');
const field = (fields: readonly string[], key: string) =>
  fields.find((f) => f.startsWith(`${key}=`))?.slice(key.length + 1);
const slug = (s: string) =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 24) || 'x';

/** Rewrites libxl's device-model argv for a jail-mode launch. Pure: same input, same output. */
export function rewriteLibxlArgv(
  argv: readonly string[],
  options: RewriteOptions = {},
): LibxlDmArgv {
  const qmpFdTarget = options.qmpFdTarget ?? 4;
  const bootDir = options.bootDir ?? '/boot';
  const isBlock = options.isBlockDevice ?? (() => false);
  let nextFd = options.firstDeviceFd ?? 5;
  let nextSet = 1;
  const passedFds: PassedFd[] = [];
  const shimFds: { name: string; fd: number }[] = [];
  const images: { name: string; path: string; format: string }[] = [];
  const serials: { index: number; socket: string }[] = [];
  let vnc: LibxlDmArgv['vnc'] = null;
  let domid: number | null = null;
  let name: string | null = null;
  let libxlQmpFd: number | null = null;
  const args: string[] = [];
  const files: { host: string; jail: string }[] = [];
  const sockets: { host: string; jail: string }[] = [];
  const notes: string[] = [];
  const value = (i: number): string => {
    const v = argv[i + 1];
    if (v === undefined) throw new LibxlArgvError(`${argv[i]}: expected a value, saw the end`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (DROP_WITH_VALUE.has(a)) {
      const v = value(i);
      if (a === '-xen-domid') {
        if (!/^[0-9]+$/.test(v))
          throw new LibxlArgvError(`-xen-domid: expected a number, saw "${v}"`);
        domid = Number(v);
      } else if (a === '-name') {
        name = v;
      } else {
        notes.push(`dropped ${a} ${v}: the launcher drops privileges before exec`);
      }
      i++;
      continue;
    }
    if (DROP_ALONE.has(a)) continue;
    if (a in FILE_OPTIONS) {
      const v = value(i);
      if (!posix.isAbsolute(v))
        throw new LibxlArgvError(`${a}: expected an absolute path, saw "${v}"`);
      const jail = posix.join(bootDir, FILE_OPTIONS[a] as string);
      files.push({ host: v, jail });
      args.push(a, jail);
      i++;
      continue;
    }
    if (a === '-drive') {
      const v = value(i);
      const fields = optionFields(v);
      const file = field(fields, 'file');
      if (file !== undefined && file !== '' && !file.startsWith('/dev/fdset/')) {
        if (!posix.isAbsolute(file))
          throw new LibxlArgvError(`-drive ${v}: expected an absolute image path, saw "${file}"`);
        const id =
          field(fields, 'id') ??
          `${field(fields, 'if') ?? 'drive'}${field(fields, 'index') ?? passedFds.length}`;
        const name = `disk-${slug(id)}`;
        const readOnly = field(fields, 'readonly') === 'on' || field(fields, 'media') === 'cdrom';
        const set = nextSet++;
        const fd = nextFd++;
        passedFds.push({ target: fd, name, kind: 'file', open: { path: file, readOnly } });
        images.push({ name, path: file, format: field(fields, 'format') ?? 'raw' });
        args.push('-add-fd', `fd=${fd},set=${set},opaque=${name}`);
        // `-drive` opens its file read-only first (auto-read-only) and again read-write once the
        // guest's disk attaches; an fdset hands out a descriptor of the access mode asked for,
        // so a writable image is in it twice.
        let second = '';
        if (!readOnly) {
          const ro = nextFd++;
          passedFds.push({
            target: ro,
            name: `${name}-ro`,
            kind: 'file',
            open: { path: file, readOnly: true },
          });
          args.push('-add-fd', `fd=${ro},set=${set},opaque=${name}-ro`);
          second = ` and read-only, fd ${ro}`;
        }
        const out = fields.map((f) => (f.startsWith('file=') ? `file=/dev/fdset/${set}` : f));
        // QEMU's `file` protocol wants a regular file; a block device is `host_device`.
        if (isBlock(file)) out.push('file.driver=host_device');
        args.push(a, joinFields(out));
        notes.push(
          `-drive ${file}: opened ${readOnly ? 'read-only' : 'read-write'} by the launcher, fd ${fd}${second} (fdset ${set})`,
        );
      } else {
        args.push(a, v);
      }
      i++;
      continue;
    }
    if (a === '-netdev') {
      const v = value(i);
      const fields = optionFields(v);
      const type = field(fields, 'type') ?? fields[0];
      if (type === 'tap') {
        const id = field(fields, 'id');
        const ifname = field(fields, 'ifname');
        if (!id || !ifname) throw new LibxlArgvError(`-netdev ${v}: a tap needs id= and ifname=`);
        if (!/^[A-Za-z0-9_.-]{1,15}$/.test(ifname))
          throw new LibxlArgvError(
            `-netdev ${v}: expected an interface name of at most 15 characters`,
          );
        const fd = nextFd++;
        const name = `tap-${slug(id)}`;
        // libxl's hotplug script (vif-bridge, for the `-emu` tap) puts it on its bridge.
        passedFds.push({ target: fd, name, kind: 'tap', tap: { ifname, bridge: null } });
        args.push(a, `tap,id=${id},fd=${fd}`);
        notes.push(`-netdev ${ifname}: tap created by the launcher in dom0's namespace, fd ${fd}`);
      } else {
        args.push(a, v);
      }
      i++;
      continue;
    }
    if (a === '-vnc') {
      const v = value(i);
      i++;
      if (v === 'none') {
        args.push(a, v);
        continue;
      }
      const fields = optionFields(v);
      const m = /^(.*):(\d{1,2})$/.exec(fields[0] ?? '');
      if (!m) throw new LibxlArgvError(`-vnc ${v}: expected HOST:DISPLAY`);
      const host = m[1] === '' ? '0.0.0.0' : (m[1] as string);
      if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(host))
        throw new LibxlArgvError(`-vnc ${v}: expected an IPv4 listen address, saw "${host}"`);
      const findUnused = fields.includes('to=99');
      const port = options.vncPort ?? 5900 + Number(m[2]);
      // QEMU listens on its own loopback (or all of its own addresses), never on dom0's.
      const dmHost = host === '0.0.0.0' ? '0.0.0.0' : '127.0.0.1';
      vnc = { host, port, findUnused, dmHost };
      const rest = fields.slice(1).filter((f) => !f.startsWith('to='));
      args.push(a, joinFields([`${dmHost}:${port - 5900}`, ...rest]));
      notes.push(
        `-vnc ${v}: dom0 listens on ${host}:${port}${findUnused && options.vncPort === undefined ? ' (or the next free port up to +99)' : ''}; QEMU on ${dmHost}:${port} in its own network namespace`,
      );
      continue;
    }
    if (a === '-serial' && argv[i + 1] === 'pty') {
      const index = serials.length;
      const id = `serial${index}`;
      const socket = `${id}.sock`;
      serials.push({ index, socket });
      args.push(
        '-chardev',
        `socket,id=${id},path=/run/${socket},server=on,wait=off`,
        a,
        `chardev:${id}`,
      );
      notes.push(
        `-serial pty: QEMU serves /run/${socket}; the launcher makes the pty in dom0 and relays it`,
      );
      i++;
      continue;
    }
    if (a === '-incoming') {
      const v = value(i);
      const m = /^fd:(\d+)$/.exec(v);
      if (m) {
        const fd = nextFd++;
        passedFds.push({ target: fd, name: 'incoming', kind: 'file' });
        shimFds.push({ name: 'incoming', fd: Number(m[1]) });
        args.push(a, `fd:${fd}`);
        notes.push(`-incoming fd:${m[1]}: libxl's saved state, taken from the shim, fd ${fd}`);
      } else {
        args.push(a, v);
      }
      i++;
      continue;
    }
    if (PTY_OPTIONS.has(a) && argv[i + 1] === 'pty') {
      notes.push(`${a} pty became ${a} null: no /dev/ptmx in the DM's root`);
      args.push(a, 'null');
      i++;
      continue;
    }
    if (a === '-chardev') {
      const v = value(i);
      const fields = chardevFields(v);
      const out = fields.map((f) => {
        if (f.startsWith('fd=') && fields.includes('id=libxl-cmd')) {
          const n = f.slice(3);
          if (!/^[0-9]+$/.test(n)) throw new LibxlArgvError(`-chardev ${v}: fd is not a number`);
          libxlQmpFd = Number(n);
          return `fd=${qmpFdTarget}`;
        }
        if (f.startsWith('path=') && fields[0] === 'socket') {
          const host = f.slice(5);
          const jail = posix.join('/run', posix.basename(host));
          sockets.push({ host, jail });
          return `path=${jail}`;
        }
        return f;
      });
      if (fields[0] === 'pty') {
        notes.push(`-chardev ${v}: pty backend became null: no /dev/ptmx in the DM's root`);
        out[0] = 'null';
      }
      args.push(a, out.join(','));
      i++;
      continue;
    }
    args.push(a);
  }
  if (domid === null) throw new LibxlArgvError('-xen-domid: missing (is this libxl calling?)');
  return {
    domid,
    name,
    args,
    libxlQmpFd,
    files,
    sockets,
    passedFds,
    shimFds,
    images,
    vnc,
    serials,
    notes,
  };
}

/**
 * The symlinks that make QEMU's path-based sockets reachable at libxl's paths: `link` (libxl's
 * path) names `target`, the socket in the DM's `/run` (`run`: that directory seen from dom0).
 * They must exist before QEMU starts. With `dm_restrict = 0` libxl passes no pre-opened QMP fd:
 * it waits for QEMU's `device-model/N/state` = "running" in xenstore and then connects at once
 * to `/var/run/xen/qmp-libxl-N` (ENOENT there fails `xl create`). QEMU creates the socket
 * before it writes that state, so a link made before QEMU's start is never dangling when libxl
 * looks.
 */
export function socketLinks(
  libxl: Pick<LibxlDmArgv, 'sockets'>,
  run: string,
): { readonly link: string; readonly target: string }[] {
  return libxl.sockets.map((s) => ({
    link: s.host,
    target: posix.join(run, posix.basename(s.jail)),
  }));
}
