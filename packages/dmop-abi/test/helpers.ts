import { readFileSync } from 'node:fs';
import type { DmOp, DmOpName } from '../src/index.js';
import { DM_OPS } from '../src/layout.js';

export const here = new URL('.', import.meta.url).pathname;

export interface IoctlRecord {
  request: number;
  name: string;
  arg?: string;
  dom?: number;
  num?: number;
  ubufs?: string[];
  bufs?: string[];
  replyBufs?: string[];
  arr?: string;
  err?: string;
  replyErr?: string;
  ret: number;
  errno: number;
}

export interface Vector {
  fn: string;
  args: Record<string, unknown>;
  dmop: Record<string, unknown> | null;
  ioctls: IoctlRecord[];
  rc: number;
  errno: number;
  outputs: Record<string, unknown>;
}

export interface LayoutJson {
  structs: Record<string, { size: number; fields: Record<string, [number, number]> }>;
  ioctls: Record<string, number>;
  constants: Record<string, number>;
}

export function loadVectors(dir = `${here}vectors`): Vector[] {
  return (JSON.parse(readFileSync(`${dir}/vectors.json`, 'utf8')) as { vectors: Vector[] }).vectors;
}

export function loadLayout(dir = `${here}vectors`): LayoutJson {
  return JSON.parse(readFileSync(`${dir}/layout.json`, 'utf8')) as LayoutJson;
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

export function unhex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'hex'));
}

/** The captured `dmop` JSON as a DmOp: 64-bit fields arrive as hex strings. */
export function toDmOp(json: Record<string, unknown>): DmOp {
  const name = json.op as DmOpName;
  const layout = DM_OPS[name];
  const out: Record<string, unknown> = { op: name };
  for (const [key, value] of Object.entries(json)) {
    if (key === 'op') continue;
    if (key === 'extents') {
      out.extents = (value as { firstPfn: string; nr: number }[]).map((e) => ({
        firstPfn: BigInt(e.firstPfn),
        nr: e.nr,
      }));
      continue;
    }
    const field = layout.inputs.find((f) => f.name === key);
    if (field === undefined)
      throw new Error(`vector field ${name}.${key} is not an input of the layout`);
    out[key] = field.type === 'u64' ? BigInt(value as string) : value;
  }
  return out as DmOp;
}
