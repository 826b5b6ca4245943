// xen-deprivd's JSON-RPC 2.0 server: newline-delimited JSON over a unix stream socket, root-only
// (mode 0600 and SO_PEERCRED). Bounded per client: line size, requests in flight, queued output.
// A misbehaving client is answered or dropped; no other client and no DM notices.
import { chmodSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { peerCredentials } from '@xen-depriv/sys';
import type { SchemeConfig } from '@xen-depriv/uid-allocator';
import type { z } from 'zod';
import type { LaunchConfig } from '../config.js';
import { launchConfigSchema } from '../config.js';
import { assess } from '../runtime.js';
import { type DmEngine, EngineError, type ExitInfo, type LaunchRequest } from './engine.js';
import { API_VERSION, ERRORS, libxlLaunchSchema, METHODS, type MethodName } from './schema.js';

export interface RpcLimits {
  /** A request line longer than this gets -32600 and the connection is closed. */
  readonly maxLineBytes: number;
  /** Requests of one connection being served at once; more get -32006. */
  readonly maxInFlight: number;
  /** Replies queued for a client that does not read; past this the client is dropped. */
  readonly maxOutputBytes: number;
}

export const DEFAULT_RPC_LIMITS: RpcLimits = {
  maxLineBytes: 1 << 20,
  maxInFlight: 16,
  maxOutputBytes: 4 << 20,
};

export interface RpcServerOptions {
  readonly engine: DmEngine;
  readonly socket: string;
  readonly limits?: Partial<RpcLimits>;
  /** Peer uids allowed besides root. Default none. */
  readonly allowUids?: readonly number[];
  /** One JSON object per event (connections refused, clients dropped); default none. */
  readonly log?: (event: Record<string, unknown>) => void;
}

type Id = string | number | null;

class RpcFailure extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export function packageVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === '@xen-depriv/depriv-launcher' && pkg.version) return pkg.version;
    } catch {
      // Try the next layout (dist/ or src/service/).
    }
  }
  return '0.0.0';
}

const ENGINE_CODES: Record<EngineError['code'], number> = {
  EXISTS: ERRORS.EXISTS.code,
  NOT_FOUND: ERRORS.NOT_FOUND.code,
  HOST_CANNOT: ERRORS.HOST_CANNOT.code,
  BAD_PARAMS: ERRORS.INVALID_PARAMS.code,
  LAUNCH_FAILED: ERRORS.LAUNCH_FAILED.code,
  DESTROY_FAILED: ERRORS.DESTROY_FAILED.code,
};

function paramsError(e: z.ZodError): RpcFailure {
  const issue = e.issues[0];
  let key = issue?.path.length ? issue.path.join('.') : '(params)';
  let message = issue?.message ?? 'invalid';
  if (issue?.code === 'unrecognized_keys') {
    key = [...issue.path, issue.keys[0]].join('.');
    message = 'unknown key';
  }
  return new RpcFailure(ERRORS.INVALID_PARAMS.code, `params.${key}: ${message}`, { key });
}

function parse<T extends z.ZodType>(schema: T, params: unknown): z.infer<T> {
  const r = schema.safeParse(params ?? {});
  if (!r.success) throw paramsError(r.error);
  return r.data;
}

/** The launch params, as the engine takes them; the two forms are told apart by `libxlArgv`. */
export function launchRequest(
  params: unknown,
  stateDir: string,
  defaultUser: SchemeConfig,
): LaunchRequest {
  if (typeof params !== 'object' || params === null || Array.isArray(params)) {
    throw new RpcFailure(ERRORS.INVALID_PARAMS.code, 'params: expected an object', {
      key: '(params)',
    });
  }
  if ('libxlArgv' in params) {
    const p = parse(libxlLaunchSchema, params);
    return { kind: 'libxl', libxlArgv: p.libxlArgv, shimPid: p.shimPid };
  }
  const c: LaunchConfig = parse(launchConfigSchema, params);
  if ('stateDir' in params && c.stateDir !== stateDir) {
    throw new RpcFailure(
      ERRORS.INVALID_PARAMS.code,
      `params.stateDir: the service's state directory is ${stateDir}, saw ${c.stateDir}`,
      { key: 'stateDir' },
    );
  }
  return {
    kind: 'config',
    domid: c.domid,
    name: c.name,
    mode: c.mode,
    target: c.target,
    qemu: c.target === 'dom0' && !hasBinary(params) ? { ...c.qemu, binary: '' } : c.qemu,
    // No scheme named: the service's own pool (its leases, its reaper).
    user: 'user' in params ? c.user : defaultUser,
    guest: c.guest,
  };
}

