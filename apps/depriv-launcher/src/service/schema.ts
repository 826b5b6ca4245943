// The JSON-RPC API of xen-deprivd, as zod schemas: the one description of every method's
// params and result. The server validates with them and `openrpc.json` is generated from them
// (`node dist/deprivd.js --openrpc`), never written by hand; a test checks the two agree.
import { z } from 'zod';
import { launchConfigSchema, MAX_DOMID } from '../config.js';

export const API_VERSION = 1;

const domid = z.number().int().min(1).max(MAX_DOMID).describe('guest domain id, 1..32751');

export const libxlLaunchSchema = z
  .strictObject({
    libxlArgv: z
      .array(z.string().max(4096))
      .min(1)
      .max(1024)
      .describe("QEMU's argv as libxl built it, without argv[0]"),
    shimPid: z
      .number()
      .int()
      .min(1)
      .nullable()
      .default(null)
      .describe(
        "pid of the process holding libxl's pre-opened QMP listener (the shim): the service takes its copy with pidfd_getfd(2)",
      ),
  })
  .describe('a launch from the libxl shim');

export const launchParamsSchema = z
  .union([libxlLaunchSchema, launchConfigSchema])
  .describe('the config object `xen-depriv launch` reads as JSON, or a libxl launch');

const dmInfoSchema = z.strictObject({
  domid,
  pid: z.number().int().nullable(),
  uid: z.number().int().nullable(),
  mode: z.enum(['jail', 'libxl-compat']),
  target: z.enum(['embedded', 'dom0']),
  kind: z.enum(['config', 'libxl']),
  state: z.enum(['launching', 'running', 'destroying']),
  started: z.string().describe('ISO 8601 time the launch started'),
  ageSeconds: z.number().int(),
  adopted: z.boolean().describe('taken over from a previous service after a restart'),
});

const checkSchema = z.strictObject({
  name: z.string(),
  ok: z.boolean(),
  expected: z.string(),
  actual: z.string(),
});

const exitSchema = z.strictObject({
  domid,
  pid: z.number().int().nullable(),
  uid: z.number().int().nullable(),
  reason: z.string(),
  errors: z.array(z.string()),
});

const empty = z.strictObject({});

/** Every method: params, result, and a one-line summary. */
export const METHODS = {
  launch: {
    summary: 'launch a deprivileged device model; resolves when it answers QMP',
    params: launchParamsSchema,
    result: z.strictObject({
      domid,
      pid: z.number().int(),
      uid: z.number().int(),
      gid: z.number().int(),
      status: z.string().describe("QMP query-status's status"),
      qmpSocket: z.string(),
      log: z.string(),
      xenstoreSocket: z.string().describe("the DM's restricting xenstore proxy"),
      spawner: z.string(),
      limitations: z.array(z.string()),
      notes: z.array(z.string()),
    }),
  },
  plan: {
    summary: 'the launch plan a launch with these params would execute, without running it',
    params: launchParamsSchema,
    result: z.strictObject({ plan: z.record(z.string(), z.unknown()) }),
  },
  destroy: {
    summary: 'take the DM of a domain down: quit, kill, reap its uid, release, clean',
    params: z.strictObject({ domid }),
    result: exitSchema,
  },
  list: {
    summary: 'every device model the service holds',
    params: empty,
    result: z.strictObject({ dms: z.array(dmInfoSchema) }),
  },
  check: {
    summary: 'the confinement report of a running device model, from /proc',
    params: z.strictObject({ domid }),
    result: z.strictObject({
      domid,
      pid: z.number().int(),
      ok: z.boolean(),
      passed: z.number().int(),
      failed: z.array(z.string()),
      limited: z.array(z.string()),
      checks: z.array(checkSchema),
    }),
  },
  watch: {
    summary:
      'subscribe this connection to the `exited` notification of a running DM (what the shim does after a service restart)',
    params: z.strictObject({ domid }),
    result: dmInfoSchema,
  },
  recover: {
    summary: 'adopt running DMs and finish half-done launches and destroys (also done at start)',
    params: empty,
    result: z.strictObject({
      adopted: z.array(z.number().int()),
      finished: z.array(z.number().int()),
      errors: z.array(z.strictObject({ domid: z.number().int(), error: z.string() })),
      leasesReclaimed: z.array(z.number().int()),
    }),
  },
  status: {
    summary: 'the service: target, state dir, DM count, memory, whether host work is off-loop',
    params: empty,
    result: z.strictObject({
      pid: z.number().int(),
      version: z.string(),
      target: z.enum(['embedded', 'dom0']),
      stateDir: z.string(),
      socket: z.string(),
      dms: z.number().int(),
      clients: z.number().int(),
      rssBytes: z.number().int(),
      uptimeSeconds: z.number(),
      hostWorkOffLoop: z.boolean(),
    }),
  },
  version: {
    summary: 'the service and API versions',
    params: empty,
    result: z.strictObject({ name: z.string(), version: z.string(), api: z.number().int() }),
  },
} as const;

export type MethodName = keyof typeof METHODS;

/** The notification the service sends a subscribed connection when its DM ends. */
export const NOTIFICATIONS = {
  exited: { summary: 'the device model of a launch or watch ended', params: exitSchema },
} as const;

/** JSON-RPC error codes: the standard ones, and the service's own (-32001..-32099). */
export const ERRORS = {
  PARSE: { code: -32700, message: 'parse error' },
  INVALID_REQUEST: { code: -32600, message: 'invalid request' },
  METHOD_NOT_FOUND: { code: -32601, message: 'method not found' },
  INVALID_PARAMS: { code: -32602, message: 'invalid params' },
  INTERNAL: { code: -32603, message: 'internal error' },
  EXISTS: { code: -32001, message: 'the domain has a device model already' },
  NOT_FOUND: { code: -32002, message: 'no device model for that domain' },
  HOST_CANNOT: { code: -32003, message: 'this host cannot do that' },
  LAUNCH_FAILED: { code: -32004, message: 'the launch failed' },
  DESTROY_FAILED: { code: -32005, message: 'a teardown step failed' },
  BUSY: { code: -32006, message: 'too many requests in flight on this connection' },
  FORBIDDEN: { code: -32007, message: 'the peer may not use this socket' },
} as const;

/**
 * The OpenRPC document of the API, generated from the schemas above (committed as
 * `openrpc.json`; `test/openrpc.test.ts` fails when they drift apart).
 */
export function openrpcDocument(version: string): Record<string, unknown> {
  const schema = (s: z.ZodType) => z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' });
  const outSchema = (s: z.ZodType) => z.toJSONSchema(s, { io: 'output', unrepresentable: 'any' });
  return {
    openrpc: '1.3.2',
    info: {
      title: 'xen-deprivd',
      version,
      description:
        'JSON-RPC 2.0 over a unix stream socket, one JSON object per line (newline-delimited). Root-only: the socket is mode 0600 and the peer uid is checked (SO_PEERCRED).',
    },
    methods: Object.entries(METHODS).map(([name, m]) => ({
      name,
      summary: m.summary,
      paramStructure: 'by-name',
      params: [{ name: 'params', required: true, schema: schema(m.params) }],
      result: { name: `${name}Result`, schema: outSchema(m.result) },
      errors: Object.values(ERRORS),
    })),
    components: {
      notifications: Object.fromEntries(
        Object.entries(NOTIFICATIONS).map(([name, n]) => [
          name,
          { summary: n.summary, params: outSchema(n.params) },
        ]),
      ),
    },
  };
}
