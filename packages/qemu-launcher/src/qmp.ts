import { connect, type Socket } from 'node:net';
import { LauncherError } from './errors.js';

export interface QmpLimits {
  /** Longest single JSON line accepted from the peer. */
  readonly maxLineBytes: number;
  /** Bytes held for the peer at once: the partial line plus queued events (libvirt's 10 MiB). */
  readonly maxBufferedBytes: number;
  /** Time allowed for the greeting after connect. */
  readonly greetingTimeoutMs: number;
  /** Default time allowed for each command's reply. */
  readonly commandTimeoutMs: number;
  /** Events kept unread; the oldest are dropped (and counted) beyond this. */
  readonly maxEvents: number;
}

export const DEFAULT_QMP_LIMITS: QmpLimits = {
  maxLineBytes: 10 << 20,
  maxBufferedBytes: 10 << 20,
  greetingTimeoutMs: 10_000,
  commandTimeoutMs: 10_000,
  maxEvents: 256,
};

export interface QmpEvent {
  readonly event: string;
  readonly data: unknown;
  readonly timestamp: { readonly seconds: number; readonly microseconds: number } | null;
}

export interface QmpGreeting {
  readonly version: { readonly major: number; readonly minor: number; readonly micro: number };
  readonly package: string;
  readonly capabilities: readonly string[];
}

export interface QmpStats {
  /** The most bytes the client ever held for this peer. */
  readonly highWaterBytes: number;
  readonly droppedEvents: number;
  readonly receivedBytes: number;
}

interface Pending {
  readonly command: string;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: LauncherError) => void;
  readonly timer: NodeJS.Timeout;
}

/** Called once when the QMP session fails (oversize, garbage, timeout, the socket closing). */
export type FailureListener = (error: LauncherError) => void;

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A QMP client that treats the peer as hostile: every line, every byte held and every wait is
 * bounded, and anything out of protocol ends the session. The first failure is final and is
 * reported once through `onFailure`, so the owner can destroy the DM.
 */
