// @xen-depriv/sys on a real Xen 4.17 dom0 (Linux 6.1): a hypercall through sys.ioctl answers what
// `xl info` reports, SO_PEERCRED names the real xenstored, and spawnConfined builds a private
// root holding one mknod'ed privcmd node that only the node's owner uid can open.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  close,
  constants,
  ioctl,
  open,
  peerCredentials,
  spawnConfined,
  waitPid,
} from '@xen-depriv/sys';

const IOCTL_PRIVCMD_HYPERCALL = 0x305000;
const __HYPERVISOR_xen_version = 17;
const UID = 3_230_001;
const OTHER = 3_230_002;

const numbers = (path) => {
  const rdev = statSync(path).rdev;
  return { major: (rdev >> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
};

/** Runs busybox sh in a private root with /dev/xen/privcmd owned by `owner`, as `uid`; its output and exit. */
async function openInJail(uid, owner) {
  const dir = mkdtempSync(join(tmpdir(), 'sysx-'));
  const root = join(dir, 'root');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'dev'));
  const outPath = join(dir, 'out');
  const outFd = openSync(outPath, 'w');
  const devNull = open('/dev/null', constants.O_RDWR);
  try {
    const { pid, pidfd } = spawnConfined({
      file: '/bin/busybox',
      argv: ['sh', '-c', 'exec 3<>/dev/privcmd && echo opened'],
      env: { PATH: '/bin' },
      fds: [
        { target: 0, source: devNull },
        { target: 1, source: outFd },
        { target: 2, source: outFd },
      ],
      namespaces: ['mount', 'ipc', 'net', 'uts'],
      mounts: [
        { type: 'bind', source: '/bin', target: join(root, 'bin') },
        { type: 'tmpfs', target: join(root, 'dev'), mode: 0o755, size: 65536, devices: true },
        {
          type: 'mknod',
          path: join(root, 'dev/privcmd'),
          kind: 'char',
          ...numbers('/dev/xen/privcmd'),
          mode: 0o600,
          uid: owner,
          gid: owner,
        },
      ],
      // The lab's dom0 never leaves its initramfs, where pivot_root(2) is EINVAL (see qemu-launcher's sysSpawner).
      root: { path: root, mode: 'chroot' },
      uid,
      gid: uid,
      dropCapabilityBoundingSet: true,
    });
    let st = waitPid(pid, { noHang: true });
    while (st === null) {
      await new Promise((r) => setTimeout(r, 10));
      st = waitPid(pid, { noHang: true });
    }
    close(pidfd);
    return { exitCode: st.exitCode, signal: st.signal, output: readFileSync(outPath, 'utf8') };
  } finally {
    closeSync(outFd);
    close(devNull);
    rmSync(dir, { recursive: true, force: true });
  }
}

export default function (test) {
  test('a xen_version hypercall through sys.ioctl answers what xl info reports', () => {
    const info = execFileSync('xl', ['info'], { encoding: 'utf8' });
    const major = Number(/^xen_major\s*:\s*(\d+)/m.exec(info)?.[1]);
    const minor = Number(/^xen_minor\s*:\s*(\d+)/m.exec(info)?.[1]);
    const fd = open('/dev/xen/privcmd', constants.O_RDWR);
    try {
      const arg = new Uint8Array(48); // struct privcmd_hypercall { u64 op; u64 arg[5]; }
      new DataView(arg.buffer).setBigUint64(0, BigInt(__HYPERVISOR_xen_version), true);
      const v = ioctl(fd, IOCTL_PRIVCMD_HYPERCALL, arg); // XENVER_version: arg[0] = 0
      assert.deepEqual([v >> 16, v & 0xffff], [major, minor]);
      return { xenVersion: `${v >> 16}.${v & 0xffff}` };
    } finally {
      close(fd);
    }
  });

  test('peerCredentials of a connection to /run/xenstored/socket is the real xenstored', async () => {
    const pid = Number(execFileSync('pidof', ['xenstored'], { encoding: 'utf8' }).trim());
    const sock = net.createConnection('/run/xenstored/socket');
    await new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    try {
      const cred = peerCredentials(sock._handle.fd);
      assert.deepEqual(cred, { pid, uid: 0, gid: 0 });
      return cred;
    } finally {
      sock.destroy();
    }
  });

  test('spawnConfined: a private root whose privcmd node opens for its owner uid only', async () => {
    const mine = await openInJail(UID, UID);
    assert.deepEqual(mine, { exitCode: 0, signal: null, output: 'opened\n' });
    const other = await openInJail(UID, OTHER);
    // A failed redirection of the special builtin `exec` ends the shell with status 1.
    assert.equal(other.exitCode, 1);
    assert.match(other.output, /Permission denied/);
    return { owner: mine.output.trim(), otherUid: `exit ${other.exitCode}` };
  });
}
