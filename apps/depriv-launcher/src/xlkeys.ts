// Every xl.cfg(5) key a typical HVM guest config carries, and what the launcher does with it:
// `dm` (becomes part of the device model's launch), `toolstack` (libxl acts on it when it builds
// or manages the domain; the DM has no part in it) or `refused` (with the reason). One table:
// `configFromXl`, `xen-depriv launch --help`, the unknown-key hint and the README read it.
import { ConfigError } from './errors.js';
import { wrap } from './output.js';
import type { XlValue } from './xlcfg.js';

export type XlKeyUse = 'dm' | 'toolstack' | 'refused';

export const XL_KEYS: Readonly<Record<string, { use: XlKeyUse; what: string }>> = {
  name: { use: 'dm', what: 'the DM name (-name)' },
  domid: { use: 'dm', what: 'the domain the DM serves (xen-depriv only; libxl assigns it)' },
  type: { use: 'dm', what: '"hvm" only: PV and PVH guests have no QEMU device model' },
  builder: { use: 'dm', what: 'as type' },
  memory: { use: 'dm', what: 'guest RAM in MiB (-m)' },
  maxmem: {
    use: 'toolstack',
    what: 'the balloon ceiling libxl sets; the DM maps memory, it does not size it',
  },
  vcpus: { use: 'dm', what: 'vCPUs (-smp)' },
  maxvcpus: { use: 'dm', what: 'vCPU ceiling (-smp ...,maxcpus=)' },
  cpus: { use: 'toolstack', what: 'vCPU pinning, done by libxl' },
  boot: { use: 'dm', what: 'boot order (-boot order=)' },
  disk: {
    use: 'dm',
    what: 'each image opened by the launcher, passed as a descriptor (-add-fd, /dev/fdset/N); raw only',
  },
  vif: {
    use: 'dm',
    what: 'each NIC a tap the launcher creates in dom0 (vifN.I-emu, on its bridge), passed as a descriptor',
  },
  vnc: {
    use: 'dm',
    what: "QEMU's VNC on its own loopback (its own network namespace); the service listens on vnclisten:5900+vncdisplay",
  },
  vnclisten: { use: 'dm', what: 'where the service listens for VNC (default 127.0.0.1)' },
  vncdisplay: { use: 'dm', what: 'the VNC display number (port 5900+N)' },
  vncunused: { use: 'dm', what: 'accepted; the display is vncdisplay (default 0)' },
  vncpasswd: {
    use: 'refused',
    what: 'a password on the command line would be readable in the plan and /proc; put VNC behind the loopback bridge instead',
  },
  serial: {
    use: 'dm',
    what: '"pty": a unix socket in the DM\'s /run (no /dev/ptmx in its root), reachable from dom0; "none"',
  },
  videoram: { use: 'dm', what: 'stdvga VRAM in MiB (-global VGA.vgamem_mb=)' },
  vga: { use: 'dm', what: '"stdvga", "cirrus" or "none" (-vga)' },
  stdvga: { use: 'dm', what: '1 is vga = "stdvga"' },
  usb: { use: 'dm', what: 'an emulated USB controller (-usb)' },
  usbdevice: { use: 'dm', what: '"tablet", "mouse" or "keyboard" (-device usb-X)' },
  usbctrl: {
    use: 'refused',
    what: 'PV USB needs the qusb backend with host USB access, which the jail does not give',
  },
  usbdev: { use: 'refused', what: 'as usbctrl: PV USB host passthrough' },
  localtime: { use: 'dm', what: 'RTC in local time (-rtc base=localtime)' },
  on_poweroff: { use: 'toolstack', what: 'what libxl does when the guest powers off' },
  on_reboot: { use: 'toolstack', what: 'what libxl does when the guest reboots' },
  on_crash: { use: 'toolstack', what: 'what libxl does when the guest crashes' },
  on_watchdog: { use: 'toolstack', what: 'what libxl does when the watchdog fires' },
  on_soft_reset: { use: 'toolstack', what: 'what libxl does on a soft reset' },
  uuid: { use: 'toolstack', what: "the domain's UUID, libxl's" },
  acpi: { use: 'toolstack', what: 'the firmware tables hvmloader builds' },
  apic: { use: 'toolstack', what: 'as acpi' },
  pae: { use: 'toolstack', what: 'a CPU feature Xen offers the guest' },
  hap: { use: 'toolstack', what: "Xen's paging mode for the domain" },
  viridian: { use: 'toolstack', what: "Xen's Hyper-V enlightenments" },
  tsc_mode: { use: 'toolstack', what: "Xen's TSC handling" },
  firmware: { use: 'toolstack', what: 'hvmloader and its BIOS, loaded by libxl' },
  bios: { use: 'toolstack', what: 'as firmware' },
  xen_platform_pci: {
    use: 'toolstack',
    what: "libxl's choice of the platform device (part of its -machine xenfv)",
  },
  kernel: {
    use: 'toolstack',
    what: 'direct kernel boot: libxl passes -kernel; with xl create the shim binds it read-only into the jail',
  },
  ramdisk: { use: 'toolstack', what: 'as kernel (-initrd)' },
  cmdline: { use: 'toolstack', what: 'as kernel (-append)' },
  extra: { use: 'toolstack', what: 'as cmdline' },
  root: { use: 'toolstack', what: 'as cmdline' },
  nographic: { use: 'dm', what: 'no display (the launcher always gives -display none)' },
  sdl: { use: 'refused', what: 'an SDL window needs a display server in dom0, outside the jail' },
  spice: { use: 'refused', what: 'SPICE is not bridged out of the jail; use vnc' },
  soundhw: { use: 'refused', what: 'audio would need dom0 sound devices in the jail' },
  pci: {
    use: 'refused',
    what: 'PCI passthrough gives the DM host device access (sysfs, config space)',
  },
  gfx_passthru: { use: 'refused', what: 'as pci' },
  dm_restrict: { use: 'dm', what: 'must be 1: xen-depriv never runs a device model unrestricted' },
  device_model_version: { use: 'dm', what: '"qemu-xen" only' },
  device_model_override: { use: 'dm', what: 'the QEMU binary' },
  device_model_user: { use: 'dm', what: 'the per-VM uid scheme (per-vm user)' },
  device_model_args: { use: 'dm', what: "extra QEMU arguments, after the launcher's" },
  device_model_args_hvm: { use: 'dm', what: 'as device_model_args' },
  device_model_stubdomain_override: {
    use: 'refused',
    what: 'a stub domain is the other way to confine QEMU; this launcher runs it in dom0',
  },
  device_model_stubdomain_seclabel: { use: 'refused', what: 'as device_model_stubdomain_override' },
  device_model_ssidref: {
    use: 'refused',
    what: 'XSM labels are set by libxl on the domain, not by the launcher',
  },
  xen_depriv_mode: { use: 'dm', what: 'jail (default) or libxl-compat' },
  xen_depriv_state_dir: { use: 'dm', what: 'the state directory' },
  xen_depriv_machine: { use: 'dm', what: 'the QEMU machine of the embedded target (default none)' },
};

