/** XC_PAGE_SHIFT: Xen's frame size on x86 is 4 KiB. */
export const XC_PAGE_SHIFT = 12;
export const XC_PAGE_SIZE = 1 << XC_PAGE_SHIFT;

const GiB = 0x4000_0000;
const FOUR_GIB = 4 * GiB;
/** HVM_BELOW_4G_RAM_END (xen/hvm/e820.h): QEMU never puts more RAM below 4 GiB than this. */
const HVM_BELOW_4G_RAM_END = 0xf000_0000;
/** The legacy VGA window, which libxc leaves unpopulated and QEMU's VGA emulation owns. */
const VGA_START = 0xa0000;
const VGA_END = 0xc0000;
/** x86-64 physical addresses have at most 52 bits (architectural MAXPHYADDR limit). */
export const MAX_GPA = 2 ** 52;

export type PhysmapErrorCode =
  | 'INVALID_ARGUMENT'
  | 'MISALIGNED'
  | 'OUT_OF_RANGE'
  | 'OVERLAP'
  | 'NOT_FOUND'
  | 'BAD_JSON'
  | 'BAD_XENSTORE';

/** A bad layout request or a bad serialised physmap: `code` says which rule, the message what was seen. */
export class PhysmapError extends Error {
  override readonly name = 'PhysmapError';
  readonly code: PhysmapErrorCode;
  constructor(code: PhysmapErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export type RegionKind = 'ram' | 'vga' | 'mmio' | 'relocated';

/** One region of the guest physical address space, `[start, start + size)`. */
export interface PhysmapRegion {
  readonly kind: RegionKind;
  readonly name: string;
  readonly start: number;
  readonly size: number;
}

/**
 * A region QEMU relocated (the VGA framebuffer/VRAM): its memory lives at `physOffset` in
 * QEMU's RAM address space and the guest sees it at `startAddr`. Field names follow QEMU's
 * `XenPhysmap` and the legacy xenstore keys.
 */
export interface Relocation {
  readonly startAddr: number;
  readonly size: number;
  readonly physOffset: number;
  readonly name?: string;
}

export interface PhysmapLayout {
  /** Guest RAM in bytes (page multiple). */
  readonly ramBytes: number;
  /**
   * Size of the MMIO hole below 4 GiB (libxl's mmio_hole, QEMU's 4 GiB - max-ram-below-4g).
   * Default 256 MiB, the smallest QEMU accepts (RAM never above HVM_BELOW_4G_RAM_END).
   */
  readonly mmioHoleBytes?: number;
}

/** The JSON form handed to the toolstack (saved with the domain, restored on migration). */
export interface PhysmapJson {
  readonly version: 1;
  readonly ramBytes: number;
  readonly mmioHoleBytes: number;
  readonly relocations: readonly {
    readonly startAddr: number;
    readonly size: number;
    readonly physOffset: number;
    readonly name?: string;
  }[];
}

/** One xenstore write of the legacy layout. */
export interface XenstoreEntry {
  readonly path: string;
  readonly value: string;
}

/** What `translate` resolves a guest physical address to. */
export interface Translation {
  readonly region: PhysmapRegion;
  /** Offset of the address inside `region`. */
  readonly offset: number;
  /** Where the byte lives in QEMU's RAM address space (ram_addr_t), absent for the VGA window and MMIO hole. */
  readonly ramAddr: number | undefined;
}

const DEFAULT_MMIO_HOLE = FOUR_GIB - HVM_BELOW_4G_RAM_END;
const MIN_LOWMEM = VGA_END;

function checkAddress(what: string, value: unknown, opts: { allowZero: boolean }): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new PhysmapError(
      'INVALID_ARGUMENT',
      `${what}: expected a non-negative safe integer, got ${describe(value)}`,
    );
  }
  if (!opts.allowZero && value === 0) {
    throw new PhysmapError('INVALID_ARGUMENT', `${what}: expected a non-zero size, got 0`);
  }
  if (value % XC_PAGE_SIZE !== 0) {
    throw new PhysmapError(
      'MISALIGNED',
      `${what}: expected a multiple of ${XC_PAGE_SIZE} (4 KiB frames), got ${hex(value)}`,
    );
  }
  return value;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' && Number.isFinite(v) && Number.isInteger(v) && v >= 0) return hex(v);
  if (typeof v === 'object' && v !== null) return Array.isArray(v) ? 'an array' : 'an object';
  return String(v);
}

