import { CATALOGUE, type CatalogueEntry } from './catalogue.js';
import type { XenstoreClient } from './client.js';
import { XenstoreError } from './errors.js';
import { patternSource } from './proxy/allowlist.js';
import { XS_READ } from './wire/index.js';

/** One region QEMU recorded under `device-model/<domid>/physmap` (xen-hvm.c:xen_save_physmap). */
export interface PhysmapEntry {
  /** The directory name: the region's offset in QEMU's RAM, hex in xenstore. */
  physOffset: bigint;
  /** `start_addr`: where the guest mapped it. */
  startAddr: bigint;
  size: bigint;
  /** The memory region name, when QEMU recorded one. */
  name: string | undefined;
}

/** One node read for a catalogue entry. */
export interface PreDropValue {
  entryId: string;
  path: string;
  value: string;
}

/** What the launcher read on the DM's behalf before dropping its privileges. */
export interface PreDropState {
  domid: number;
  /** Every existing node of every `readBeforeDrop` catalogue entry, in catalogue order. */
  values: PreDropValue[];
  /** The physmap to hand back to QEMU after a restore (sorted by physOffset). */
  physmap: PhysmapEntry[];
  /** The primary console's `type` and `output`, when present. */
  console: { type?: string; output?: string };
}

async function tryRead(client: XenstoreClient, path: string): Promise<string | undefined> {
  const b = await client.tryRead(path);
  return b?.toString('utf8');
}

async function tryDirectory(client: XenstoreClient, path: string): Promise<string[]> {
  try {
    return await client.directory(path);
  } catch (e) {
    if (e instanceof XenstoreError && e.code === 'ENOENT') return [];
    throw e;
  }
}

/** Split a pattern into path elements, keeping `{a,b}` groups whole. */
function elements(pattern: string): string[] {
  const out: string[] = [];
  let cur = '';
  let depth = 0;
  for (const ch of pattern.slice(1)) {
    if (ch === '{') depth++;
    if (ch === '}') depth--;
    if (ch === '/' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/** Every existing path matching `pattern` (with `{domid}` bound), found by listing directories. */
async function expand(client: XenstoreClient, pattern: string, domid: number): Promise<string[]> {
  let prefixes = [''];
  for (const el of elements(pattern)) {
    const next: string[] = [];
    const bound = el.replaceAll('{domid}', String(domid));
    for (const prefix of prefixes) {
      if (!bound.includes('{')) {
        next.push(`${prefix}/${bound}`);
        continue;
      }
      const re = new RegExp(patternSource(bound, domid));
      for (const child of await tryDirectory(client, prefix === '' ? '/' : prefix)) {
        if (re.test(child)) next.push(`${prefix}/${child}`);
      }
    }
    prefixes = next;
  }
  return prefixes;
}

function hex(what: string, s: string): bigint {
  // QEMU reads these with strtoull(…, 16); we accept only what it writes (PRIx64).
  if (!/^[0-9a-fA-F]{1,16}$/.test(s)) {
    throw new XenstoreError(
      'EINVAL',
      `${what}: expected up to 16 hex digits, got ${JSON.stringify(s)}`,
      XS_READ,
    );
  }
  return BigInt(`0x${s}`);
}

/**
 * Read, as the privileged launcher, what the catalogue marks `readBeforeDrop`
 * for domain `domid`: the DM's physmap and the primary console settings. Nodes
 * that do not exist are left out; any other failure rejects.
 */
export async function readBeforeDrop(
  client: XenstoreClient,
  domid: number,
  catalogue: readonly CatalogueEntry[] = CATALOGUE,
): Promise<PreDropState> {
  const values: PreDropValue[] = [];
  for (const e of catalogue) {
    if (!e.readBeforeDrop) continue;
    for (const path of await expand(client, e.pattern, domid)) {
      const value = await tryRead(client, path);
      if (value !== undefined) values.push({ entryId: e.id, path, value });
    }
  }
  const dmPath = `/local/domain/0/device-model/${domid}/physmap/`;
  const regions = new Map<string, Partial<Record<'start_addr' | 'size' | 'name', string>>>();
  for (const v of values) {
    if (!v.path.startsWith(dmPath)) continue;
    const [offset, key] = v.path.slice(dmPath.length).split('/');
    if (offset === undefined || (key !== 'start_addr' && key !== 'size' && key !== 'name'))
      continue;
    const r = regions.get(offset) ?? {};
    r[key] = v.value;
    regions.set(offset, r);
  }
  const physmap: PhysmapEntry[] = [];
  for (const [offset, r] of regions) {
    // xen_read_physmap skips an entry without start_addr or size.
    if (r.start_addr === undefined || r.size === undefined) continue;
    physmap.push({
      physOffset: hex(`physmap ${offset}`, offset),
      startAddr: hex(`physmap ${offset}/start_addr`, r.start_addr),
      size: hex(`physmap ${offset}/size`, r.size),
      name: r.name,
    });
  }
  physmap.sort((x, y) => (x.physOffset < y.physOffset ? -1 : x.physOffset > y.physOffset ? 1 : 0));
  const console: PreDropState['console'] = {};
  for (const v of values) {
    if (v.entryId === 'console-type') console.type = v.value;
    if (v.entryId === 'console-output') console.output = v.value;
  }
  return { domid, values, physmap, console };
}
