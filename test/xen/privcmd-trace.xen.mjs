// A recording of a real deprivileged Xen QEMU: an HVM guest with stdvga, booted to userspace, whose
// device model is Debian's qemu-xen started by libxl with dm_restrict=1 (-xen-domid-restrict,
// -runas, -chroot) through a device_model_override wrapper that preloads tools/privcmd-trace.
// The trace goes to QEMU's stderr (libxl's qemu-dm-NAME.log: the tracer's file would be outside
// the chroot); the wrapper lifts libxl's 256 KiB RLIMIT_FSIZE so the log can grow. The whole trace
// (over 100,000 requests, mostly set_isa_irq_level and evtchn notify) is audited here with the
// shipped profile and a context derived from this guest's config; its condensed form (every
// distinct request once, in order, with its count: tools/privcmd-trace/condense.mjs) goes to
// packages/privcmd-filter/test/vectors/qemu-xen-trace.jsonl, which the unit test
// qemu-trace.test.ts audits again with the shipped seccomp program. Needs tools/privcmd-trace/build/libprivcmd-trace.so, built on the host:
//   make -C tools/privcmd-trace OUT=build
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { auditTrace, deviceModelContext, qemuXenHvmProfile } from '@xen-depriv/privcmd-filter';
import { condense } from '../../tools/privcmd-trace/condense.mjs';
import { readOr, sleep } from './helpers.mjs';

const here = new URL('.', import.meta.url).pathname;
const repo = join(here, '..', '..');
const LIB = join(repo, 'tools', 'privcmd-trace', 'build', 'libprivcmd-trace.so');
const OUT = join(repo, 'packages', 'privcmd-filter', 'test', 'vectors', 'qemu-xen-trace.jsonl');
const NAME = 'hvmtrace';
const DIR = '/run/xen-depriv-trace';

export default function (test) {
  test(
    'a real depriv Xen QEMU (stdvga HVM guest to userspace) recorded by tools/privcmd-trace',
    async () => {
      mkdirSync(DIR, { recursive: true });
      copyFileSync(LIB, `${DIR}/libprivcmd-trace.so`);
      writeFileSync(
        `${DIR}/dm.sh`,
        [
          '#!/bin/sh',
          '# libxl caps a dm_restrict DM at 256 KiB written (RLIMIT_FSIZE): the trace needs more.',
          'ulimit -f unlimited',
          `export LD_PRELOAD=${DIR}/libprivcmd-trace.so`,
          'exec /usr/libexec/xen-qemu-system-i386 "$@"',
          '',
        ].join('\n'),
      );
      chmodSync(`${DIR}/dm.sh`, 0o755);
      const cfg = `${DIR}/${NAME}.cfg`;
      writeFileSync(
        cfg,
        [
          `name = "${NAME}"`,
          'type = "hvm"',
          'kernel = "/lab/guest/vmlinuz"',
          'ramdisk = "/lab/guest/initrd.cpio"',
          'cmdline = "console=ttyS0 console=hvc0 rdinit=/init"',
          'memory = 128',
          'vcpus = 1',
          'vga = "stdvga"',
          'videoram = 16',
          'nographic = 1',
          'serial = "pty"',
          'disk = [ ]',
          'vif = [ ]',
          'dm_restrict = 1',
          'device_model_version = "qemu-xen"',
          `device_model_override = "${DIR}/dm.sh"`,
          'on_poweroff = "destroy"',
          'on_reboot = "destroy"',
          'on_crash = "destroy"',
          '',
        ].join('\n'),
      );
      const qemuLog = `/var/log/xen/qemu-dm-${NAME}.log`;
      const console = `/var/log/xen/console/guest-${NAME}.log`;
      rmSync(qemuLog, { force: true });
      rmSync(console, { force: true });
      const t0 = performance.now();
      execFileSync('xl', ['create', cfg], { stdio: 'pipe' });
      try {
        let up = false;
        // Within test-xen.sh's 420 s boot: dom0 and xl create take about 40 s of it.
        for (let i = 0; i < 740 && !up; i++) {
          await sleep(500);
          up = readOr(console).includes('GUEST:');
        }
        assert.ok(
          up,
          `guest never reached userspace: ${readOr(console).slice(-600)}\n${readOr(qemuLog).slice(-1500)}`,
        );
      } finally {
        try {
          execFileSync('xl', ['destroy', NAME], { stdio: 'pipe' });
        } catch {
          // Already gone.
        }
      }
      const seconds = Math.round((performance.now() - t0) / 100) / 10;
      const lines = readFileSync(qemuLog, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{"'));
      assert.ok(lines.length > 0, `no trace in ${qemuLog}: ${readOr(qemuLog).slice(0, 1500)}`);
      const full = `${lines.join('\n')}\n`;
      const admitted = lines.map((l) => JSON.parse(l)).filter((r) => r.ret >= 0);
      const report = auditTrace(
        admitted,
        qemuXenHvmProfile,
        deviceModelContext({ memoryMiB: 128, videoramMiB: 16 }),
      );
      assert.deepEqual(report.denials.slice(0, 10), [], 'the shipped profile denies the real QEMU');
      writeFileSync(OUT, condense(full));
      const byName = Object.fromEntries(
        Object.entries(report.byName).map(([name, c]) => [name, c.total]),
      );
      return { records: lines.length, admitted: admitted.length, seconds, byName };
    },
    {
      // Opt-in: an HVM guest to userspace takes minutes under TCG and would stretch the whole tier
      // past its boot timeout; run it with --filter privcmd-trace.
      skip: !existsSync(LIB)
        ? `${LIB} not built (make -C tools/privcmd-trace OUT=build)`
        : (process.env.XEN_TEST_FILTER ?? '').includes('privcmd-trace')
          ? undefined
          : 'slow (an HVM guest to userspace): run scripts/test-xen.sh --filter privcmd-trace',
    },
  );
}
