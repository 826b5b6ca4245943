import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { engineSettings, loadServiceConfig } from '../src/service/config.js';

const dir = mkdtempSync(join(tmpdir(), 'xd-svc-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const load = (
  f: string,
  env: Record<string, string> = {},
  flags: Record<string, string> = {},
  required = true,
) => loadServiceConfig({ file: f, required, env, flags });

describe("xen-deprivd's settings: file, then environment, then options", () => {
  it('defaults without a file (the default path is optional)', () => {
    const c = load(join(dir, 'absent.json'), {}, {}, false);
    expect(c).toEqual({
      socket: '/run/xen-depriv/xen-deprivd.sock',
      stateDir: '/run/xen-depriv',
      target: 'auto',
      pool: { first: 3_000_000, count: 1000 },
      upstream: 'privileged',
      logLevel: 'info',
    });
    expect(engineSettings({ ...c, target: 'embedded' })).toMatchObject({
      stateDir: '/run/xen-depriv',
      target: 'embedded',
      qemu: '/usr/bin/qemu-system-x86_64',
      user: { scheme: 'pool', first: 3_000_000, count: 1000 },
    });
  });

  it("log level debug has each DM's proxy trace every request it lets through", () => {
    const f = join(dir, 'absent.json');
    expect(engineSettings(load(f, {}, { logLevel: 'debug' }, false)).xenstoreTrace).toBe(true);
    expect(
      engineSettings(load(f, { XEN_DEPRIVD_LOG_LEVEL: 'debug' }, {}, false)).xenstoreTrace,
    ).toBe(true);
    expect(engineSettings(load(f, {}, {}, false)).xenstoreTrace).toBeUndefined();
  });

  it('the environment overrides the file, options override both', () => {
    const f = file(
      'ok.json',
      JSON.stringify({ stateDir: '/srv/xd', pool: { first: 4_000_000, count: 10 } }),
    );
    expect(load(f)).toMatchObject({ stateDir: '/srv/xd', pool: { first: 4_000_000, count: 10 } });
    expect(load(f, { XEN_DEPRIVD_POOL: '5000000:20' })).toMatchObject({
      pool: { first: 5_000_000, count: 20 },
    });
    expect(load(f, { XEN_DEPRIVD_POOL: '5000000:20' }, { pool: '6000000:30' })).toMatchObject({
      pool: { first: 6_000_000, count: 30 },
    });
  });

  it.each([
    [
      'a bad value in the file names the file and key',
      () => load(file('a.json', '{"pool":{"first":3000000,"count":0}}')),
      /a\.json: pool \(count\): Too small/,
    ],
    [
      'an unknown key in the file',
      () => load(file('b.json', '{"sockett":"/x"}')),
      /b\.json: sockett: unknown key$/,
    ],
    ['not JSON', () => load(file('c.json', '{')), /c\.json: not valid JSON/],
    [
      'a required file that is missing',
      () => load(join(dir, 'none.json')),
      /none\.json: cannot read it \(ENOENT\)$/,
    ],
    [
      'a bad variable names the variable',
      () => load(join(dir, 'x.json'), { XEN_DEPRIVD_POOL: 'abc' }, {}, false),
      /^XEN_DEPRIVD_POOL: expected FIRST:COUNT, saw "abc"$/,
    ],
    [
      'a root pool from a variable',
      () => load(join(dir, 'x.json'), { XEN_DEPRIVD_POOL: '0:5' }, {}, false),
      /^XEN_DEPRIVD_POOL \(first\): must be at least 1000/,
    ],
    [
      'a bad option names the option',
      () => load(join(dir, 'x.json'), {}, { target: 'xen' }, false),
      /^--target: /,
    ],
    [
      'a relative state dir',
      () => load(join(dir, 'x.json'), { XEN_DEPRIVD_STATE_DIR: 'run' }, {}, false),
      /^XEN_DEPRIVD_STATE_DIR: expected an absolute path/,
    ],
  ])('%s', (_what, fn, message) => {
    expect(fn).toThrow(message);
  });
});
