/**
 * Debian's own xenstore clients (xenstore-utils, and test-xenstore from
 * xen-utils-4.17) against `xs-restrict serve`, through XENSTORED_PATH.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { xenUtilsBinary } from './helpers/peer.js';

const pkgRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(pkgRoot, 'dist/cli.js');
const hasUtils =
  spawnSync('sh', ['-c', 'command -v xenstore-read'], { stdio: 'ignore' }).status === 0;
const testXenstore = xenUtilsBinary('test-xenstore');
const missing = !existsSync(CLI)
  ? `${CLI} is not built (npx tsup)`
  : !hasUtils
    ? 'xenstore-utils is not installed'
    : undefined;

function run(cmd: string, args: string[], sock: string) {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    env: { ...process.env, XENSTORED_PATH: sock },
    timeout: 60000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.skipIf(missing !== undefined)(
  `xs-restrict serve with Debian's clients ${missing ? `(skipped: ${missing})` : ''}`,
  { timeout: 60000 },
  () => {
    let dir = '';
    let child: ChildProcess | undefined;
    let dom0 = '';
    let dom1 = '';
    let firstLine = '';

    beforeAll(async () => {
      dir = mkdtempSync('/tmp/xsr-');
      dom0 = `${dir}/socket`;
      dom1 = `${dir}/dom1.sock`;
      const proc = spawn(
        process.execPath,
        [CLI, 'serve', '--socket', dom0, '--domain', `1=${dom1}`],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      child = proc;
      firstLine = await new Promise<string>((resolve, reject) => {
        let buf = '';
        proc.stdout?.on('data', (d: Buffer) => {
          buf += d.toString();
          if (buf.includes('\n')) resolve(buf);
        });
        proc.once('exit', (code) => reject(new Error(`serve exited with ${code} before ready`)));
      });
    });

    afterAll(() => {
      if (child && child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    });

    it('prints exactly "ready" once every socket listens', () => {
      expect(firstLine).toBe('ready\n');
      expect(existsSync(dom0) && existsSync(dom1)).toBe(true);
    });

    it('xenstore-write, -read, -ls, -list, -exists, -rm, -chmod behave as against xenstored', () => {
      expect(run('xenstore-write', ['/vm/a', 'hello', '/vm/b/c', 'x y'], dom0).status).toBe(0);
      expect(run('xenstore-read', ['/vm/a', '/vm/b/c'], dom0).stdout).toBe('hello\nx y\n');
      expect(run('xenstore-list', ['/vm'], dom0).stdout).toBe('a\nb\n');
      expect(run('xenstore-ls', ['/vm'], dom0).stdout).toBe('a = "hello"\nb = ""\n c = "x y"\n');
      expect(run('xenstore-exists', ['/vm/b/c'], dom0).status).toBe(0);
      expect(run('xenstore-exists', ['/vm/none'], dom0).status).toBe(1);
      const miss = run('xenstore-read', ['/vm/none'], dom0);
      expect([miss.status, miss.stderr]).toEqual([
        1,
        "xenstore-read: couldn't read path /vm/none\n",
      ]);
      expect(run('xenstore-chmod', ['/vm/a', 'n0', 'r1'], dom0).status).toBe(0);
      expect(run('xenstore-ls', ['-p', '/vm'], dom0).stdout).toMatch(
        /^a = "hello" [ .]+\(n0,r1\)\n/,
      );
      expect(run('xenstore-rm', ['/vm/b'], dom0).status).toBe(0);
      expect(run('xenstore-list', ['/vm'], dom0).stdout).toBe('a\n');
    });

    it('a guest socket acts as its domid: own home, read-only grant, EACCES elsewhere', () => {
      expect(run('xenstore-write', ['/local/domain/1', ''], dom0).status).toBe(0);
      expect(run('xenstore-chmod', ['/local/domain/1', 'n1'], dom0).status).toBe(0);
      expect(run('xenstore-write', ['device/vif/0', 'up'], dom1).status).toBe(0);
      expect(run('xenstore-ls', ['-p', '/local/domain/1/device'], dom1).stdout).toMatch(
        /^vif = "" [ .]+\(n1\)\n 0 = "up" [ .]+\(n1\)\n$/,
      );
      expect(run('xenstore-read', ['/vm/a'], dom1).stdout).toBe('hello\n');
      expect(run('xenstore-write', ['/vm/a', 'guest'], dom1).status).toBe(1);
      expect(run('xenstore-read', ['/tool'], dom1).status).toBe(1);
    });

    it('xenstore-watch sees the initial event and a change below the watched node', async () => {
      const w = spawn('xenstore-watch', ['-n', '2', '/watched'], {
        env: { ...process.env, XENSTORED_PATH: dom0 },
      });
      let out = '';
      w.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const exited = new Promise<number | null>((resolve) => w.once('exit', resolve));
      // The first event is xenstored's initial one; wait for it before changing anything.
      while (!out.includes('\n')) await new Promise((r) => setTimeout(r, 10));
      expect(run('xenstore-write', ['/watched/child', '1'], dom0).status).toBe(0);
      expect(await exited).toBe(0);
      expect(out).toBe('/watched\n/watched/child\n');
    });

    it.skipIf(testXenstore === undefined)("Xen's test-xenstore passes", () => {
      const r = run(testXenstore as string, [], dom0);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/ta err/);
    });

    it('exits 0 on SIGTERM and removes its sockets', async () => {
      const proc = child as ChildProcess;
      const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(existsSync(dom0) || existsSync(dom1)).toBe(false);
    });
  },
);