function overlaps(aStart: number, aSize: number, bStart: number, bSize: number): boolean {
  return aStart < bStart + bSize && bStart < aStart + aSize;
}

function regionLabel(r: { start: number; size: number; name: string }): string {
  return `${r.name} [${hex(r.start)}, ${hex(r.start + r.size)})`;
}

/**
 * The guest physical memory map of one HVM guest, kept in the device model's process instead
 * of xenstore: RAM below and above the 4 GiB MMIO hole (QEMU's xen_ram_init split), the legacy
 * VGA window, and relocated regions (QEMU's XenPhysmap list). Immutable layout, mutable
 * relocations.
 */
export class Physmap {
  readonly ramBytes: number;
  readonly mmioHoleBytes: number;
  /** RAM below 4 GiB (QEMU's below_4g_mem_size). */
  readonly lowmemBytes: number;
  /** RAM from 4 GiB up (QEMU's above_4g_mem_size). */
  readonly highmemBytes: number;
  readonly #base: readonly PhysmapRegion[];
  /** Sorted by startAddr. */
  #relocations: Relocation[] = [];
  /** regions(), rebuilt after a relocation changes. */
  #regions: PhysmapRegion[] | undefined;

  constructor(layout: PhysmapLayout) {
    if (typeof layout !== 'object' || layout === null) {
      throw new PhysmapError(
        'INVALID_ARGUMENT',
        `Physmap: expected a layout object, got ${describe(layout)}`,
      );
    }
    const ram = checkAddress('ramBytes', layout.ramBytes, { allowZero: false });
    const hole = checkAddress('mmioHoleBytes', layout.mmioHoleBytes ?? DEFAULT_MMIO_HOLE, {
      allowZero: false,
    });
    if (hole < DEFAULT_MMIO_HOLE || hole > FOUR_GIB - MIN_LOWMEM) {
      throw new PhysmapError(
        'OUT_OF_RANGE',
        `mmioHoleBytes: expected ${hex(DEFAULT_MMIO_HOLE)}..${hex(FOUR_GIB - MIN_LOWMEM)}, got ${hex(hole)}`,
      );
    }
    if (ram < MIN_LOWMEM) {
      throw new PhysmapError(
        'OUT_OF_RANGE',
        `ramBytes: expected at least ${hex(MIN_LOWMEM)}, got ${hex(ram)}`,
      );
    }
    const lowmemLimit = FOUR_GIB - hole;
    const lowmem = Math.min(ram, lowmemLimit);
    const highmem = ram - lowmem;
    if (FOUR_GIB + highmem > MAX_GPA) {
      throw new PhysmapError(
        'OUT_OF_RANGE',
        `ramBytes: expected RAM ending below 2^52, got ${hex(ram)}`,
      );
    }
    this.ramBytes = ram;
    this.mmioHoleBytes = hole;
    this.lowmemBytes = lowmem;
    this.highmemBytes = highmem;
    const base: PhysmapRegion[] = [
      { kind: 'ram', name: 'xen.ram.640k', start: 0, size: VGA_START },
      { kind: 'vga', name: 'vga.window', start: VGA_START, size: VGA_END - VGA_START },
      { kind: 'ram', name: 'xen.ram.lo', start: VGA_END, size: lowmem - VGA_END },
      { kind: 'mmio', name: 'mmio.hole', start: lowmem, size: FOUR_GIB - lowmem },
    ];
    if (highmem > 0) base.push({ kind: 'ram', name: 'xen.ram.hi', start: FOUR_GIB, size: highmem });
    this.#base = base;
  }

  /** The end of guest-physical space this physmap covers: the top of RAM, or of the MMIO hole. */
  get end(): number {
    return FOUR_GIB + this.highmemBytes;
  }

