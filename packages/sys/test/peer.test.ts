import { chmodSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  close,
  constants,
  getgrnam,
  getpwnam,
  peerCredentials,
  pidfdOpen,
  pidfdSendSignal,
  spawnConfined,
  waitPid,
} from '../src/index.js';
import { canRun, canRunAsRoot, TEST_UID_BASE, tempDir } from './helpers.js';

const CLIENT_UID = TEST_UID_BASE + 300;
const CLIENT_GID = TEST_UID_BASE + 301;

function socketFd(socket: Socket): number {
  return (socket as unknown as { _handle: { fd: number } })._handle.fd;
}

describe.skipIf(!canRunAsRoot)('peerCredentials (a real unix socket connection)', () => {
  it("returns the connecting process's pid, uid and gid", async () => {
    using dir = tempDir('peer');
    chmodSync(dir.path, 0o755);
    const path = join(dir.path, 'sock');
    const server = createServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    chmodSync(path, 0o777);
    const client = spawnConfined({
      file: process.execPath,
      argv: [
        'node',
        '-e',
        `require('net').connect(${JSON.stringify(path)}).on('data', () => process.exit(0))`,
      ],
      env: {},
      uid: CLIENT_UID,
      gid: CLIENT_GID,
    });
    let reaped = false;
    try {
      const socket = await accepted;
      expect(peerCredentials(socketFd(socket))).toEqual({
        pid: client.pid,
        uid: CLIENT_UID,
        gid: CLIENT_GID,
      });
      await new Promise<void>((resolve) => socket.end('x', resolve));
      const status = waitPid(client.pid);
      reaped = true;
      expect(status).toEqual({ pid: client.pid, exitCode: 0, signal: null });
    } finally {
      if (!reaped) {
        pidfdSendSignal(client.pidfd, constants.SIGKILL);
        waitPid(client.pid);
      }
      close(client.pidfd);
      await new Promise((r) => server.close(r));
    }
  });
});

describe.skipIf(!canRun)('peerCredentials, getpwnam, getgrnam, pidfdOpen on this process', () => {
  it('peerCredentials of a listening socket names the listener; of a closed fd, EBADF', async () => {
    using dir = tempDir('peer2');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(dir.path, 's'), resolve));
    try {
      const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      // Linux records the credentials in effect at listen() on the listening socket.
      expect(peerCredentials(fd)).toEqual({ pid: process.pid, uid: 0, gid: 0 });
      expect(() => peerCredentials(999_999)).toThrow(
        expect.objectContaining({ code: 'EBADF', syscall: 'getsockopt' }),
      );
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('getpwnam and getgrnam read root and return null for no such name', () => {
    expect(getpwnam('root')).toEqual({
      name: 'root',
      uid: 0,
      gid: 0,
      dir: '/root',
      shell: expect.any(String),
    });
    expect(getpwnam('xen-depriv-no-such-user')).toBeNull();
    expect(getgrnam('root')).toEqual({ name: 'root', gid: 0, members: expect.any(Array) });
    expect(getgrnam('xen-depriv-no-such-group')).toBeNull();
    expect(() => getpwnam(42 as unknown as string)).toThrow(TypeError);
  });

  it('pidfdOpen of this process gives an fd; of a pid that does not exist, ESRCH', () => {
    const fd = pidfdOpen(process.pid);
    expect(fd).toBeGreaterThan(2);
    close(fd);
    expect(() => pidfdOpen(2 ** 22 + 1)).toThrow(
      expect.objectContaining({ code: 'ESRCH', syscall: 'pidfd_open' }),
    );
    expect(() => pidfdOpen(0)).toThrow(TypeError);
  });
});
