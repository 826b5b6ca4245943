// Preloaded by bench/deprivd/run.mjs into the processes whose memory it measures (the service
// and the baseline per-DM processes), with --expose-gc: SIGUSR2 runs a full garbage collection,
// so PSS is read on live data, not on wherever the collector happened to be; then, when
// XDB_MEM_FILE is set, process.memoryUsage() is written there (heap used, external, array
// buffers: what a JS-side leak would grow). Nothing else.
const { writeFileSync } = require('node:fs');

process.on('SIGUSR2', () => {
  globalThis.gc?.();
  const file = process.env.XDB_MEM_FILE;
  if (file) writeFileSync(file, JSON.stringify(process.memoryUsage()));
});