  /** Base regions (RAM, VGA window, MMIO hole) in address order, without relocations. */
  get layout(): readonly PhysmapRegion[] {
    return this.#base;
  }

  get relocations(): readonly Relocation[] {
    return this.#relocations.slice();
  }

  /** Every region in address order, relocations replacing the part of the base region they cover. */
  regions(): PhysmapRegion[] {
    const out: PhysmapRegion[] = [];
    const relocs = this.#relocations.map(relocationRegion);
    for (const b of this.#base) {
      let cursor = b.start;
      const end = b.start + b.size;
      for (const r of relocs) {
        if (r.start + r.size <= cursor || r.start >= end) continue;
        if (r.start > cursor) out.push({ ...b, start: cursor, size: r.start - cursor });
        cursor = Math.max(cursor, r.start + r.size);
      }
      if (cursor < end) out.push({ ...b, start: cursor, size: end - cursor });
    }
    for (const r of relocs) out.push(r);
    return out.sort((a, b) => a.start - b.start);
  }

  /**
   * Records a relocated region (QEMU's xen_add_to_physmap). It may sit in the VGA window, the
   * MMIO hole or above RAM, never over RAM or another relocation, and its RAM-address range
   * (`physOffset`) must not be shared with another relocation.
   */
  addRelocation(relocation: Relocation): Relocation {
    if (typeof relocation !== 'object' || relocation === null) {
      throw new PhysmapError(
        'INVALID_ARGUMENT',
        `addRelocation: expected an object, got ${describe(relocation)}`,
      );
    }
    const startAddr = checkAddress('startAddr', relocation.startAddr, { allowZero: true });
    const size = checkAddress('size', relocation.size, { allowZero: false });
    const physOffset = checkAddress('physOffset', relocation.physOffset, { allowZero: true });
    const name = relocation.name;
    if (name !== undefined && typeof name !== 'string') {
      throw new PhysmapError('INVALID_ARGUMENT', `name: expected a string, got ${describe(name)}`);
    }
    if (startAddr + size > MAX_GPA || physOffset + size > MAX_GPA) {
      throw new PhysmapError(
        'OUT_OF_RANGE',
        `relocation: expected startAddr + size and physOffset + size at most 2^52, got startAddr ${hex(startAddr)} physOffset ${hex(physOffset)} size ${hex(size)}`,
      );
    }
    for (const b of this.#base) {
      if (b.kind === 'ram' && overlaps(startAddr, size, b.start, b.size)) {
        throw new PhysmapError(
          'OVERLAP',
          `relocation [${hex(startAddr)}, ${hex(startAddr + size)}): expected no overlap with RAM, overlaps ${regionLabel(b)}`,
        );
      }
    }
    for (const r of this.#relocations) {
      if (overlaps(startAddr, size, r.startAddr, r.size)) {
        throw new PhysmapError(
          'OVERLAP',
          `relocation [${hex(startAddr)}, ${hex(startAddr + size)}): expected no overlap with another relocation, overlaps ${regionLabel(relocationRegion(r))}`,
        );
      }
      if (overlaps(physOffset, size, r.physOffset, r.size)) {
        throw new PhysmapError(
          'OVERLAP',
          `relocation physOffset [${hex(physOffset)}, ${hex(physOffset + size)}): expected RAM addresses of its own, shares them with ${regionLabel(relocationRegion(r))}`,
        );
      }
    }
    const added: Relocation =
      name === undefined ? { startAddr, size, physOffset } : { startAddr, size, physOffset, name };
    this.#relocations.push(added);
    this.#relocations.sort((a, b) => a.startAddr - b.startAddr);
    this.#regions = undefined;
    return added;
  }

  /** Removes the relocation covering `startAddr` (QEMU's xen_remove_from_physmap) and returns it. */
  removeRelocation(startAddr: number): Relocation {
    const at = this.#relocationIndexAt(startAddr);
    if (at < 0) {
      throw new PhysmapError(
        'NOT_FOUND',
        `removeRelocation: expected a relocation covering ${describe(startAddr)}, found none`,
      );
    }
    const [removed] = this.#relocations.splice(at, 1);
    this.#regions = undefined;
    return removed as Relocation;
  }