export function xlKeysHelp(width = 78): string {
  const by = (u: XlKeyUse) =>
    Object.entries(XL_KEYS)
      .filter(([, v]) => v.use === u)
      .map(([k]) => k)
      .join(', ');
  return [
    wrap(`xl.cfg keys used for the device model: ${by('dm')}`, width, '  '),
    wrap(`xl.cfg keys that are libxl's, accepted: ${by('toolstack')}`, width, '  '),
    wrap(`xl.cfg keys refused (see the error for why): ${by('refused')}`, width, '  '),
  ].join('\n');
}

/** The README's table of the keys (between `<!-- xl-keys -->` markers; a test keeps it equal). */
export function xlKeysMarkdown(): string {
  const label: Readonly<Record<XlKeyUse, string>> = {
    dm: 'used for the device model',
    toolstack: "libxl's, accepted",
    refused: 'refused',
  };
  return [
    '| key | | what |',
    '| --- | --- | --- |',
    ...Object.entries(XL_KEYS).map(
      ([k, v]) => `| \`${k}\` | ${label[v.use]} | ${v.what.replace(/\|/g, '\\|')} |`,
    ),
  ].join('\n');
}

const str = (key: string, v: XlValue): string => {
  if (typeof v !== 'string')
    throw new ConfigError(key, `expected a string, saw ${JSON.stringify(v)}`);
  return v;
};
const int = (key: string, v: XlValue): number => {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n))
    throw new ConfigError(key, `expected an integer, saw ${JSON.stringify(v)}`);
  return n;
};
const bool = (key: string, v: XlValue): boolean => {
  if (v === 1 || v === '1' || v === 'true') return true;
  if (v === 0 || v === '0' || v === 'false') return false;
  throw new ConfigError(key, `expected 0 or 1, saw ${JSON.stringify(v)}`);
};
const list = (key: string, v: XlValue): string[] => {
  const items = Array.isArray(v) ? v : [v];
  return items.map((x) => str(key, x));
};

