import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_STATE_DIR } from '../src/service/engine.js';
import { DEFAULT_SOCKET } from '../src/service/paths.js';

const read = (name: string) =>
  readFileSync(join(import.meta.dirname, '..', 'systemd', name), 'utf8');
const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as {
  bin: Record<string, string>;
};
const key = (unit: string, k: string) =>
  unit
    .split('\n')
    .filter((l) => l.startsWith(`${k}=`))
    .map((l) => l.slice(k.length + 1));

describe('systemd units and tmpfiles.d', () => {
  it('the service runs the xen-deprivd bin on the documented defaults, and leaves the DMs alive when it stops', () => {
    const unit = read('xen-deprivd.service');
    expect(key(unit, 'ExecStart')).toEqual([
      `/usr/bin/xen-deprivd --socket ${DEFAULT_SOCKET} --state-dir ${DEFAULT_STATE_DIR}`,
    ]);
    expect(Object.keys(pkg.bin)).toContain('xen-deprivd');
    // control-group (the default) would kill every QEMU with the service.
    expect(key(unit, 'KillMode')).toEqual(['process']);
    expect(key(unit, 'Before')).toEqual(['xendomains.service']);
  });

  it('recover runs before the service, on the same state directory', () => {
    const unit = read('xen-depriv-recover.service');
    expect(key(unit, 'ExecStart')).toEqual([
      `/usr/bin/xen-depriv recover --state-dir ${DEFAULT_STATE_DIR}`,
    ]);
    expect(key(unit, 'Before')).toEqual(['xen-deprivd.service']);
    expect(Object.keys(pkg.bin)).toContain('xen-depriv');
  });

  it('tmpfiles.d makes the state directory root-only', () => {
    expect(read('xen-depriv.tmpfiles.conf')).toContain(`d ${DEFAULT_STATE_DIR} 0700 root root -`);
    expect(DEFAULT_SOCKET.startsWith(`${DEFAULT_STATE_DIR}/`)).toBe(true);
  });
});