const hasBinary = (params: object): boolean =>
  typeof (params as { qemu?: { binary?: unknown } }).qemu?.binary === 'string';

interface Client {
  readonly id: number;
  /** The peer's pid (SO_PEERCRED). */
  pid: number;
  readonly socket: Socket;
  inFlight: number;
  readonly cancels: Set<() => void>;
  closed: boolean;
}

export class RpcServer {
  readonly engine: DmEngine;
  readonly socketPath: string;
  readonly limits: RpcLimits;
  private readonly allowUids: ReadonlySet<number>;
  private readonly log: (event: Record<string, unknown>) => void;
  private server: Server | null = null;
  private readonly clients = new Set<Client>();
  private nextClient = 1;
  private readonly started = Date.now();

  constructor(options: RpcServerOptions) {
    this.engine = options.engine;
    this.socketPath = options.socket;
    this.limits = { ...DEFAULT_RPC_LIMITS, ...options.limits };
    this.allowUids = new Set([0, ...(options.allowUids ?? [])]);
    this.log = options.log ?? (() => {});
  }

  get clientCount(): number {
    return this.clients.size;
  }

  async listen(): Promise<void> {
    rmSync(this.socketPath, { force: true });
    const server = createServer((s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: this.socketPath, backlog: 128 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // Root-only; the peer check below holds even if the mode is widened.
    chmodSync(this.socketPath, 0o600);
    this.server = server;
  }

  async close(): Promise<void> {
    for (const c of this.clients) this.drop(c, null);
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server = null;
  }

  private accept(socket: Socket): void {
    const client: Client = {
      id: this.nextClient++,
      socket,
      pid: -1,
      inFlight: 0,
      cancels: new Set(),
      closed: false,
    };
    socket.on('error', () => this.drop(client, null));
    socket.on('close', () => this.drop(client, null));
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    let uid = -1;
    try {
      if (typeof fd === 'number') {
        const cred = peerCredentials(fd);
        uid = cred.uid;
        client.pid = cred.pid;
      }
    } catch {
      // No credentials: refused below.
    }
    if (!this.allowUids.has(uid)) {
      this.log({ event: 'refused-peer', client: client.id, uid });
      socket.end(
        `${JSON.stringify({
          jsonrpc: '2.0',
          id: null,
          error: {
            code: ERRORS.FORBIDDEN.code,
            message: `peer uid ${uid} may not use ${this.socketPath} (root only)`,
          },
        })}\n`,
      );
      return;
    }
    this.clients.add(client);
    let buf: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      if (client.closed) return;
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      for (;;) {
        const nl = buf.indexOf(10);
        if (nl < 0) break;
        const line = buf.subarray(0, nl);
        buf = buf.subarray(nl + 1);
        if (line.length > this.limits.maxLineBytes) {
          this.tooLong(client);
          return;
        }
        if (line.length > 0) this.onLine(client, line.toString('utf8'));
        if (client.closed) return;
      }
      if (buf.length > this.limits.maxLineBytes) this.tooLong(client);
    });
  }

  private tooLong(client: Client): void {
    this.log({ event: 'line-too-long', client: client.id });
    this.send(client, {
      jsonrpc: '2.0',
      id: null,
      error: {
        code: ERRORS.INVALID_REQUEST.code,
        message: `request line over ${this.limits.maxLineBytes} bytes`,
      },
    });
    client.closed = true;
    client.socket.end();
    this.drop(client, null);
  }

