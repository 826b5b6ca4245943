import { connect, type Socket } from 'node:net';

/** A JSON-RPC error from xen-deprivd, with its stable code and data. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data: Record<string, unknown> | undefined,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

/** A minimal client of xen-deprivd's socket (newline-delimited JSON-RPC 2.0). */
export class DeprivdClient {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  private readonly listeners = new Set<(method: string, params: unknown) => void>();

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    const fail = (e: Error) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('xen-deprivd closed the connection')));
  }

  /** Connects, or resolves null when nothing listens there (no service: run in process). */
  static connect(path: string): Promise<DeprivdClient | null> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(new DeprivdClient(s));
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') resolve(null);
        else reject(e);
      });
    });
  }

  private onData(d: string): void {
    this.buf += d;
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl < 0) return;
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      let m: {
        id?: number;
        result?: unknown;
        error?: { code: number; message: string; data?: Record<string, unknown> };
        method?: string;
        params?: unknown;
      };
      try {
        m = JSON.parse(line);
      } catch {
        continue;
      }
      if (m.method !== undefined) {
        for (const l of this.listeners) l(m.method, m.params);
        continue;
      }
      const p = typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
      if (!p) {
        if (m.error)
          for (const q of this.pending.values())
            q.reject(new RpcError(m.error.code, m.error.message, m.error.data));
        continue;
      }
      this.pending.delete(m.id as number);
      if (m.error) p.reject(new RpcError(m.error.code, m.error.message, m.error.data));
      else p.resolve(m.result);
    }
  }

  call<T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
    });
  }

  onNotification(fn: (method: string, params: unknown) => void): void {
    this.listeners.add(fn);
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }
}
