import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  close,
  constants,
  isAvailable,
  open,
  pidfdSendSignal,
  spawnConfined,
  waitPid,
} from '@xen-depriv/sys';
import { describe, expect, it } from 'vitest';
import { compileSeccomp, deviceModelAllowlist } from '../src/index.js';

const QEMU = '/usr/bin/qemu-system-x86_64';
const ready = isAvailable() && process.getuid?.() === 0 && existsSync(QEMU);
const tick = () => new Promise((r) => setTimeout(r, 10));

/**
 * Sends QMP commands one after another and collects every line QEMU writes until it closes.
 * The socket's file exists from QEMU's bind(), before its listen(): a connection refused then is
 * tried again.
 */
async function qmp(socket: string, commands: string[]): Promise<string[]> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await qmpOnce(socket, commands);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED' || attempt >= 300) throw e;
      await tick();
    }
  }
}

function qmpOnce(socket: string, commands: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const lines: string[] = [];
    let pending = '';
    let next = 0;
    const c = createConnection(socket);
    c.setEncoding('utf8');
    c.on('data', (chunk: string) => {
      pending += chunk;
      for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
        const line = pending.slice(0, i).trim();
        pending = pending.slice(i + 1);
        if (line === '') continue;
        lines.push(line);
        // Greeting or a command's return: send the next command.
        if ((line.includes('"QMP"') || line.includes('"return"')) && next < commands.length) {
          c.write(`${commands[next++]}\n`);
        }
      }
    });
    // QEMU closes the connection when it quits; refused before it listens.
    let refused: Error | undefined;
    c.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ECONNREFUSED' && lines.length === 0) refused = e;
    });
    c.on('close', () => (refused ? reject(refused) : resolve(lines)));
    c.on('timeout', () =>
      reject(new Error(`QMP on ${socket}: no answer; got ${lines.join(' | ')}`)),
    );
    c.setTimeout(30_000);
  });
}

describe.skipIf(!ready)(
  'the device-model allowlist under the real kernel with the real QEMU (needs root, the sys addon, qemu-system-x86)',
  () => {
    it('QEMU 7.2 starts confined by the filter, answers QMP and quits cleanly: no syscall it makes is refused', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'pf-qemu-'));
      const socket = join(dir, 'qmp.sock');
      const logPath = join(dir, 'qemu.log');
      const log = open(logPath, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o600);
      const devNull = open('/dev/null', constants.O_RDWR);
      let child: { pid: number; pidfd: number } | undefined;
      let reaped = false;
      try {
        child = spawnConfined({
          file: QEMU,
          argv: [
            'qemu',
            '-M',
            'none',
            '-nodefaults',
            '-display',
            'none',
            '-S',
            '-qmp',
            `unix:${socket},server=on,wait=off`,
          ],
          env: {},
          fds: [
            { target: 0, source: devNull },
            { target: 1, source: log },
            { target: 2, source: log },
          ],
          noNewPrivs: true,
          seccomp: compileSeccomp(deviceModelAllowlist),
        });
        for (let i = 0; i < 3000 && !existsSync(socket); i++) {
          const early = waitPid(child.pid, { noHang: true });
          if (early) {
            reaped = true;
            throw new Error(
              `QEMU exited before QMP: ${JSON.stringify(early)} ${readFileSync(logPath, 'utf8')}`,
            );
          }
          await tick();
        }
        const lines = await qmp(socket, [
          '{"execute":"qmp_capabilities"}',
          '{"execute":"query-status"}',
          '{"execute":"quit"}',
        ]);
        expect(
          lines.some((l) => l.includes('"status": "prelaunch"')),
          `QMP lines: ${lines.join(' | ')}; QEMU log: ${readFileSync(logPath, 'utf8')}`,
        ).toBe(true);
        let status = waitPid(child.pid, { noHang: true });
        for (let i = 0; i < 3000 && !status; i++) {
          await tick();
          status = waitPid(child.pid, { noHang: true });
        }
        reaped = status !== null;
        expect(status).toEqual({ pid: child.pid, exitCode: 0, signal: null });
      } finally {
        if (child) {
          if (!reaped) {
            pidfdSendSignal(child.pidfd, constants.SIGKILL ?? 9);
            for (let i = 0; i < 3000 && !waitPid(child.pid, { noHang: true }); i++) await tick();
          }
          close(child.pidfd);
        }
        close(log);
        close(devNull);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  },
);
