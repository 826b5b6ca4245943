import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IOCTL_PRIVCMD_DM_OP, IOCTL_PRIVCMD_RESTRICT } from '@xen-depriv/dmop-abi';
import { isAvailable } from '@xen-depriv/sys';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTrace } from '../src/index.js';
import { dmOp, extents, OP } from './helpers/dmop-bytes.js';

const TOOL = join(__dirname, '..', '..', '..', 'tools', 'privcmd-trace');
const DIST = join(__dirname, '..', 'dist', 'index.js');
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const canRun =
  isAvailable() &&
  existsSync(DIST) &&
  spawnSync('make', ['--version']).status === 0 &&
  spawnSync('gcc', ['--version']).status === 0 &&
  existsSync('/usr/include/xen/sys/privcmd.h');

// A node process using PrivcmdHandle with the real @xen-depriv/sys ioctl, under the C recorder
// (PRIVCMD_TRACE_FAKE stands in for /dev/xen/privcmd): what the C side reads through the
// struct privcmd_dm_op pointers is exactly what the handle was given, and denied requests are absent.
describe.skipIf(!canRun)(
  'PrivcmdHandle with sys.ioctl under tools/privcmd-trace (needs the built dist, the sys addon, gcc, libxen-dev)',
  () => {
    let dir = '';
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'pf-preload-'));
      execFileSync('make', ['-s', '-C', TOOL, `OUT=${dir}`, `${dir}/libprivcmd-trace.so`]);
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('issues RESTRICT and the allowed DM_OP with both buffers behind real pointers, and never the denied one', () => {
      const op = dmOp(OP.modified_memory, [[0, 4, 1]]);
      const ext = extents([[4, 0x100n]]);
      const bad = dmOp(OP.inject_msi, [[8, 8, 0xfed00000n]]);
      const script = `
      import { PrivcmdHandle, qemuXenHvmProfile } from ${JSON.stringify(DIST)};
      const b = (h) => Uint8Array.from(Buffer.from(h, 'hex'));
      const h = PrivcmdHandle.open({ domid: 7, profile: qemuXenHvmProfile,
        context: { guestMemoryEndGfn: 0x40000n, ioRanges: [] } });
      h.dmOp(7, [b('${hex(op)}'), b('${hex(ext)}')]);
      let denied = '';
      try { h.dmOp(7, [b('${hex(bad)}')]); } catch (e) { denied = e.code; }
      h.close();
      console.log(JSON.stringify({ counts: h.counts, denied }));`;
      const trace = join(dir, 'trace.jsonl');
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
        env: {
          ...process.env,
          LD_PRELOAD: join(dir, 'libprivcmd-trace.so'),
          PRIVCMD_TRACE: trace,
          PRIVCMD_TRACE_FAKE: '1',
        },
        encoding: 'utf8',
      });
      expect(JSON.parse(out)).toEqual({ counts: { allowed: 1, denied: 1 }, denied: 'EPERM' });
      const records = parseTrace(readFileSync(trace, 'utf8'));
      expect(
        records.map((r) => ({
          request: r.request,
          dom: r.dom,
          domid: r.domid,
          num: r.num,
          bufs: r.bufs,
        })),
      ).toEqual([
        {
          request: IOCTL_PRIVCMD_RESTRICT,
          dom: undefined,
          domid: 7,
          num: undefined,
          bufs: undefined,
        },
        {
          request: IOCTL_PRIVCMD_DM_OP,
          dom: 7,
          domid: undefined,
          num: 2,
          bufs: [hex(op), hex(ext)],
        },
      ]);
    });
  },
);
