/** The differential tests' harness: the same steps on C xenstored and on XenstoreServer, transcripts compared. */
import { expect } from 'vitest';
import * as W from '../../src/wire/index.js';
import { RawConn, show, z } from './raw.js';

export { z };

export type ConnName = 'd0' | 'd1' | 'd2' | 'd3';

export interface Step {
  on: ConnName;
  type: number;
  payload: string | Buffer;
  /** 'T' = the id from this connection's last TRANSACTION_START reply. */
  tx?: number | 'T';
  /** This step releases the domain behind that connection: barriers skip it from then on. */
  releases?: ConnName;
}

export class Target {
  private lastTx: Partial<Record<ConnName, number>> = {};
  private reqId = 1;
  /** Connections of released domains: C xenstored stops answering them, ours closes them. */
  readonly gone = new Set<ConnName>();
  constructor(
    readonly label: string,
    readonly conns: Record<ConnName, RawConn>,
  ) {}

  async run(steps: Step[], barrierEach = true): Promise<string[]> {
    const out: string[] = [];
    for (const s of steps) {
      const c = this.conns[s.on];
      const tx = s.tx === 'T' ? (this.lastTx[s.on] ?? 0) : (s.tx ?? 0);
      const id = this.reqId++;
      c.send(s.type, id, tx, s.payload);
      for (const m of await c.until(
        (x) => x.reqId === id && x.type !== W.XS_WATCH_EVENT,
        `${this.label} reply to ${JSON.stringify(s).slice(0, 200)}`,
      )) {
        if (m.type === W.XS_TRANSACTION_START)
          this.lastTx[s.on] = Number.parseInt(m.payload.toString(), 10);
        out.push(`${s.on} ${norm(m)}`);
      }
      if (s.releases) this.gone.add(s.releases);
      if (barrierEach) out.push(...(await this.barrier()));
    }
    if (!barrierEach) out.push(...(await this.barrier()));
    return out;
  }

  /** Flush pending watch events: a GET_DOMAIN_PATH on each connection is answered after them. */
  async barrier(): Promise<string[]> {
    const out: string[] = [];
    for (const name of Object.keys(this.conns) as ConnName[]) {
      if (this.gone.has(name)) continue;
      const c = this.conns[name];
      const id = 0x7fff0000 + this.reqId++;
      c.send(W.XS_GET_DOMAIN_PATH, id, 0, z('0'));
      const got = await c.until(
        (x) => x.reqId === id && x.type === W.XS_GET_DOMAIN_PATH,
        `${this.label} barrier on ${name}`,
      );
      got.pop();
      for (const m of got) out.push(`${name} ${norm(m)}`);
    }
    return out;
  }
}

export function norm(m: W.XsMessage): string {
  if (m.type === W.XS_DIRECTORY_PART) {
    const i = m.payload.indexOf(0);
    return show({ ...m, payload: Buffer.concat([Buffer.from('<gen>'), m.payload.subarray(i)]) });
  }
  return show(m);
}

export async function openAll(
  dom0: string,
  dom: (d: number) => string,
): Promise<Record<ConnName, RawConn>> {
  return {
    d0: await RawConn.open(dom0),
    d1: await RawConn.open(dom(1)),
    d2: await RawConn.open(dom(2)),
    d3: await RawConn.open(dom(3)),
  };
}

/** Replay `steps` on C (`c`) and ours; with `barrierEach`, compare after every step so a report names the first divergence. */
export async function replay(
  c: Target,
  ours: Target,
  steps: Step[],
  barrierEach: boolean,
): Promise<string[]> {
  if (!barrierEach) {
    const want = await c.run(steps, false);
    expect(await ours.run(steps, false)).toEqual(want);
    return want;
  }
  const all: string[] = [];
  for (const [i, s] of steps.entries()) {
    const want = await c.run([s]);
    const got = await ours.run([s]);
    expect({ step: i, replies: got }).toEqual({ step: i, replies: want });
    all.push(...want);
  }
  return all;
}