/** xl-disk-configuration(5): key=value form, or the positional and legacy forms. */
export function parseXlDisk(spec: string, key = 'disk'): Record<string, unknown> {
  const out: Record<string, string> = {};
  const positional: string[] = [];
  for (const raw of spec.split(',')) {
    const item = raw.trim();
    const eq = item.indexOf('=');
    if (eq > 0) out[item.slice(0, eq).trim()] = item.slice(eq + 1).trim();
    else positional.push(item);
  }
  if (positional.length > 0) {
    const [first, ...rest] = positional;
    let target = first ?? '';
    for (const prefix of ['tap:aio:', 'tap2:aio:', 'aio:', 'file:', 'phy:']) {
      if (target.startsWith(prefix)) target = target.slice(prefix.length);
    }
    if (target.startsWith('tap:qcow2:') || target.startsWith('qcow2:')) {
      throw new ConfigError(
        key,
        `${spec}: qcow2 is refused: QEMU would open its backing chain by path; give a raw image`,
      );
    }
    out.target ??= target;
    // Legacy: target,vdev[:cdrom],access; current: target,format,vdev,access.
    if (
      rest.length === 2 ||
      (rest[0] !== undefined && /^(hd|sd|xvd)[a-z]+(:cdrom)?$/.test(rest[0]))
    ) {
      if (rest[0] !== undefined) out.vdev ??= rest[0];
      if (rest[1] !== undefined) out.access ??= rest[1];
    } else {
      if (rest[0] !== undefined && rest[0] !== '') out.format ??= rest[0];
      if (rest[1] !== undefined) out.vdev ??= rest[1];
      if (rest[2] !== undefined) out.access ??= rest[2];
    }
  }
  let vdev = out.vdev ?? '';
  let cdrom = out.devtype === 'cdrom';
  if (vdev.endsWith(':cdrom')) {
    vdev = vdev.slice(0, -':cdrom'.length);
    cdrom = true;
  }
  const access = out.access ?? (cdrom ? 'ro' : 'rw');
  const format = out.format ?? 'raw';
  if (format !== 'raw') {
    throw new ConfigError(
      key,
      `${spec}: format ${format} is refused: QEMU would open its backing chain by path; give a raw image`,
    );
  }
  for (const k of Object.keys(out)) {
    if (!['target', 'vdev', 'access', 'format', 'devtype', 'backendtype', 'script'].includes(k)) {
      throw new ConfigError(key, `${spec}: unknown disk parameter ${k}`);
    }
  }
  if (out.script !== undefined) {
    throw new ConfigError(
      key,
      `${spec}: script= is refused: a block script runs in dom0 as root, outside the DM's jail; give the device or image path`,
    );
  }
  return {
    target: out.target ?? '',
    vdev,
    access:
      access === 'w' || access === 'rw' ? 'rw' : access === 'r' || access === 'ro' ? 'ro' : access,
    format,
    cdrom,
  };
}

/** xl-network-configuration(5): mac=, bridge=, model=, type= (ioemu), others refused by name. */
export function parseXlVif(spec: string, key = 'vif'): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const raw of spec.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq < 0) throw new ConfigError(key, `${spec}: expected KEY=VALUE items`);
    const k = item.slice(0, eq).trim();
    const v = item.slice(eq + 1).trim();
    if (k === 'mac') out.mac = v;
    else if (k === 'bridge') out.bridge = v;
    else if (k === 'model') out.model = v;
    else if (k === 'type' && (v === 'ioemu' || v === 'vif')) continue;
    else if (k === 'script' || k === 'ip' || k === 'vifname') {
      // The hotplug script and names are libxl's (xl create); a tap made here is put on its bridge.
      throw new ConfigError(
        key,
        `${spec}: ${k}= is libxl's hotplug; with xen-depriv launch give bridge= only (xl create with the shim keeps libxl's)`,
      );
    } else throw new ConfigError(key, `${spec}: unknown vif parameter ${k}`);
  }
  return out;
}

