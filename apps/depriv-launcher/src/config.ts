import { accessSync, constants as fsConstants, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { XEN_QEMU_BINARY } from './xen-qemu.js';
import { parseXlCfg, type XlValue } from './xlcfg.js';

export { XEN_QEMU_BINARY };

/** The lowest uid a device model may get: below it live system users, 0 is root. */
export const MIN_DM_UID = 1000;
/** libxl's range-base scheme covers domids 1..32751 (DOMID_FIRST_RESERVED is 0x7FF0). */
export const MAX_DOMID = 0x7fef;

const uidSchema = z
  .number()
  .int()
  .min(MIN_DM_UID, {
    message: `must be at least ${MIN_DM_UID}: uid 0 is root and lower uids are system users`,
  })
  .max(0xfffffffe);

const userSchema = z.discriminatedUnion('scheme', [
  z.strictObject({
    scheme: z.literal('range-base'),
    user: z.string().min(1).default('xen-qemuuser-range-base'),
  }),
  z.strictObject({
    scheme: z.literal('shared'),
    user: z.string().min(1).default('xen-qemuuser-shared'),
  }),
  z.strictObject({ scheme: z.literal('per-vm'), user: z.string().min(1) }),
  z.strictObject({
    scheme: z.literal('pool'),
    first: uidSchema,
    count: z.number().int().min(1).max(65536),
  }),
]);

export const launchConfigSchema = z.strictObject({
  domid: z.number().int().min(1).max(MAX_DOMID),
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, { message: 'letters, digits, _ . - only, at most 64' })
    .optional(),
  mode: z.enum(['jail', 'libxl-compat']).default('jail'),
  target: z.enum(['embedded', 'dom0']).default('embedded'),
  qemu: z
    .strictObject({
      binary: z.string().min(1).default('/usr/bin/qemu-system-x86_64'),
      machine: z.string().min(1).default('none'),
      args: z.array(z.string()).default([]),
    })
    .default({ binary: '/usr/bin/qemu-system-x86_64', machine: 'none', args: [] }),
  user: userSchema.default({ scheme: 'pool', first: 3_000_000, count: 1000 }),
  stateDir: z.string().min(1).default('/run/xen-depriv'),
});

export type LaunchConfig = z.infer<typeof launchConfigSchema>;

/** Validates a parsed config object; the first problem becomes a ConfigError naming its key. */
export function validateConfig(input: unknown): LaunchConfig {
  const result = launchConfigSchema.safeParse(input);
  if (result.success) {
    const explicit = (input as { qemu?: { binary?: unknown } }).qemu?.binary !== undefined;
    if (result.data.target === 'dom0' && !explicit) {
      return { ...result.data, qemu: { ...result.data.qemu, binary: XEN_QEMU_BINARY } };
    }
    return result.data;
  }
  const issue = result.error.issues[0];
  const key = issue?.path.length ? issue.path.join('.') : '(config)';
  if (issue?.code === 'unrecognized_keys') {
    const path = issue.path.length ? `${issue.path.join('.')}.` : '';
    throw new ConfigError(
      `${path}${issue.keys[0]}`,
      'unknown key',
      'see `xen-depriv launch --help` for the keys',
    );
  }
  throw new ConfigError(key, issue?.message ?? 'invalid');
}

// xl.cfg keys a domain config may carry that concern the guest, not its device model's
// confinement: accepted and ignored. Anything else unknown is an error, so a typo in a key
// that matters (dm_restrict, device_model_user) is never silently dropped.
const XL_GUEST_KEYS = new Set([
  'memory',
  'maxmem',
  'vcpus',
  'maxvcpus',
  'cpus',
  'disk',
  'vif',
  'boot',
  'kernel',
  'ramdisk',
  'cmdline',
  'extra',
  'root',
  'serial',
  'vga',
  'videoram',
  'stdvga',
  'vnc',
  'sdl',
  'on_poweroff',
  'on_reboot',
  'on_crash',
  'on_watchdog',
  'uuid',
  'acpi',
  'apic',
  'pae',
  'hap',
  'viridian',
  'tsc_mode',
  'localtime',
  'usb',
  'usbdevice',
  'firmware',
  'bios',
  'nographic',
  'xen_platform_pci',
]);

/** Maps xl.cfg(5) keys (libxl's depriv settings) onto the launch config. */
export function configFromXl(entries: Map<string, XlValue>): unknown {
  const out: Record<string, unknown> = {};
  const qemu: Record<string, unknown> = {};
  const str = (key: string, v: XlValue): string => {
    if (typeof v !== 'string')
      throw new ConfigError(key, `expected a string, saw ${JSON.stringify(v)}`);
    return v;
  };
  for (const [key, value] of entries) {
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
        if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
          throw new ConfigError(key, 'expected a list of strings');
        }
        qemu.args = value;
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
      default:
        if (!XL_GUEST_KEYS.has(key))
          throw new ConfigError(
            key,
            'unknown key',
            'xl keys the launcher reads: name, domid, dm_restrict, device_model_user, device_model_override, device_model_args, device_model_version, xen_depriv_mode',
          );
    }
  }
  if (Object.keys(qemu).length) out.qemu = qemu;
  return out;
}

/** Reads a config file: JSON (`.json`) or xl.cfg syntax (anything else), then validates it. */
export function loadConfig(path: string): LaunchConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(
      '(file)',
      `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  if (extname(path) === '.json' || text.trimStart().startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigError('(file)', `${path} is not valid JSON: ${(err as Error).message}`);
    }
    return validateConfig(parsed);
  }
  return validateConfig(configFromXl(parseXlCfg(text)));
}

/**
 * Checks what a config names on this host before anything is done: the QEMU binary is an
 * executable file and (unless `dryRun`: a dry run touches nothing) the state directory can be
 * created and written.
 */
export function checkHostForConfig(config: LaunchConfig, options: { dryRun?: boolean } = {}): void {
  try {
    if (!statSync(config.qemu.binary).isFile()) throw new Error('not a file');
    accessSync(config.qemu.binary, fsConstants.X_OK);
  } catch {
    throw new ConfigError(
      'qemu.binary',
      `${config.qemu.binary} is not an executable file`,
      'install qemu-system-x86 (or qemu-system-xen) or fix the path',
    );
  }
  if (options.dryRun === true) return;
  try {
    makeDirs(resolve(config.stateDir));
    accessSync(config.stateDir, fsConstants.W_OK);
    if (!statSync(config.stateDir).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw new ConfigError(
      'stateDir',
      `${config.stateDir} is not a writable directory (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
}

// Node's recursive mkdir loops forever where mkdir answers ENOENT under an existing parent
// (procfs, sysfs); walk the components instead, so every failure surfaces once.
function makeDirs(path: string): void {
  const parent = dirname(path);
  if (parent !== path) {
    try {
      statSync(parent);
    } catch {
      makeDirs(parent);
    }
  }
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}
