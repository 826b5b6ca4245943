// Benchmark of @xen-depriv/dmop-abi: encodeDmOpInto into a reused buffer (ops/s, heap bytes per
// op) and a DeviceModel call through a no-op transport against calling encodeDmOp directly,
// measured in the same run. Build first: (cd packages/dmop-abi && npx tsup).
//   node bench/dmop-abi/encode.mjs
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// Heap bytes per op are only meaningful without a collection in the measured loop: re-run with
// an exposed gc and a young generation large enough for the allocating baseline.
if (typeof globalThis.gc !== 'function') {
  execFileSync(
    process.execPath,
    [
      '--expose-gc',
      '--min-semi-space-size=128',
      '--max-semi-space-size=128',
      fileURLToPath(import.meta.url),
    ],
    {
      stdio: 'inherit',
    },
  );
  process.exit(0);
}

const { DeviceModel, encodeDmOp, encodeDmOpInto } = await import(
  '../../packages/dmop-abi/dist/index.js'
);

const N = 200_000;
const ROUNDS = 15;
// MSI data holds a vector and delivery mode: it fits V8's small integers. A u32 above 2^30 is
// stored as a boxed double in the caller's object, and reading it costs one HeapNumber: see `big`.
const op = { op: 'inject_msi', addr: 0xfee01000n, data: 0x4041 };
const big = { op: 'remote_shutdown', reason: 0x89abcdef };
const head = new Uint8Array(32);
const bufs = [head];

function opsPerSecond(fn) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) fn();
  const ns = Number(process.hrtime.bigint() - t0);
  return (N * 1e9) / ns;
}

function heapBytesPerOp(fn) {
  for (let i = 0; i < 100_000; i++) fn();
  globalThis.gc();
  const before = process.memoryUsage().heapUsed;
  const n = 200_000;
  for (let i = 0; i < n; i++) fn();
  const after = process.memoryUsage().heapUsed;
  return Math.max(0, (after - before) / n);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const into = () => encodeDmOpInto(op, bufs);
const fresh = () => encodeDmOp(op);
let calls = 0;
const dm = new DeviceModel({
  dmOp() {
    calls++;
    return 0;
  },
});
const viaClient = () => dm.injectMsi(7, op.addr, op.data);

for (let i = 0; i < 50_000; i++) {
  into();
  fresh();
  viaClient();
}

// The smallest V8 heap object is 12-16 bytes: well under one byte per op means no allocation.
const noop = heapBytesPerOp(() => {});
const intoBytes = heapBytesPerOp(into);
const bigBytes = heapBytesPerOp(() => encodeDmOpInto(big, bufs));
const heapLine = [
  `heap bytes per op: encodeDmOpInto ${intoBytes.toFixed(2)} (~${Math.round(intoBytes / 16)} allocations/op, target 0)`,
  `empty loop ${noop.toFixed(2)}`,
  `encodeDmOp with fresh buffers ${heapBytesPerOp(fresh).toFixed(1)}`,
  `encodeDmOpInto of a u32 field above 2^30 ${bigBytes.toFixed(2)}`,
].join(', ');

const ratioFresh = [];
const ratioInto = [];
const rateInto = [];
for (let r = 0; r < ROUNDS; r++) {
  const a = opsPerSecond(into);
  const b = opsPerSecond(fresh);
  const c = opsPerSecond(viaClient);
  rateInto.push(a);
  ratioFresh.push(b / c);
  ratioInto.push(a / c);
}

console.log(`encodeDmOpInto (reused buffer): ${(median(rateInto) / 1e6).toFixed(2)} M ops/s`);
console.log(heapLine);
console.log(
  `DeviceModel.injectMsi over a no-op transport vs encodeDmOp directly: ${median(ratioFresh).toFixed(2)}x time (target <= 1.2x)`,
);
console.log(
  `DeviceModel.injectMsi vs encodeDmOpInto into a reused buffer: ${median(ratioInto).toFixed(2)}x time`,
);
console.log(`(median of ${ROUNDS} paired rounds of ${N} calls; transport called ${calls} times)`);