  private drop(client: Client, why: string | null): void {
    if (why) this.log({ event: why, client: client.id });
    if (!this.clients.delete(client)) return;
    client.closed = true;
    for (const cancel of client.cancels) cancel();
    client.cancels.clear();
    if (!client.socket.destroyed && why !== null) client.socket.destroy();
  }

  private send(client: Client, msg: Record<string, unknown>): void {
    if (client.socket.destroyed || client.socket.writableEnded) return;
    client.socket.write(`${JSON.stringify(msg)}\n`);
    // A client that does not read: its replies pile up here. Drop it, nobody else waits.
    if (client.socket.writableLength > this.limits.maxOutputBytes) {
      this.drop(client, 'slow-reader');
    }
  }

  private reply(client: Client, id: Id | undefined, result: unknown): void {
    if (id === undefined) return;
    this.send(client, { jsonrpc: '2.0', id, result });
  }

  private fail(client: Client, id: Id | undefined, e: unknown): void {
    if (id === undefined) return;
    let err: { code: number; message: string; data?: Record<string, unknown> };
    if (e instanceof RpcFailure) {
      err = { code: e.code, message: e.message, ...(e.data ? { data: e.data } : {}) };
    } else if (e instanceof EngineError) {
      err = { code: ENGINE_CODES[e.code], message: e.message, data: { ...e.data, code: e.code } };
    } else {
      err = { code: ERRORS.INTERNAL.code, message: (e as Error)?.message ?? String(e) };
    }
    this.send(client, { jsonrpc: '2.0', id, error: err });
  }

  private onLine(client: Client, line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch (e) {
      this.fail(
        client,
        null,
        new RpcFailure(ERRORS.PARSE.code, `parse error: ${(e as Error).message}`),
      );
      return;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      this.fail(
        client,
        null,
        new RpcFailure(ERRORS.INVALID_REQUEST.code, 'expected a JSON-RPC 2.0 request object'),
      );
      return;
    }
    const m = msg as { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown };
    const idOk =
      m.id === undefined ||
      m.id === null ||
      typeof m.id === 'string' ||
      (typeof m.id === 'number' && Number.isFinite(m.id));
    const id: Id = idOk ? ((m.id ?? null) as Id) : null;
    if (m.jsonrpc !== '2.0' || typeof m.method !== 'string' || !idOk) {
      this.fail(
        client,
        id,
        new RpcFailure(
          ERRORS.INVALID_REQUEST.code,
          'expected {"jsonrpc":"2.0","method":string,"id":number|string|null,"params"?:object}',
        ),
      );
      return;
    }
    if (
      m.params !== undefined &&
      (typeof m.params !== 'object' || m.params === null || Array.isArray(m.params))
    ) {
      this.fail(
        client,
        m.id === undefined ? undefined : id,
        new RpcFailure(ERRORS.INVALID_PARAMS.code, 'params: expected an object (by-name)', {
          key: '(params)',
        }),
      );
      return;
    }
    const replyId = m.id === undefined ? undefined : id;
    if (!Object.hasOwn(METHODS, m.method)) {
      this.fail(
        client,
        replyId,
        new RpcFailure(ERRORS.METHOD_NOT_FOUND.code, `method not found: ${m.method.slice(0, 64)}`),
      );
      return;
    }
    if (client.inFlight >= this.limits.maxInFlight) {
      this.fail(
        client,
        replyId,
        new RpcFailure(
          ERRORS.BUSY.code,
          `${this.limits.maxInFlight} requests in flight on this connection already`,
        ),
      );
      return;
    }
    client.inFlight++;
    this.dispatch(client, m.method as MethodName, m.params).then(
      (result) => {
        client.inFlight--;
        this.reply(client, replyId, result);
      },
      (e) => {
        client.inFlight--;
        // The whole message goes to the service's log: a client (the shim) may show less.
        if (m.method === 'launch' || m.method === 'destroy') {
          this.log({
            event: `${m.method}-failed`,
            client: client.id,
            error: e instanceof Error ? e.message : String(e),
          });
        }
        this.fail(client, replyId, e);
      },
    );
  }

