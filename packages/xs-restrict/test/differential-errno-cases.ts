/** The errno table of the differential tests (test/differential.test.ts runs it on both daemons). */
import * as W from '../src/wire/index.js';
import { type ConnName, type Step, z } from './helpers/differential.js';

const long = (n: number): string => `/${'a'.repeat(n - 1)}`;
/** Each error case, the steps that lead to it, the connection whose last reply is asserted, and the errno both daemons give. */
export const errnoCases: [string, Step[], ConnName, W.XsErrno][] = [
  [
    'bad path form: trailing slash',
    [{ on: 'd0', type: W.XS_READ, payload: z('/errs/') }],
    'd0',
    'EINVAL',
  ],
  [
    'bad path form: double slash',
    [{ on: 'd0', type: W.XS_WRITE, payload: `${z('/errs//x')}v` }],
    'd0',
    'EINVAL',
  ],
  [
    'bad path form: character outside [A-Za-z0-9-/_@]',
    [{ on: 'd0', type: W.XS_MKDIR, payload: z('/errs/a:b') }],
    'd0',
    'EINVAL',
  ],
  [
    'bad path form: special path where a node is needed',
    [{ on: 'd0', type: W.XS_READ, payload: z('@releaseDomain') }],
    'd0',
    'EINVAL',
  ],
  [
    'over-long path (2049 bytes)',
    [{ on: 'd0', type: W.XS_MKDIR, payload: z(long(2049)) }],
    'd0',
    'EINVAL',
  ],
  [
    'over-long relative path of a guest',
    [{ on: 'd1', type: W.XS_MKDIR, payload: z('c'.repeat(2049)) }],
    'd1',
    'EINVAL',
  ],
  ['unknown message type', [{ on: 'd0', type: 20, payload: z('/') }], 'd0', 'ENOSYS'],
  [
    'unknown transaction id',
    [{ on: 'd0', type: W.XS_READ, payload: z('/tool'), tx: 77 }],
    'd0',
    'ENOENT',
  ],
  [
    'nested transaction',
    [
      { on: 'd0', type: W.XS_TRANSACTION_START, payload: z('') },
      { on: 'd0', type: W.XS_TRANSACTION_START, payload: z(''), tx: 'T' },
    ],
    'd0',
    'EBUSY',
  ],
  [
    'duplicate watch',
    [
      { on: 'd0', type: W.XS_WATCH, payload: z('/errs', 't') },
      { on: 'd0', type: W.XS_WATCH, payload: z('/errs', 't') },
    ],
    'd0',
    'EEXIST',
  ],
  [
    'unwatch of an unknown watch',
    [{ on: 'd0', type: W.XS_UNWATCH, payload: z('/errs', 'none') }],
    'd0',
    'ENOENT',
  ],
  [
    'read of a missing node',
    [{ on: 'd0', type: W.XS_READ, payload: z('/errs/none') }],
    'd0',
    'ENOENT',
  ],
  [
    'permission denied: read of an n node',
    [
      { on: 'd0', type: W.XS_WRITE, payload: `${z('/errs/n')}v` },
      { on: 'd1', type: W.XS_READ, payload: z('/errs/n') },
    ],
    'd1',
    'EACCES',
  ],
  [
    'permission denied: write of an r node',
    [
      { on: 'd0', type: W.XS_WRITE, payload: `${z('/errs/r')}v` },
      { on: 'd0', type: W.XS_SET_PERMS, payload: z('/errs/r', 'r0') },
      { on: 'd1', type: W.XS_WRITE, payload: `${z('/errs/r')}g` },
    ],
    'd1',
    'EACCES',
  ],
  [
    'permission denied: read of a w node',
    [
      { on: 'd0', type: W.XS_WRITE, payload: `${z('/errs/w')}v` },
      { on: 'd0', type: W.XS_SET_PERMS, payload: z('/errs/w', 'w0') },
      { on: 'd1', type: W.XS_READ, payload: z('/errs/w') },
    ],
    'd1',
    'EACCES',
  ],
  [
    'permission denied: set_perms of a b node the guest does not own',
    [
      { on: 'd0', type: W.XS_WRITE, payload: `${z('/errs/b')}v` },
      { on: 'd0', type: W.XS_SET_PERMS, payload: z('/errs/b', 'b0') },
      { on: 'd1', type: W.XS_SET_PERMS, payload: z('/errs/b', 'b1') },
    ],
    'd1',
    'EACCES',
  ],
  [
    'permission denied: a missing node under an unreadable parent',
    [
      { on: 'd0', type: W.XS_WRITE, payload: `${z('/errs/n2')}v` },
      { on: 'd1', type: W.XS_READ, payload: z('/errs/n2/missing') },
    ],
    'd1',
    'EACCES',
  ],
  [
    'permission denied: a guest gives its node away',
    [
      { on: 'd1', type: W.XS_WRITE, payload: `${z('mine')}v` },
      { on: 'd1', type: W.XS_SET_PERMS, payload: z('mine', 'n2') },
    ],
    'd1',
    'EPERM',
  ],
  [
    'permission denied: a privileged request from a guest',
    [{ on: 'd1', type: W.XS_INTRODUCE, payload: z('6', '0', '1') }],
    'd1',
    'EACCES',
  ],
  [
    'EAGAIN: the transaction read a node another connection changed',
    [
      { on: 'd0', type: W.XS_WRITE, payload: `${z('/errs/c')}0` },
      { on: 'd0', type: W.XS_TRANSACTION_START, payload: z('') },
      { on: 'd0', type: W.XS_READ, payload: z('/errs/c'), tx: 'T' },
      { on: 'd1', type: W.XS_GET_DOMAIN_PATH, payload: z('1') },
      { on: 'd0', type: W.XS_WRITE, payload: `${z('/errs/c')}1` },
      { on: 'd0', type: W.XS_TRANSACTION_END, payload: z('T'), tx: 'T' },
    ],
    'd0',
    'EAGAIN',
  ],
  [
    'quota: entry size',
    [{ on: 'd1', type: W.XS_WRITE, payload: `${z('big')}${'v'.repeat(2030)}` }],
    'd1',
    'ENOSPC',
  ],
  [
    'quota: permissions per node',
    [{ on: 'd1', type: W.XS_SET_PERMS, payload: z('', 'n1', 'r0', 'r2', 'r3', 'r4', 'r5') }],
    'd1',
    'ENOSPC',
  ],
  [
    'quota: transactions per connection (11 open)',
    Array.from(
      { length: 12 },
      (): Step => ({ on: 'd1', type: W.XS_TRANSACTION_START, payload: z('') }),
    ),
    'd1',
    'ENOSPC',
  ],
  [
    'quota: watches per domain (129 set)',
    Array.from(
      { length: 130 },
      (_, i): Step => ({ on: 'd1', type: W.XS_WATCH, payload: z('w', `t${i}`) }),
    ),
    'd1',
    'E2BIG',
  ],
  [
    'quota: nodes one transaction may touch (1024)',
    [
      { on: 'd1', type: W.XS_TRANSACTION_START, payload: z('') },
      ...Array.from(
        { length: 1025 },
        (_, i): Step => ({ on: 'd1', type: W.XS_READ, payload: z(`r${i}`), tx: 'T' }),
      ),
    ],
    'd1',
    'ENOSPC',
  ],
  [
    'quota: nodes per domain (1000)',
    Array.from(
      { length: 1001 },
      (_, i): Step => ({
        on: 'd1',
        type: W.XS_WRITE,
        payload: `${z(`q${Math.floor(i / 30)}/n${i % 30}`)}x`,
      }),
    ),
    'd1',
    'ENOSPC',
  ],
];
