// Heap growth of a RestrictingProxy client under a burst of watch events, privileged upstream vs
// domain-socket (attach) upstream, on an embedded server in this process (which answers a whole
// pipelined read at once, the worst case for the privileged mode's per-event perms lookups).
//   node --expose-gc bench/xenstore-proxy/event-burst.mjs [writes=80000]
// Prints one JSON line per mode: events delivered, peak heap growth, and whether the proxy closed
// the client with `event-overflow` (PENDING_OUTPUT_MAX).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dist = path.join(repo, 'packages/xs-restrict/dist/index.js');
if (!existsSync(dist)) {
  console.error('build first: npx turbo run build --filter=@xen-depriv/xs-restrict');
  process.exit(2);
}
const { RestrictingProxy, XenstoreClient, XenstoreServer } = await import(dist);
const N = Number(process.argv[2] ?? 80000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run(mode) {
  const dir = mkdtempSync('/tmp/xsburst-');
  const server = new XenstoreServer();
  await server.listen(`${dir}/s.sock`);
  const dom0 = await XenstoreClient.connect({ path: `${dir}/s.sock` });
  const d = 5;
  const p = `/local/domain/${d}/device/vif/0/state`;
  await dom0.mkdir(`/local/domain/${d}`);
  await dom0.setPerms(`/local/domain/${d}`, [{ domid: d, perm: 'n' }]);
  await dom0.write(p, '1');
  const logs = [];
  const proxy = new RestrictingProxy({
    domid: d,
    upstream: mode === 'privileged' ? { privileged: `${dir}/s.sock` } : server,
    log: (l) => logs.push(JSON.parse(l)),
  });
  await proxy.listen(`${dir}/p.sock`);
  const dm = await XenstoreClient.connect({ path: `${dir}/p.sock` });
  const w = await dm.watch(p, 't');
  let events = 0;
  const ended = (async () => {
    for await (const _ of w) events++;
  })();
  globalThis.gc?.();
  const h0 = process.memoryUsage().heapUsed;
  let peak = 0;
  const iv = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().heapUsed - h0);
  }, 5);
  const writes = [];
  for (let i = 0; i < N; i++) writes.push(dom0.write(p, String(i)));
  await Promise.all(writes);
  for (let t = 0; t < 100 && events <= N && !logs.some((l) => l.event === 'event-overflow'); t++)
    await sleep(50);
  await Promise.race([ended, sleep(500)]);
  clearInterval(iv);
  console.log(
    JSON.stringify({
      mode,
      writes: N,
      events,
      peakHeapGrowthMiB: +(peak / 2 ** 20).toFixed(1),
      closedByEventOverflow: logs.some((l) => l.event === 'event-overflow'),
    }),
  );
  dm.close();
  dom0.close();
  await proxy.close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}

await run('attach');
await run('privileged');
process.exit(0);
