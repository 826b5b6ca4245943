// xen-deprivd's settings: a JSON file (documented path), the environment over it, the command
// line over both; validated with zod like the CLI's launch config, errors naming the key or
// the variable at fault.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { MIN_DM_UID } from '../config.js';
import { DEFAULT_STATE_DIR, defaultSettings, type EngineSettings } from './engine.js';
import { DEFAULT_SOCKET } from './paths.js';

export const DEFAULT_CONFIG_FILE = '/etc/xen-depriv/xen-deprivd.json';

const absolute = z
  .string()
  .min(1)
  .refine((p) => p.startsWith('/') && !p.split('/').includes('..'), {
    message: 'expected an absolute path without ..',
  });

export const serviceConfigSchema = z.strictObject({
  socket: absolute.default(DEFAULT_SOCKET),
  stateDir: absolute.default(DEFAULT_STATE_DIR),
  target: z.enum(['auto', 'embedded', 'dom0']).default('auto'),
  qemu: absolute.optional(),
  pool: z
    .strictObject({
      first: z
        .number()
        .int()
        .min(MIN_DM_UID, { message: `must be at least ${MIN_DM_UID}: no root or system uids` })
        .max(0xfffffffe),
      count: z.number().int().min(1).max(65536),
    })
    .default({ first: 3_000_000, count: 1000 }),
  upstream: z.enum(['privileged', 'dom0']).default('privileged'),
  logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
});

export type ServiceConfig = z.infer<typeof serviceConfigSchema>;

/** One bad setting: where it came from (file key, variable or option) and what is wrong. */
export class ServiceConfigError extends Error {
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
    this.name = 'ServiceConfigError';
  }
}

/** The environment variables that override the file, by key. */
export const ENV_KEYS: Readonly<Record<string, keyof ServiceConfig>> = {
  XEN_DEPRIVD_SOCKET: 'socket',
  XEN_DEPRIVD_STATE_DIR: 'stateDir',
  XEN_DEPRIVD_TARGET: 'target',
  XEN_DEPRIVD_QEMU: 'qemu',
  XEN_DEPRIVD_POOL: 'pool',
  XEN_DEPRIVD_UPSTREAM: 'upstream',
  XEN_DEPRIVD_LOG_LEVEL: 'logLevel',
};

function parsePool(text: string, where: string): { first: number; count: number } {
  const m = /^(\d+):(\d+)$/.exec(text);
  if (!m) throw new ServiceConfigError(where, `expected FIRST:COUNT, saw ${JSON.stringify(text)}`);
  return { first: Number(m[1]), count: Number(m[2]) };
}

/**
 * The settings from `file` (absent: defaults; `required`: absent is an error), then `env`, then
 * `flags` (string values as given on the command line).
 */
export function loadServiceConfig(options: {
  file: string;
  required: boolean;
  env: NodeJS.ProcessEnv;
  flags: Partial<Record<keyof ServiceConfig, string | undefined>>;
}): ServiceConfig {
  let fromFile: Record<string, unknown> = {};
  let text: string | null = null;
  try {
    text = readFileSync(options.file, 'utf8');
  } catch (e) {
    if (options.required || (e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ServiceConfigError(
        options.file,
        `cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      );
    }
  }
  if (text !== null) {
    try {
      fromFile = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new ServiceConfigError(options.file, `not valid JSON: ${(e as Error).message}`);
    }
    if (typeof fromFile !== 'object' || fromFile === null || Array.isArray(fromFile)) {
      throw new ServiceConfigError(options.file, 'expected a JSON object');
    }
  }
  const merged: Record<string, unknown> = { ...fromFile };
  const origin: Record<string, string> = Object.fromEntries(
    Object.keys(fromFile).map((k) => [k, `${options.file}: ${k}`]),
  );
  for (const [name, key] of Object.entries(ENV_KEYS)) {
    const v = options.env[name];
    if (v === undefined || v === '') continue;
    merged[key] = key === 'pool' ? parsePool(v, name) : v;
    origin[key] = name;
  }
  for (const [key, v] of Object.entries(options.flags)) {
    if (v === undefined) continue;
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    merged[key] = key === 'pool' ? parsePool(v, flag) : v;
    origin[key] = flag;
  }
  const r = serviceConfigSchema.safeParse(merged);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const key = String(issue?.path[0] ?? '');
  if (issue?.code === 'unrecognized_keys') {
    throw new ServiceConfigError(`${options.file}: ${issue.keys[0]}`, 'unknown key');
  }
  const where = origin[key] ?? key;
  const sub = issue?.path.slice(1).join('.');
  throw new ServiceConfigError(sub ? `${where} (${sub})` : where, issue?.message ?? 'invalid');
}

/** The engine's settings from the service's. */
export function engineSettings(c: ServiceConfig): EngineSettings {
  return defaultSettings({
    stateDir: c.stateDir,
    ...(c.target === 'auto' ? {} : { target: c.target }),
    ...(c.qemu ? { qemu: c.qemu } : {}),
    user: { scheme: 'pool', first: c.pool.first, count: c.pool.count },
    upstream: c.upstream,
    ...(c.logLevel === 'debug' ? { xenstoreTrace: true } : {}),
  });
}
