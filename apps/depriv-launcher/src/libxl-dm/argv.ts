import { posix } from 'node:path';

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
  /** What was dropped or changed, one short note each, for the launch log. */
  readonly notes: readonly string[];
}

export interface RewriteOptions {
  /** The descriptor number QEMU gets libxl's QMP listener at. Default 4. */
  readonly qmpFdTarget?: number;
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
const PTY_OPTIONS = new Set(['-serial', '-parallel', '-monitor']);

function chardevFields(spec: string): string[] {
  return spec.split(',');
}

/** Rewrites libxl's device-model argv for a jail-mode launch. Pure: same input, same output. */
export function rewriteLibxlArgv(
  argv: readonly string[],
  options: RewriteOptions = {},
): LibxlDmArgv {
  const qmpFdTarget = options.qmpFdTarget ?? 4;
  const bootDir = options.bootDir ?? '/boot';
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
  return { domid, name, args, libxlQmpFd, files, sockets, notes };
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