  private subscribe(client: Client, fn: (notify: (e: ExitInfo) => void) => () => void): void {
    let cancel: (() => void) | null = null;
    let done = false;
    const c = fn((e) => {
      done = true;
      if (cancel) client.cancels.delete(cancel);
      // After the reply of the request that subscribed: a DM gone before it was answered is
      // reported in that order too.
      setImmediate(() => this.send(client, { jsonrpc: '2.0', method: 'exited', params: e }));
    });
    if (done) return;
    cancel = c;
    client.cancels.add(c);
  }

  private async dispatch(client: Client, method: MethodName, params: unknown): Promise<unknown> {
    const engine = this.engine;
    const stateDir = engine.settings.stateDir;
    switch (method) {
      case 'launch': {
        // The two forms are told apart by libxlArgv and parsed by their own schema: an error
        // names the key (a parse against the union would only say "invalid input").
        const req = launchRequest(params, stateDir, engine.settings.user);
        let notify: ((e: ExitInfo) => void) | null = null;
        let pending: ExitInfo | null = null;
        if (req.kind === 'libxl' && req.shimPid !== null && req.shimPid !== client.pid) {
          // Only the caller's own descriptors may be taken (pidfd_getfd), never another's.
          throw new RpcFailure(
            ERRORS.INVALID_PARAMS.code,
            `params.shimPid: expected the caller's own pid ${client.pid}, saw ${req.shimPid}`,
            { key: 'shimPid' },
          );
        }
        const result = await engine.launch(req, {
          onExit: (e) => {
            if (notify) notify(e);
            else pending = e;
          },
        });
        // The launching connection hears when its DM ends (the shim exits then).
        this.subscribe(client, (n) => {
          notify = n;
          if (pending) n(pending);
          return () => {
            notify = null;
          };
        });
        return result;
      }
      case 'plan': {
        const p = await engine.plan(launchRequest(params, stateDir, engine.settings.user));
        return {
          plan: {
            ...p,
            seccomp:
              p.seccomp === null
                ? null
                : { profile: p.seccomp.profile, instructions: p.seccomp.program.length / 8 },
          },
        };
      }
      case 'destroy': {
        const { domid } = parse(METHODS.destroy.params, params);
        return engine.destroy(domid);
      }
      case 'list':
        parse(METHODS.list.params, params);
        return { dms: engine.list() };
      case 'check': {
        const { domid } = parse(METHODS.check.params, params);
        const r = await engine.check(domid);
        const verdict = assess(r.checks);
        return {
          domid,
          pid: r.pid,
          ok: verdict.ok,
          passed: r.checks.filter((c) => c.ok).length,
          failed: verdict.failed.map((c) => c.name),
          limited: verdict.limited.map((c) => c.name),
          checks: r.checks,
        };
      }
      case 'watch': {
        const { domid } = parse(METHODS.watch.params, params);
        let info: ReturnType<DmEngine['list']>[number] | null = null;
        this.subscribe(client, (n) => {
          const w = engine.watch(domid, n);
          info = w.info;
          return w.cancel;
        });
        return info;
      }
      case 'recover':
        parse(METHODS.recover.params, params);
        return engine.recover();
      case 'status':
        parse(METHODS.status.params, params);
        return {
          pid: process.pid,
          version: packageVersion(),
          target: engine.settings.target,
          stateDir,
          socket: this.socketPath,
          dms: engine.list().length,
          clients: this.clients.size,
          rssBytes: process.memoryUsage.rss(),
          uptimeSeconds: Math.round((Date.now() - this.started) / 100) / 10,
          hostWorkOffLoop: engine.offLoop,
        };
      case 'version':
        parse(METHODS.version.params, params);
        return { name: 'xen-deprivd', version: packageVersion(), api: API_VERSION };
    }
  }
}
