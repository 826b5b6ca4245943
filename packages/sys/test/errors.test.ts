import { describe, expect, it } from 'vitest';
import { SpawnError, SysError } from '../src/index.js';

describe('SysError', () => {
  it('names the errno, the syscall and the detail', () => {
    const e = new SysError('ioctl', 25, 'request 0x00005401 on fd 3');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('SysError');
    expect(e.errno).toBe(25);
    expect(e.code).toBe('ENOTTY');
    expect(e.syscall).toBe('ioctl');
    expect(e.message).toBe(
      'ioctl failed with ENOTTY (inappropriate ioctl for device): request 0x00005401 on fd 3',
    );
  });

  it('calls errno 11 EAGAIN (EWOULDBLOCK is the same number on Linux)', () => {
    expect(new SysError('flock', 11).code).toBe('EAGAIN');
  });

  it('keeps an unknown errno as a number', () => {
    const e = new SysError('x', 4000);
    expect(e.code).toBe('E4000');
    expect(e.errno).toBe(4000);
  });
});

describe('SpawnError', () => {
  it('is a SysError naming the step', () => {
    const e = new SpawnError('chroot', 2, '/srv/missing');
    expect(e).toBeInstanceOf(SysError);
    expect(e.step).toBe('chroot');
    expect(e.syscall).toBe('chroot');
    expect(e.code).toBe('ENOENT');
    expect(e.message).toBe("spawnConfined: step 'chroot' failed with ENOENT (/srv/missing)");
  });
});