  #relocationIndexAt(gpa: number): number {
    for (let i = 0; i < this.#relocations.length; i++) {
      const r = this.#relocations[i] as Relocation;
      if (gpa >= r.startAddr && gpa < r.startAddr + r.size) return i;
    }
    return -1;
  }

  /**
   * The piece of `regions()` holding `gpa` (a base region cut around relocations), or undefined
   * above `end` outside any relocation.
   */
  lookup(gpa: number): PhysmapRegion | undefined {
    if (typeof gpa !== 'number' || !Number.isSafeInteger(gpa) || gpa < 0) return undefined;
    this.#regions ??= this.regions();
    for (const r of this.#regions) if (gpa >= r.start && gpa < r.start + r.size) return r;
    return undefined;
  }

  /** Resolves a guest physical address; an address outside every region is an OUT_OF_RANGE error. */
  translate(gpa: number): Translation {
    if (typeof gpa !== 'number' || !Number.isSafeInteger(gpa) || gpa < 0) {
      throw new PhysmapError(
        'INVALID_ARGUMENT',
        `translate: expected a non-negative safe integer address, got ${describe(gpa)}`,
      );
    }
    const region = this.lookup(gpa);
    if (region === undefined) {
      throw new PhysmapError(
        'OUT_OF_RANGE',
        `translate: expected an address below ${hex(this.end)} or in a relocation, got ${hex(gpa)}`,
      );
    }
    const offset = gpa - region.start;
    let ramAddr: number | undefined;
    if (region.kind === 'ram') ramAddr = gpa;
    else if (region.kind === 'relocated') {
      const r = this.#relocations[this.#relocationIndexAt(gpa)] as Relocation;
      ramAddr = r.physOffset + offset;
    }
    return { region, offset, ramAddr };
  }

  /** The region holding guest frame `gfn` (translate for frame numbers). */
  regionOfGfn(gfn: number): PhysmapRegion {
    if (
      typeof gfn !== 'number' ||
      !Number.isSafeInteger(gfn) ||
      gfn < 0 ||
      gfn >= MAX_GPA / XC_PAGE_SIZE
    ) {
      throw new PhysmapError(
        'INVALID_ARGUMENT',
        `regionOfGfn: expected a gfn below 2^40, got ${describe(gfn)}`,
      );
    }
    return this.translate(gfn * XC_PAGE_SIZE).region;
  }

  /** The guest frames of a region: `[first, first + count)`. */
  gfnsOf(region: PhysmapRegion): { first: number; count: number } {
    return { first: region.start / XC_PAGE_SIZE, count: region.size / XC_PAGE_SIZE };
  }

  /** Whether the guest frame is backed by memory (RAM or a relocation). */
  isPopulated(gfn: number): boolean {
    const region = this.lookup(gfn * XC_PAGE_SIZE);
    return region !== undefined && (region.kind === 'ram' || region.kind === 'relocated');
  }

  /**
   * The guest address where a RAM address is visible: QEMU's xen_phys_offset_to_gaddr, which
   * returns the address unchanged when no relocation covers it.
   */
  physOffsetToGaddr(physOffset: number): number {
    for (const r of this.#relocations) {
      if (physOffset >= r.physOffset && physOffset < r.physOffset + r.size) {
        return r.startAddr + (physOffset - r.physOffset);
      }
    }
    return physOffset;
  }

  toJSON(): PhysmapJson {
    return {
      version: 1,
      ramBytes: this.ramBytes,
      mmioHoleBytes: this.mmioHoleBytes,
      relocations: this.#relocations.map((r) => ({ ...r })),
    };
  }

  /** Rebuilds a physmap from `toJSON()` output (or its JSON text); anything else is a BAD_JSON error. */
  static fromJSON(input: unknown): Physmap {
    let value = input;
    if (typeof input === 'string') {
      try {
        value = JSON.parse(input) as unknown;
      } catch (e) {
        throw new PhysmapError(
          'BAD_JSON',
          `fromJSON: expected JSON text, got a parse error: ${(e as Error).message}`,
        );
      }
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new PhysmapError('BAD_JSON', `fromJSON: expected an object, got ${describe(value)}`);
    }
    const o = value as Record<string, unknown>;
    if (o.version !== 1)
      throw new PhysmapError(
        'BAD_JSON',
        `fromJSON: expected version 1, got ${describe(o.version)}`,
      );
    const known = new Set(['version', 'ramBytes', 'mmioHoleBytes', 'relocations']);
    for (const k of Object.keys(o)) {
      if (!known.has(k))
        throw new PhysmapError('BAD_JSON', `fromJSON: expected no key ${JSON.stringify(k)}`);
    }
    if (!Array.isArray(o.relocations)) {
      throw new PhysmapError(
        'BAD_JSON',
        `fromJSON: expected relocations to be an array, got ${describe(o.relocations)}`,
      );
    }
    const relocKeys = new Set(['startAddr', 'size', 'physOffset', 'name']);
    return rethrowAs('BAD_JSON', 'fromJSON', () => {
      const map = new Physmap({
        ramBytes: o.ramBytes as number,
        mmioHoleBytes: o.mmioHoleBytes as number,
      });
      for (const [i, r] of (o.relocations as unknown[]).entries()) {
        if (typeof r !== 'object' || r === null || Array.isArray(r)) {
          throw new PhysmapError(
            'BAD_JSON',
            `relocations[${i}]: expected an object, got ${describe(r)}`,
          );
        }
        for (const k of Object.keys(r)) {
          if (!relocKeys.has(k))
            throw new PhysmapError(
              'BAD_JSON',
              `relocations[${i}]: expected no key ${JSON.stringify(k)}`,
            );
        }
        map.addRelocation(r as Relocation);
      }
      return map;
    });
  }

  /**
   * The legacy layout QEMU 7.2 writes with XEN_COMPAT_PHYSMAP (xen_save_physmap): for each
   * relocation, `<base>/<phys_offset>/start_addr` and `size` as `%PRIx64` (lower-case hex, no
   * 0x) and `name` when it has one. RAM is not in it: the toolstack knows the RAM size.
   */
  toXenstore(domid: number): XenstoreEntry[] {
    const base = physmapXenstorePath(domid);
    const out: XenstoreEntry[] = [];
    for (const r of this.#relocations) {
      const dir = `${base}/${r.physOffset.toString(16)}`;
      out.push({ path: `${dir}/start_addr`, value: r.startAddr.toString(16) });
      out.push({ path: `${dir}/size`, value: r.size.toString(16) });
      if (r.name !== undefined) out.push({ path: `${dir}/name`, value: r.name });
    }
    return out;
  }

  /**
   * Rebuilds a physmap from the RAM layout and the legacy xenstore entries (path/value pairs, as
   * read back under `physmapXenstorePath(domid)`). Unlike QEMU's xen_read_physmap, which skips an
   * entry without start_addr or size, a partial entry, an unknown key or non-hex value is a
   * BAD_XENSTORE error, so nothing is dropped silently.
   */
  static fromXenstore(
    layout: PhysmapLayout,
    domid: number,
    entries: readonly XenstoreEntry[],
  ): Physmap {
    const base = `${physmapXenstorePath(domid)}/`;
    const byOffset = new Map<string, { start_addr?: string; size?: string; name?: string }>();
    for (const [i, e] of entries.entries()) {
      if (
        typeof e !== 'object' ||
        e === null ||
        typeof e.path !== 'string' ||
        typeof e.value !== 'string'
      ) {
        throw new PhysmapError(
          'BAD_XENSTORE',
          `entries[${i}]: expected {path, value} strings, got ${describe(e)}`,
        );
      }
      if (!e.path.startsWith(base)) {
        throw new PhysmapError(
          'BAD_XENSTORE',
          `entries[${i}]: expected a path under ${base}, got ${JSON.stringify(e.path)}`,
        );
      }
      const rest = e.path.slice(base.length).split('/');
      const [offset, key] = rest;
      if (rest.length !== 2 || offset === undefined || key === undefined || !HEX.test(offset)) {
        throw new PhysmapError(
          'BAD_XENSTORE',
          `entries[${i}]: expected ${base}<hex phys_offset>/{start_addr,size,name}, got ${JSON.stringify(e.path)}`,
        );
      }
      if (key !== 'start_addr' && key !== 'size' && key !== 'name') {
        throw new PhysmapError(
          'BAD_XENSTORE',
          `entries[${i}]: expected key start_addr, size or name, got ${JSON.stringify(key)}`,
        );
      }
      const slot = byOffset.get(offset) ?? {};
      if (slot[key] !== undefined) {
        throw new PhysmapError('BAD_XENSTORE', `entries[${i}]: ${e.path} given twice`);
      }
      slot[key] = e.value;
      byOffset.set(offset, slot);
    }
    return rethrowAs('BAD_XENSTORE', 'fromXenstore', () => {
      const map = new Physmap(layout);
      for (const [offset, slot] of byOffset) {
        const dir = `${base}${offset}`;
        if (slot.start_addr === undefined || slot.size === undefined) {
          const missing = slot.start_addr === undefined ? 'start_addr' : 'size';
          throw new PhysmapError(
            'BAD_XENSTORE',
            `${dir}: expected ${missing}, found only ${Object.keys(slot).join(', ')}`,
          );
        }
        const reloc = {
          physOffset: parseHex(`${dir}`, offset),
          startAddr: parseHex(`${dir}/start_addr`, slot.start_addr),
          size: parseHex(`${dir}/size`, slot.size),
        };
        map.addRelocation(slot.name === undefined ? reloc : { ...reloc, name: slot.name });
      }
      return map;
    });
  }
}

