// MapCache hit path (`translate` of a cached range) vs `Map.get` on the same key, and the miss
// path on a real memfd (every translate maps a bucket with mmap and evicts one with munmap) vs
// raw sys.mmap + sys.munmap of the same size, each pair measured in the same run.
//   (cd packages/memmap && npx tsup) && node bench/memmap/mapcache.mjs
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  InMemoryForeignMemory,
  MapCache,
  MemfdForeignMemory,
} from '../../packages/memmap/dist/index.js';
import * as sys from '../../packages/sys/dist/index.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');
const ROUNDS = 21;

function time(fn, n) {
  gc();
  const t0 = process.hrtime.bigint();
  const sink = fn(n);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (sink === -1) console.log('unreachable');
  return s;
}

/** Interleaved rounds, order alternating; the median per-round ratio resists disturbed rounds. */
function compare(a, b, n) {
  time(a, n);
  time(b, n);
  const ratios = [];
  let best = { a: Infinity, b: Infinity };
  for (let round = 0; round < ROUNDS; round++) {
    let ta;
    let tb;
    if (round % 2 === 0) {
      ta = time(a, n);
      tb = time(b, n);
    } else {
      tb = time(b, n);
      ta = time(a, n);
    }
    ratios.push(ta / tb);
    best = { a: Math.min(best.a, ta), b: Math.min(best.b, tb) };
  }
  ratios.sort((x, y) => x - y);
  return { median: ratios[Math.floor(ROUNDS / 2)], best };
}

// --- hit path ---
const fm = new InMemoryForeignMemory({ domid: 1, frames: 1024 });
const cache = new MapCache({ foreignMemory: fm, domid: 1, maxBytes: 4 * 1024 * 1024 });
const GPA = 0x12_3400;
const SIZE = 64;
const view = cache.translate(GPA, SIZE);
const map = new Map([[GPA, view]]);
const N_HIT = Number(process.argv[2] ?? 2_000_000);
const hit = compare(
  (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += cache.translate(GPA, SIZE).byteLength;
    return s;
  },
  (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += map.get(GPA).byteLength;
    return s;
  },
  N_HIT,
);
console.log(
  `hit: translate(0x${GPA.toString(16)}, ${SIZE}) vs Map.get on the same key, ${N_HIT} calls x ${ROUNDS} rounds`,
);
console.log(
  `  translate ${((hit.best.a / N_HIT) * 1e9).toFixed(1)} ns/call, Map.get ${((hit.best.b / N_HIT) * 1e9).toFixed(1)} ns/call (best rounds)`,
);
console.log(
  `  ratio translate / Map.get: ${hit.median.toFixed(2)}x (median of per-round ratios; target <= 2x)`,
);

// --- miss path on memfd ---
if (!sys.isAvailable()) {
  console.log('miss: skipped, the @xen-depriv/sys addon is not built');
} else {
  const BUCKET = 1 << 20;
  const mem = new MemfdForeignMemory({ domid: 2, frames: (64 * BUCKET) / 4096 });
  const missCache = new MapCache({ foreignMemory: mem, domid: 2, maxBytes: BUCKET });
  const N_MISS = Number(process.argv[3] ?? 2000);
  const miss = compare(
    (n) => {
      let s = 0;
      for (let i = 0; i < n; i++) s += missCache.translate((i & 63) * BUCKET + 8, 8).byteLength;
      return s;
    },
    (n) => {
      let s = 0;
      for (let i = 0; i < n; i++) {
        const ab = sys.mmap(mem.fd, BUCKET, 3, sys.constants.MAP_SHARED, (i & 63) * BUCKET);
        s += ab.byteLength;
        sys.munmap(ab);
      }
      return s;
    },
    N_MISS,
  );
  const st = missCache.stats;
  console.log(
    `miss: 1 MiB bucket mapped from a memfd per translate (cap 1 bucket), ${N_MISS} calls x ${ROUNDS} rounds`,
  );
  console.log(
    `  mapcache ${Math.round(N_MISS / miss.best.a)} mappings/s, raw sys.mmap+munmap ${Math.round(N_MISS / miss.best.b)} mappings/s (best rounds)`,
  );
  console.log(
    `  ratio mapcache miss / raw mmap+munmap: ${miss.median.toFixed(2)}x (median); misses ${st.misses}, hits ${st.hits}, evictions ${st.evictions}`,
  );
  missCache.close();
  mem.close();
}
