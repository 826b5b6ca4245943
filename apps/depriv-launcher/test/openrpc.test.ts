import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageVersion } from '../src/service/rpc.js';
import { ERRORS, METHODS, openrpcDocument } from '../src/service/schema.js';

describe('openrpc.json (the committed API description)', () => {
  it('is exactly what the zod schemas generate (regenerate: npm run openrpc in apps/depriv-launcher)', () => {
    const committed = JSON.parse(
      readFileSync(join(import.meta.dirname, '..', 'openrpc.json'), 'utf8'),
    ) as unknown;
    expect(committed).toEqual(openrpcDocument(packageVersion()));
  });

  it('names every method the server dispatches, and the stable error codes', () => {
    const doc = openrpcDocument('x') as { methods: { name: string; errors: { code: number }[] }[] };
    expect(doc.methods.map((m) => m.name)).toEqual(Object.keys(METHODS));
    expect(doc.methods.map((m) => m.name)).toEqual([
      'launch',
      'plan',
      'destroy',
      'list',
      'check',
      'watch',
      'recover',
      'status',
      'version',
    ]);
    expect(Object.values(ERRORS).map((e) => e.code)).toEqual([
      -32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005, -32006,
      -32007,
    ]);
  });
});