const HEX = /^[0-9a-fA-F]{1,16}$/;

function parseHex(where: string, s: string): number {
  if (!HEX.test(s)) {
    throw new PhysmapError(
      'BAD_XENSTORE',
      `${where}: expected hexadecimal digits (%PRIx64), got ${JSON.stringify(s)}`,
    );
  }
  const n = Number.parseInt(s, 16);
  if (!Number.isSafeInteger(n)) {
    throw new PhysmapError('BAD_XENSTORE', `${where}: expected a value below 2^53, got 0x${s}`);
  }
  return n;
}

function rethrowAs<T>(code: PhysmapErrorCode, where: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof PhysmapError && e.code !== code)
      throw new PhysmapError(code, `${where}: ${e.message}`);
    throw e;
  }
}

function relocationRegion(r: Relocation): PhysmapRegion {
  return { kind: 'relocated', name: r.name ?? '', start: r.startAddr, size: r.size };
}

/** `/local/domain/0/device-model/<domid>/physmap`, where QEMU kept its physmap (XEN_COMPAT_PHYSMAP). */
export function physmapXenstorePath(domid: number): string {
  if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) {
    throw new PhysmapError(
      'INVALID_ARGUMENT',
      `domid: expected a guest domid 0..32751, got ${describe(domid)}`,
    );
  }
  return `/local/domain/0/device-model/${domid}/physmap`;
}

/** The two reads `readPhysmapEntries` needs; `XenstoreClient` of `@xen-depriv/xs-restrict` has them. */
export interface XenstoreReader {
  directory(path: string): Promise<string[]>;
  read(path: string): Promise<Uint8Array>;
}

/**
 * Reads the legacy physmap entries of `domid` from a xenstore (every key under
 * `physmapXenstorePath(domid)`), for `Physmap.fromXenstore`. No physmap directory gives [].
 */
export async function readPhysmapEntries(
  store: XenstoreReader,
  domid: number,
): Promise<XenstoreEntry[]> {
  const base = physmapXenstorePath(domid);
  let offsets: string[];
  try {
    offsets = await store.directory(base);
  } catch (e) {
    if (typeof e === 'object' && e !== null && 'code' in e && e.code === 'ENOENT') return [];
    throw e;
  }
  const out: XenstoreEntry[] = [];
  const decoder = new TextDecoder('utf-8', { fatal: true });
  for (const offset of offsets) {
    for (const key of await store.directory(`${base}/${offset}`)) {
      const path = `${base}/${offset}/${key}`;
      out.push({ path, value: decoder.decode(await store.read(path)) });
    }
  }
  return out;
}
