import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as sys from '@xen-depriv/sys';
import { afterAll, describe, expect, it, vi } from 'vitest';

// The harness's limits on a busy 2-core CI machine (property runs, gcc, child processes), not
// performance bounds: no assertion here depends on time.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const readme = readFileSync(resolve(__dirname, '../README.md'), 'utf8');
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] as string);
const src = resolve(__dirname, '../src/index.ts');
const dir = mkdtempSync(join(tmpdir(), 'memmap-readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README examples run as written', () => {
  it('has an example per section', () => {
    expect(blocks.length).toBe(4);
  });
  for (const [i, block] of blocks.entries()) {
    const needsSys = block.includes('MemfdForeignMemory');
    it.skipIf(needsSys && !sys.isAvailable())(`example ${i + 1}`, async () => {
      const file = join(dir, `example-${i}.ts`);
      writeFileSync(file, block.replaceAll("'@xen-depriv/memmap'", JSON.stringify(src)));
      const log = vi.spyOn(console, 'log').mockImplementation(() => {});
      try {
        await import(pathToFileURL(file).href);
        expect(log).toHaveBeenCalled();
      } finally {
        log.mockRestore();
      }
    });
  }
});
