import { accessSync, constants as fsConstants, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { guestSchema } from './service/guest.js';
import { XEN_QEMU_BINARY } from './xen-qemu.js';
import { parseXlCfg } from './xlcfg.js';
import { configFromXl } from './xlkeys.js';

export { configFromXl, XEN_QEMU_BINARY };

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
  /** The guest's devices (xl.cfg's memory, disk, vif, vnc, serial, ...), see service/guest.ts. */
  guest: guestSchema,
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
