import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// The JSON-RPC API from outside Node: test/python/test_deprivd.py (standard library only)
// starts its own xen-deprivd (uid pool 3620000:16) and drives launch, list, check, destroy
// and the faults. Its output is printed here so it shows in the run.
const pkg = join(import.meta.dirname, '..');
const QEMU = '/usr/bin/qemu-system-x86_64';
const skip =
  process.geteuid?.() !== 0
    ? 'needs root (the service changes uids, namespaces and mounts)'
    : !existsSync(QEMU)
      ? `${QEMU} is missing`
      : null;

describe('xen-deprivd from Python (stdlib JSON-RPC client)', () => {
  it.skipIf(skip !== null)(
    `python3 -m unittest -v test/python/test_deprivd.py${skip ? ` (skipped: ${skip})` : ''}`,
    async () => {
      expect(existsSync(join(pkg, 'dist', 'deprivd.js')), 'npm run build first').toBe(true);
      const child = spawn('python3', ['-m', 'unittest', '-v', 'test/python/test_deprivd.py'], {
        cwd: pkg,
        stdio: ['ignore', 'pipe', 'pipe'],
        // The service runs on the node that runs this test.
        env: { ...process.env, NODE: process.execPath, PYTHONUNBUFFERED: '1' },
      });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
      const code = await new Promise<number | null>((resolve) =>
        child.on('close', (c) => resolve(c)),
      );
      console.log(out);
      expect(out).toMatch(/^Ran \d+ tests? in/m);
      expect(out).not.toMatch(/skipped/);
      expect(code).toBe(0);
    },
    600_000,
  );
});