export class QmpClient {
  readonly greeting: QmpGreeting;
  readonly limits: QmpLimits;
  private readonly socket: Socket;
  private chunks: Buffer[] = [];
  private partialBytes = 0;
  private eventBytes = 0;
  private readonly queue: { event: QmpEvent; bytes: number }[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failureValue: LauncherError | null = null;
  private closed = false;
  private readonly failureListeners: FailureListener[] = [];
  private readonly eventWaiters: (() => void)[] = [];
  private stats_ = { highWaterBytes: 0, droppedEvents: 0, receivedBytes: 0 };
  private onGreeting: ((v: unknown) => void) | null = null;

  private constructor(socket: Socket, limits: QmpLimits) {
    this.socket = socket;
    this.limits = limits;
    this.greeting = { version: { major: 0, minor: 0, micro: 0 }, package: '', capabilities: [] };
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e: NodeJS.ErrnoException) =>
      this.fail(
        new LauncherError('EQMP_CLOSED', `QMP socket error: ${e.message}`, {
          step: 'qmp',
          ...(e.code === undefined ? {} : { errno: e.code }),
          cause: e,
        }),
      ),
    );
    socket.on('close', () => {
      if (!this.closed)
        this.fail(
          new LauncherError('EQMP_CLOSED', 'QMP peer closed the connection', { step: 'qmp' }),
        );
    });
  }

  /**
   * Connects to a QMP socket, waits for the greeting and negotiates capabilities
   * (`qmp_capabilities`); on any failure the socket is destroyed and a typed error thrown.
   */
  static async connect(path: string, limits: Partial<QmpLimits> = {}): Promise<QmpClient> {
    const l: QmpLimits = { ...DEFAULT_QMP_LIMITS, ...limits };
    const socket = connect({ path });
    await new Promise<void>((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) => {
        socket.destroy();
        reject(
          new LauncherError('EQMP_CLOSED', `QMP connect ${path}: ${e.message}`, {
            step: 'qmp-connect',
            ...(e.code === undefined ? {} : { errno: e.code }),
            cause: e,
          }),
        );
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve();
      });
    });
    return QmpClient.fromSocket(socket, l);
  }

  /** As `connect`, over an already connected socket. */
  static async fromSocket(socket: Socket, limits: Partial<QmpLimits> = {}): Promise<QmpClient> {
    const l: QmpLimits = { ...DEFAULT_QMP_LIMITS, ...limits };
    const client = new QmpClient(socket, l);
    const greeting = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        client.fail(
          new LauncherError(
            'EQMP_TIMEOUT',
            `QMP greeting: expected within ${l.greetingTimeoutMs} ms, saw nothing`,
            {
              step: 'qmp-greeting',
            },
          ),
        );
      }, l.greetingTimeoutMs);
      client.onGreeting = (g) => {
        clearTimeout(timer);
        resolve(g);
      };
      client.onFailure((e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    (client as { greeting: QmpGreeting }).greeting = parseGreeting(greeting, client);
    await client.execute('qmp_capabilities');
    return client;
  }

  get failure(): LauncherError | null {
    return this.failureValue;
  }

  get stats(): QmpStats {
    return { ...this.stats_ };
  }

  /** Called once, with the error that ended the session (never after a clean `close`). */
  onFailure(listener: FailureListener): void {
    if (this.failureValue) listener(this.failureValue);
    else this.failureListeners.push(listener);
  }

  /** Runs one command; rejects on timeout, QMP error reply or session failure. */
  execute(
    command: string,
    args?: Record<string, unknown>,
    options: { timeoutMs?: number } = {},
  ): Promise<unknown> {
    if (this.failureValue) return Promise.reject(this.failureValue);
    if (this.closed)
      return Promise.reject(new LauncherError('EQMP_CLOSED', `QMP ${command}: session is closed`));
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? this.limits.commandTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(
          new LauncherError(
            'EQMP_TIMEOUT',
            `QMP ${command}: expected a reply within ${timeoutMs} ms, saw none`,
            {
              step: `qmp:${command}`,
            },
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      this.socket.write(
        `${JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })}\n`,
      );
    });
  }

  /** Takes the queued events (oldest first). */
  takeEvents(): QmpEvent[] {
    const out = this.queue.splice(0).map((q) => q.event);
    this.eventBytes = 0;
    return out;
  }

  /** Resolves with the first event of that name (from the queue or later), bounded by a timeout. */
  async waitEvent(name: string, timeoutMs: number): Promise<QmpEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.queue.findIndex((q) => q.event.event === name);
      if (i >= 0) {
        const [q] = this.queue.splice(i, 1);
        this.eventBytes -= q!.bytes;
        return q!.event;
      }
      if (this.failureValue) throw this.failureValue;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new LauncherError(
          'EQMP_TIMEOUT',
          `QMP event ${name}: expected within ${timeoutMs} ms, saw none`,
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.eventWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Ends the session without marking it failed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(
        new LauncherError('EQMP_CLOSED', `QMP ${p.command}: session closed before the reply`),
      );
    }
    this.pending.clear();
    this.wakeEventWaiters();
  }

  private wakeEventWaiters(): void {
    for (const w of this.eventWaiters.splice(0)) w();
  }

  private fail(error: LauncherError): void {
    if (this.failureValue || this.closed) return;
    this.failureValue = error;
    this.closed = true;
    this.socket.destroy();
    this.chunks = [];
    this.partialBytes = 0;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
    this.wakeEventWaiters();
    for (const l of this.failureListeners.splice(0)) l(error);
  }

  private noteHeld(): void {
    const held = this.partialBytes + this.eventBytes;
    if (held > this.stats_.highWaterBytes) this.stats_.highWaterBytes = held;
  }

  private onData(data: Buffer): void {
    if (this.closed) return;
    this.stats_.receivedBytes += data.length;
    let start = 0;
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      const end = nl < 0 ? data.length : nl;
      const piece = data.subarray(start, end);
      if (this.partialBytes + piece.length > this.limits.maxLineBytes) {
        this.fail(
          new LauncherError(
            'EQMP_OVERSIZE',
            `QMP line: expected at most ${this.limits.maxLineBytes} bytes, saw more than that`,
            { step: 'qmp' },
          ),
        );
        return;
      }
      if (this.partialBytes + piece.length + this.eventBytes > this.limits.maxBufferedBytes) {
        this.fail(
          new LauncherError(
            'EQMP_OVERSIZE',
            `QMP buffer: expected at most ${this.limits.maxBufferedBytes} bytes held, saw more than that`,
            { step: 'qmp' },
          ),
        );
        return;
      }
      if (piece.length > 0) {
        // Copy: the socket's buffer may be reused, and a slice would pin the whole chunk.
        this.chunks.push(Buffer.from(piece));
        this.partialBytes += piece.length;
        this.noteHeld();
      }
      if (nl < 0) return;
      const line = Buffer.concat(this.chunks, this.partialBytes).toString('utf8');
      this.chunks = [];
      this.partialBytes = 0;
      this.onLine(line);
      if (this.closed) return;
      start = nl + 1;
    }
  }

  private protocolError(message: string): void {
    this.fail(new LauncherError('EQMP_PROTOCOL', message, { step: 'qmp' }));
  }

  private onLine(raw: string): void {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '') return;
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.protocolError(`QMP: expected a JSON object per line, saw "${line.slice(0, 80)}"`);
      return;
    }
    if (!isObject(msg)) {
      this.protocolError(`QMP: expected a JSON object per line, saw ${line.slice(0, 80)}`);
      return;
    }
    // QEMU 7.2 can emit an event (RESUME at start-up) on a freshly accepted connection before its
    // greeting; such events are queued under the usual limits, anything else must be the greeting.
    if (this.onGreeting && typeof msg.event !== 'string') {
      const g = this.onGreeting;
      this.onGreeting = null;
      g(msg);
      return;
    }
    if (typeof msg.event === 'string') {
      const ts = msg.timestamp;
      const event: QmpEvent = {
        event: msg.event,
        data: msg.data ?? null,
        timestamp:
          isObject(ts) && typeof ts.seconds === 'number' && typeof ts.microseconds === 'number'
            ? { seconds: ts.seconds, microseconds: ts.microseconds }
            : null,
      };
      this.queue.push({ event, bytes: line.length });
      this.eventBytes += line.length;
      while (this.queue.length > this.limits.maxEvents) {
        const dropped = this.queue.shift()!;
        this.eventBytes -= dropped.bytes;
        this.stats_.droppedEvents++;
      }
      this.noteHeld();
      this.wakeEventWaiters();
      return;
    }
    const id = msg.id;
    const p = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (!p) {
      this.protocolError(
        `QMP: expected a reply to a pending command id, saw id ${JSON.stringify(id ?? null).slice(0, 40)}`,
      );
      return;
    }
    this.pending.delete(id as number);
    clearTimeout(p.timer);
    if ('return' in msg) {
      p.resolve(msg.return);
    } else if (isObject(msg.error)) {
      const cls = typeof msg.error.class === 'string' ? msg.error.class : '?';
      const desc = typeof msg.error.desc === 'string' ? msg.error.desc.slice(0, 200) : '';
      p.reject(
        new LauncherError('EQMP_ERROR', `QMP ${p.command}: ${cls}: ${desc}`, {
          step: `qmp:${p.command}`,
        }),
      );
    } else {
      this.protocolError(
        `QMP ${p.command}: expected "return" or "error", saw keys ${Object.keys(msg).join(',').slice(0, 80)}`,
      );
    }
  }
}

function parseGreeting(g: unknown, client: QmpClient): QmpGreeting {
  const qmp = isObject(g) ? g.QMP : undefined;
  const version = isObject(qmp) && isObject(qmp.version) ? qmp.version : undefined;
  const q = version && isObject(version.qemu) ? version.qemu : undefined;
  if (
    !isObject(qmp) ||
    !q ||
    typeof q.major !== 'number' ||
    typeof q.minor !== 'number' ||
    typeof q.micro !== 'number'
  ) {
    const e = new LauncherError(
      'EQMP_PROTOCOL',
      `QMP greeting: expected {"QMP":{"version":{"qemu":...}}}, saw ${JSON.stringify(g).slice(0, 80)}`,
      {
        step: 'qmp-greeting',
      },
    );
    (client as unknown as { fail(e: LauncherError): void }).fail(e);
    throw e;
  }
  return {
    version: { major: q.major, minor: q.minor, micro: q.micro },
    package: typeof version?.package === 'string' ? version.package : '',
    capabilities: Array.isArray(qmp.capabilities)
      ? qmp.capabilities.filter((c): c is string => typeof c === 'string')
      : [],
  };
}
