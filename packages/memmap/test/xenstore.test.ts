import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Physmap, physmapXenstorePath, readPhysmapEntries } from '../src/index.js';

// The harness's limits on a busy 2-core CI machine (property runs, gcc, child processes), not
// performance bounds: no assertion here depends on time.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const run = promisify(execFile);

/**
 * The parts of @xen-depriv/xs-restrict this test uses. It is loaded at run time, not imported
 * statically: memmap does not depend on it, so its typecheck must not wait for its build.
 */
interface XsClient {
  write(path: string, value: string): Promise<void>;
  directory(path: string): Promise<string[]>;
  read(path: string): Promise<Uint8Array>;
  close(): void;
}
interface XsModule {
  XenstoreServer: new () => { listen(path: string): Promise<void>; close(): Promise<void> };
  XenstoreClient: { connect(options: { path: string }): Promise<XsClient> };
}
const XS_RESTRICT = '@xen-depriv/xs-restrict';
const xs = (await import(XS_RESTRICT).catch(() => undefined)) as XsModule | undefined;
const GiB = 0x4000_0000;
const MiB = 0x10_0000;
const hasXenstoreUtils =
  spawnSync('sh', ['-c', 'command -v xenstore-write && command -v xenstore-ls'], {
    stdio: 'ignore',
  }).status === 0;

// Skipped, saying so, when @xen-depriv/xs-restrict is not built (its dist is absent).
describe.skipIf(xs === undefined)(
  'legacy physmap through the embedded xenstored of @xen-depriv/xs-restrict',
  () => {
    let dir: string;
    let sock: string;
    let server: InstanceType<XsModule['XenstoreServer']>;
    let client: XsClient;

    beforeAll(async () => {
      const { XenstoreServer, XenstoreClient } = xs as XsModule;
      dir = mkdtempSync(join(tmpdir(), 'memmap-xs-'));
      sock = join(dir, 'socket');
      server = new XenstoreServer();
      await server.listen(sock);
      client = await XenstoreClient.connect({ path: sock });
    });
    afterAll(async () => {
      client?.close();
      await server?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('property: write toXenstore() entries, read them back with readPhysmapEntries, fromXenstore is lossless', async () => {
      let domid = 100;
      await fc.assert(
        fc.asyncProperty(
          fc.uniqueArray(
            fc.record({
              slot: fc.integer({ min: 0, max: 200 }),
              pages: fc.integer({ min: 1, max: 256 }),
              name: fc.option(fc.stringMatching(/^[a-z][a-z0-9.]{0,15}$/), { nil: undefined }),
            }),
            { maxLength: 5, selector: (r) => r.slot },
          ),
          async (relocs) => {
            domid++;
            const layout = { ramBytes: 5 * GiB };
            const p = new Physmap(layout);
            for (const [i, r] of relocs.entries()) {
              const reloc = {
                startAddr: 0xf000_0000 + r.slot * MiB,
                size: r.pages * 4096,
                physOffset: 0x2_0000_0000 + i * 0x100_0000,
              };
              p.addRelocation(r.name === undefined ? reloc : { ...reloc, name: r.name });
            }
            for (const e of p.toXenstore(domid)) await client.write(e.path, e.value);
            const entries = await readPhysmapEntries(client, domid);
            expect(entries.length).toBe(p.toXenstore(domid).length);
            expect(Physmap.fromXenstore(layout, domid, entries).toJSON()).toEqual(p.toJSON());
          },
        ),
        { numRuns: 25 },
      );
      expect(await readPhysmapEntries(client, 32000)).toEqual([]);
    });

    it.skipIf(!hasXenstoreUtils)(
      "Debian's libxenstore tools: entries written by xenstore-write (xs_write, as QEMU) parse back; ours list as QEMU wrote them",
      async () => {
        const env = { ...process.env, XENSTORED_PATH: sock };
        const base = physmapXenstorePath(42);
        // What QEMU 7.2 writes for a relocated 16 MiB VRAM, with libxenstore's xs_write.
        await run(
          'xenstore-write',
          [
            `${base}/f0800000/start_addr`,
            'f0000000',
            `${base}/f0800000/size`,
            '1000000',
            `${base}/f0800000/name`,
            'vga.vram',
          ],
          { env },
        );
        const parsed = Physmap.fromXenstore(
          { ramBytes: 2 * GiB },
          42,
          await readPhysmapEntries(client, 42),
        );
        expect(parsed.relocations).toEqual([
          { startAddr: 0xf000_0000, size: 0x100_0000, physOffset: 0xf080_0000, name: 'vga.vram' },
        ]);

        const ours = new Physmap({ ramBytes: 2 * GiB });
        ours.addRelocation({
          startAddr: 0xf100_0000,
          size: 0x2000,
          physOffset: 0x1_0000_0000,
          name: 'vga.rom',
        });
        for (const e of ours.toXenstore(43)) await client.write(e.path, e.value);
        const { stdout } = await run('xenstore-ls', ['-f', physmapXenstorePath(43)], { env });
        expect(stdout.trim().split('\n')).toEqual([
          `${physmapXenstorePath(43)}/100000000 = ""`,
          `${physmapXenstorePath(43)}/100000000/start_addr = "f1000000"`,
          `${physmapXenstorePath(43)}/100000000/size = "2000"`,
          `${physmapXenstorePath(43)}/100000000/name = "vga.rom"`,
        ]);
      },
    );
  },
);