/** Maps xl.cfg(5) keys onto the launch config; every key is used, libxl's, or refused by name. */
export function configFromXl(entries: Map<string, XlValue>): unknown {
  const out: Record<string, unknown> = {};
  const qemu: Record<string, unknown> = {};
  const guest: Record<string, unknown> = {};
  const vnc: Record<string, unknown> = {};
  let vncOn = false;
  for (const [key, value] of entries) {
    const known = XL_KEYS[key];
    if (!known) {
      throw new ConfigError(
        key,
        'unknown key',
        'see `xen-depriv launch --help` for the xl.cfg keys',
      );
    }
    if (known.use === 'refused') throw new ConfigError(key, `refused: ${known.what}`);
    if (known.use === 'toolstack') continue;
    switch (key) {
      case 'name':
        out.name = str(key, value);
        break;
      case 'domid':
        out.domid = value;
        break;
      case 'type':
      case 'builder':
        if (value !== 'hvm')
          throw new ConfigError(
            key,
            `only "hvm" guests have a QEMU device model, saw ${JSON.stringify(value)}`,
          );
        break;
      case 'dm_restrict':
        if (value !== 1 && value !== '1' && value !== 'true') {
          throw new ConfigError(
            key,
            'must be 1: xen-depriv never runs a device model unrestricted',
            'remove the key or set dm_restrict = 1',
          );
        }
        break;
      case 'device_model_version':
        if (value !== 'qemu-xen')
          throw new ConfigError(key, `only "qemu-xen" is supported, saw ${JSON.stringify(value)}`);
        break;
      case 'device_model_override':
        qemu.binary = str(key, value);
        break;
      case 'device_model_user':
        out.user = { scheme: 'per-vm', user: str(key, value) };
        break;
      case 'device_model_args':
      case 'device_model_args_hvm':
        if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
          throw new ConfigError(key, 'expected a list of strings');
        }
        qemu.args = [...((qemu.args as string[] | undefined) ?? []), ...(value as string[])];
        break;
      case 'xen_depriv_mode':
        out.mode = value;
        break;
      case 'xen_depriv_state_dir':
        out.stateDir = value;
        break;
      case 'xen_depriv_machine':
        qemu.machine = value;
        break;
      case 'memory':
        guest.memoryMb = int(key, value);
        break;
      case 'vcpus':
        guest.vcpus = int(key, value);
        break;
      case 'maxvcpus':
        guest.maxVcpus = int(key, value);
        break;
      case 'boot':
        guest.boot = str(key, value);
        break;
      case 'videoram':
        guest.videoramMb = int(key, value);
        break;
      case 'vga':
        guest.vga = str(key, value);
        break;
      case 'stdvga':
        if (bool(key, value)) guest.vga = 'stdvga';
        break;
      case 'usb':
        guest.usb = bool(key, value);
        break;
      case 'usbdevice':
        guest.usbDevices = list(key, value);
        break;
      case 'localtime':
        guest.localtime = bool(key, value);
        break;
      case 'disk':
        guest.disks = list(key, value).map((d) => parseXlDisk(d, key));
        break;
      case 'vif':
        guest.nics = list(key, value).map((v) => parseXlVif(v, key));
        break;
      case 'vnc':
        vncOn = bool(key, value);
        break;
      case 'vnclisten':
        vnc.listen = str(key, value);
        break;
      case 'vncdisplay':
        vnc.display = int(key, value);
        break;
      case 'vncunused':
      case 'nographic':
        break;
      case 'serial': {
        const s = list(key, value);
        if (s.length > 1 || (s[0] !== 'pty' && s[0] !== 'none')) {
          throw new ConfigError(
            key,
            `only "pty" or "none" (one line), saw ${JSON.stringify(value)}`,
          );
        }
        guest.serial = s[0];
        break;
      }
      default:
        throw new ConfigError(key, 'unhandled key (a bug: the key table and the mapping disagree)');
    }
  }
  if (vncOn) guest.vnc = vnc;
  if (Object.keys(qemu).length) out.qemu = qemu;
  if (Object.keys(guest).length) out.guest = guest;
  return out;
}
