import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sys from '../src/index.js';
import { binding } from '../src/native.js';
import { canRun } from './helpers.js';

// Values that are never a valid fd, length or name: wrong types, negatives, fractions, huge.
const notAnFd = fc.oneof(
  fc.string(),
  fc.constant(null),
  fc.constant(undefined),
  fc.object(),
  fc.integer({ max: -1 }),
  fc.double({ noInteger: true }),
  fc.constant(Number.NaN),
  fc.constant(2 ** 53),
  fc.bigInt(),
  fc.boolean(),
);
const notAString = fc.oneof(
  fc.integer(),
  fc.constant(null),
  fc.object(),
  fc.uint8Array(),
  fc.boolean(),
);

type Call = (bad: unknown) => unknown;
const fdCalls: [string, Call][] = [
  ['ioctl fd', (b) => sys.ioctl(b as number, 0, new Uint8Array(8))],
  ['ioctl request', (b) => sys.ioctl(0, b as number, new Uint8Array(8))],
  ['close', (b) => sys.close(b as number)],
  ['flock', (b) => sys.flock(b as number, 2)],
  ['mmap length', (b) => sys.mmap(-1, b as number, 1, 0x22)],
  ['peerCredentials', (b) => sys.peerCredentials(b as number)],
  ['pidfdOpen', (b) => sys.pidfdOpen(b as number)],
  ['pidfdSendSignal', (b) => sys.pidfdSendSignal(b as number, 0)],
  ['waitPid', (b) => sys.waitPid(b as number)],
  ['reaperKill', (b) => sys.reaperKill(b as number, 3_970_001)],
  ['pidfdGetfd pidfd', (b) => sys.pidfdGetfd(b as number, 0)],
  ['pidfdGetfd targetFd', (b) => sys.pidfdGetfd(0, b as number)],
  ['watchPidfd', (b) => sys.watchPidfd(b as number, () => {})],
];
// The promise-returning exports refuse the same way, as a rejection.
const asyncCalls: [string, Call, fc.Arbitrary<unknown>][] = [
  ['reaperKillAsync', (b) => sys.reaperKillAsync(b as number, 3_970_001), notAnFd],
  ['pidfdExited', (b) => sys.pidfdExited(b as number), notAnFd],
  [
    'spawnConfinedAsync file',
    (b) => sys.spawnConfinedAsync({ file: b as string, argv: ['x'], env: {} }),
    notAString,
  ],
];
const stringCalls: [string, Call][] = [
  ['open', (b) => sys.open(b as string, 0)],
  ['memfdCreate', (b) => sys.memfdCreate(b as string)],
  ['getpwnam', (b) => sys.getpwnam(b as string)],
  ['getgrnam', (b) => sys.getgrnam(b as string)],
];

describe.skipIf(!canRun)('bad input never crashes Node', () => {
  it.each(fdCalls)('%s: a non-fd / non-integer is a TypeError (property)', (_, call) => {
    fc.assert(
      fc.property(notAnFd, (bad) => {
        expect(() => call(bad)).toThrow(TypeError);
      }),
      { numRuns: 200 },
    );
  });

  it.each(asyncCalls)(
    '%s: a wrong type rejects with TypeError (property)',
    async (_, call, arb) => {
      await fc.assert(
        fc.asyncProperty(arb, async (bad) => {
          await expect(call(bad)).rejects.toThrow(TypeError);
        }),
        { numRuns: 100 },
      );
    },
  );

  it('watchPidfd refuses a non-function onExit', () => {
    expect(() => sys.watchPidfd(0, 'x' as unknown as () => void)).toThrow(
      new TypeError('watchPidfd onExit: expected a function, got "x"'),
    );
  });

  it.each(stringCalls)('%s: a non-string is a TypeError (property)', (_, call) => {
    fc.assert(
      fc.property(notAString, (bad) => {
        expect(() => call(bad)).toThrow(TypeError);
      }),
      { numRuns: 100 },
    );
  });

  it('the raw addon throws TypeError for every wrong type, never crashes', () => {
    const raw = binding() as unknown as Record<string, (...args: unknown[]) => unknown>;
    const junk = [
      undefined,
      null,
      'x',
      {},
      [],
      -1,
      1.5,
      Number.NaN,
      2 ** 40,
      10n,
      new Uint16Array(2),
    ];
    const names = Object.keys(raw).filter(
      (k) => typeof raw[k] === 'function' && k !== 'setErrorClasses',
    );
    expect(names.sort()).toEqual(
      [
        'close',
        'flock',
        'getgrnam',
        'getpwnam',
        'ioctl',
        'memfdCreate',
        'mmap',
        'munmap',
        'netnsConnect',
        'open',
        'openPty',
        'peerCredentials',
        'pidfdGetfd',
        'pidfdOpen',
        'pidfdSendSignal',
        'pidfdWatch',
        'pidfdWatchClose',
        'pidfdWatchRef',
        'reaperKill',
        'reaperKillAsync',
        'spawnConfined',
        'spawnConfinedAsync',
        'waitPid',
      ].sort(),
    );
    for (const name of names) {
      for (const bad of junk) {
        // Any string is a name getpwnam/getgrnam may look up.
        if (typeof bad === 'string' && (name === 'getpwnam' || name === 'getgrnam')) continue;
        // openPty takes no arguments (and ignores extra ones, as JS functions do).
        if (name === 'openPty') continue;
        const fn = raw[name] as (...args: unknown[]) => unknown;
        expect(() => fn(bad, bad, bad, bad, bad), `${name}(${String(bad)})`).toThrow(TypeError);
      }
    }
  });

  it('huge lengths and NUL bytes are refused with a clear error', () => {
    expect(() => sys.mmap(-1, 2 ** 47 * 4, 1, 0x22)).toThrow(
      expect.objectContaining({ code: 'ENOMEM' }),
    );
    expect(() => sys.open('/dev/null\0x', 0)).toThrow(
      new TypeError('open path: expected a string without NUL characters, got "/dev/null\\u0000x"'),
    );
    expect(() => sys.ioctl(0, 2 ** 32, new Uint8Array(1))).toThrow(TypeError);
    expect(() =>
      sys.ioctl(
        0,
        0,
        new Uint8Array(8),
        new Array(65).fill({ offset: 0, buffer: new Uint8Array(1) }),
      ),
    ).toThrow('at most 64 entries');
  });
});
