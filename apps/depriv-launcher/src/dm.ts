#!/usr/bin/env node
// xen-depriv-dm: a `device_model_override` for libxl. libxl execs it as root with QEMU's full
// argv; it runs Xen's QEMU in jail mode behind a restricting xenstore proxy and supervises it.
// Nothing is written to stdout/stderr (libxl's qemu-dm log, under RLIMIT_FSIZE); see
// /var/log/xen/xen-depriv-dm-<domid>.log.
import { runLibxlDm, settingsFromEnv } from './libxl-dm/run.js';

process.exitCode = await (async () =>
  runLibxlDm(process.argv.slice(2), settingsFromEnv(process.env)))().catch((e: unknown) => {
  // One short line: stderr is libxl's qemu-dm log.
  process.stderr.write(`xen-depriv-dm: ${String((e as Error)?.message ?? e).slice(0, 500)}\n`);
  return 1;
});
// The xenstore client and timers may keep the loop alive after teardown.
process.exit();
