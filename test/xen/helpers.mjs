// Small helpers shared by the real-Xen tests that watch processes and files in dom0.
import { readdirSync, readFileSync } from 'node:fs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A file's text, or `fallback` when it cannot be read (gone, a vanished /proc entry). */
export const readOr = (path, fallback = '') => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
};

/** Pids whose real uid is `uid`, zombies included (a test must see anything left of a uid). */
export const pidsOfUid = (uid) =>
  readdirSync('/proc')
    .filter((d) => /^[0-9]+$/.test(d))
    .filter((d) => new RegExp(`^Uid:\\t${uid}\\t`, 'm').test(readOr(`/proc/${d}/status`)));

/** `fn()`'s first truthy value, polled every `stepMs`; throws after `ms` naming `what`. */
export async function until(what, ms, fn, stepMs = 250) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}
