import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, parseXlCfg, validateConfig } from '../src/index.js';
import { runCli } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'xen-depriv-cfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const base = { domid: 7, stateDir: join(dir, 'state') };

describe('config validation', () => {
  it('fills the defaults of a minimal config', () => {
    expect(validateConfig({ domid: 7 })).toEqual({
      domid: 7,
      mode: 'jail',
      target: 'embedded',
      qemu: { binary: '/usr/bin/qemu-system-x86_64', machine: 'none', args: [] },
      user: { scheme: 'pool', first: 3_000_000, count: 1000 },
      stateDir: '/run/xen-depriv',
      guest: {
        usb: false,
        usbDevices: [],
        localtime: false,
        disks: [],
        nics: [],
        vnc: null,
        serial: 'none',
      },
    });
  });

  it.each([
    [{ ...base, colour: 'red' }, 'colour', 'unknown key'],
    [{ ...base, qemu: { binary: '/bin/true', flavour: 1 } }, 'qemu.flavour', 'unknown key'],
    [{ ...base, domid: '7' }, 'domid', 'expected number'],
    [{ ...base, domid: 0 }, 'domid', '>=1'],
    [{ ...base, domid: 32752 }, 'domid', '<=32751'],
    [{ ...base, user: { scheme: 'pool', first: 0, count: 10 } }, 'user.first', 'uid 0 is root'],
    [{ ...base, user: { scheme: 'pool', first: 999, count: 10 } }, 'user.first', 'at least 1000'],
    [{ ...base, mode: 'yolo' }, 'mode', 'jail'],
  ])('rejects %j naming %s', (input, key, text) => {
    let caught: unknown;
    try {
      validateConfig(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).key).toBe(key);
    expect((caught as ConfigError).message).toContain(text);
    expect((caught as ConfigError).exitCode).toBe(2);
  });

  it('parses xl.cfg syntax: strings, numbers, hex, lists, comments, semicolons', () => {
    const cfg = parseXlCfg(
      `# a guest\nname = "g1"; memory = 0x400\ndisk = [ 'phy:/dev/vg/g1,xvda,w', "b" , ]\ndm_restrict=1 # yes\n`,
    );
    expect([...cfg]).toEqual([
      ['name', 'g1'],
      ['memory', 1024],
      ['disk', ['phy:/dev/vg/g1,xvda,w', 'b']],
      ['dm_restrict', 1],
    ]);
  });

  it.each([
    ['name = "unterminated\n', 'unterminated string'],
    ['name "x"\n', 'expected KEY = VALUE'],
    ['a = 1 2\n', 'unexpected'],
    ['a = [1 2]\n', 'expected , or ]'],
    ['a = 1\na = 2\n', 'set twice'],
  ])('rejects the xl.cfg %j with a line number', (text, message) => {
    expect(() => parseXlCfg(text)).toThrow(message);
  });
});

describe('xen-depriv launch (built CLI, subprocess): bad configs exit 2 with one clear error', () => {
  const cases: [string, string, RegExp][] = [
    [
      'unknown key',
      file('unknown.json', JSON.stringify({ ...base, flavour: 'x' })),
      /config: flavour: unknown key/,
    ],
    [
      'wrong type',
      file('type.json', JSON.stringify({ ...base, domid: 'seven' })),
      /config: domid: .*expected number/i,
    ],
    [
      'uid 0',
      file('uid0.json', JSON.stringify({ ...base, user: { scheme: 'pool', first: 0, count: 4 } })),
      /config: user.first: .*uid 0 is root/,
    ],
    [
      'missing binary',
      file('bin.json', JSON.stringify({ ...base, qemu: { binary: join(dir, 'no-qemu') } })),
      /config: qemu.binary: .*no-qemu is not an executable file/,
    ],
    [
      'xl.cfg unknown key',
      file('guest.cfg', 'name = "g"\ndomid = 7\ndm_restirct = 1\n'),
      /config: dm_restirct: unknown key/,
    ],
    [
      'xl.cfg dm_restrict=0',
      file('g0.cfg', 'name = "g"\ndomid = 7\ndm_restrict = 0\n'),
      /config: dm_restrict: must be 1/,
    ],
    ['missing file', join(dir, 'absent.json'), /config: \(file\): cannot read .*ENOENT/],
  ];
  it.each(cases)('%s', (_what, path, message) => {
    const r = runCli(['launch', '--dry-run', path]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines[0]).toMatch(message);
    expect(lines[0]).toMatch(/^error: /);
    expect(lines.slice(1).every((l) => l.startsWith('hint: '))).toBe(true);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace without --debug
  });

  it.skipIf(process.geteuid?.() !== 0)(
    'unwritable state dir: a launch (as root) exits 2 naming the key; a dry run does not look at it',
    () => {
      const path = file(
        'state.json',
        JSON.stringify({ ...base, stateDir: '/proc/xen-depriv-state/x' }),
      );
      const r = runCli(['launch', path]);
      expect(r.status).toBe(2);
      expect(r.stderr.split('\n')[0]).toMatch(
        /^error: config: stateDir: \/proc\/xen-depriv-state\/x is not a writable directory \(ENOENT\)/,
      );
      expect(runCli(['launch', '--dry-run', path]).status).toBe(0);
    },
  );

  it('--json reports the error as one JSON object', () => {
    const r = runCli(['--json', 'launch', '--dry-run', cases[0]?.[1] as string]);
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({
      ok: false,
      error: 'config: flavour: unknown key',
      code: 'config',
      hint: 'see `xen-depriv launch --help` for the keys',
      exitCode: 2,
    });
  });

  it('an unknown command or option is a usage error (exit 2)', () => {
    expect(runCli(['frobnicate']).status).toBe(2);
    expect(runCli(['launch', '--frob', 'x']).status).toBe(2);
    expect(runCli(['--help']).status).toBe(0);
  });
});

describe('the dom0 switch', () => {
  it("defaults target dom0 to Debian's Xen QEMU, and keeps an explicit binary", () => {
    expect(validateConfig({ domid: 3, target: 'dom0' }).qemu.binary).toBe(
      '/usr/libexec/xen-qemu-system-i386',
    );
    expect(
      validateConfig({ domid: 3, target: 'dom0', qemu: { binary: '/opt/qemu' } }).qemu.binary,
    ).toBe('/opt/qemu');
    expect(validateConfig({ domid: 3 }).qemu.binary).toBe('/usr/bin/qemu-system-x86_64');
  });
});
