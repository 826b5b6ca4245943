// DM_OP through PrivcmdHandle with the qemu-xen-hvm profile (kernel model + policy + encode) vs the
// same through a handle with no profile, both over a stub ioctl, measured in the same run.
//   (cd packages/privcmd-filter && npx tsup) && node bench/privcmd-filter/dmop-handle.mjs
import { PrivcmdHandle, qemuXenHvmProfile } from '../../packages/privcmd-filter/dist/index.js';

const ctx = {
  guestMemoryEndGfn: 0x40000n,
  ioRanges: [{ type: 'port', start: 0x1f0n, end: 0x1f7n }],
};
const io = { open: () => 3, close: () => {}, ioctl: () => 0 };
const withPolicy = PrivcmdHandle.open({ domid: 7, profile: qemuXenHvmProfile, context: ctx, io });
const noPolicy = PrivcmdHandle.open({ domid: 7, profile: null, io });

// struct xen_dm_op for XEN_DMOP_inject_msi (op 14): data at 8, addr at 16.
function encodeInjectMsi(addr, data) {
  const buf = new Uint8Array(32);
  const v = new DataView(buf.buffer);
  v.setUint32(0, 14, true);
  v.setUint32(8, data, true);
  v.setBigUint64(16, addr, true);
  return buf;
}

function run(handle, n) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) handle.dmOp(7, [encodeInjectMsi(0xfee00000n + BigInt(i & 0xfff), i)]);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const N = Number(process.argv[2] ?? 300000);
run(withPolicy, N / 10);
run(noPolicy, N / 10);
// Interleaved rounds so both see the same machine load; best of each.
const best = { policy: Infinity, none: Infinity };
for (let round = 0; round < 5; round++) {
  best.none = Math.min(best.none, run(noPolicy, N));
  best.policy = Math.min(best.policy, run(withPolicy, N));
}
const opsPolicy = N / best.policy;
const opsNone = N / best.none;
console.log(`DM_OP inject_msi, ${N} ops x 5 rounds, best round, stub ioctl`);
console.log(
  `  no policy (kernel model + encode):          ${Math.round(opsNone).toLocaleString('en')} ops/s`,
);
console.log(
  `  qemu-xen-hvm (model + policy + encode):     ${Math.round(opsPolicy).toLocaleString('en')} ops/s`,
);
console.log(
  `  ratio (time with policy / time without):    ${(best.policy / best.none).toFixed(3)}x (target <= 1.10x)`,
);
