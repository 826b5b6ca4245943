import { DM_OP_NAMES, type DmOpName } from '@xen-depriv/dmop-abi';
import {
  dmOpFieldOffset as at,
  dmOpNumber,
  modifiedMemoryExtentOffset,
  readU16,
  readU32,
  readU64,
} from '@xen-depriv/dmop-abi/fields';
import { MODIFIED_MEMORY_EXTENT, SIZEOF } from '@xen-depriv/dmop-abi/layout';
import { allow, type Decision, deny } from './errno.js';
import { PolicyError, show } from './error.js';
import type { PrivcmdModel } from './model.js';

// Where each field the policy checks sits in bufs[0] (struct xen_dm_op), taken once from
// dmop-abi's gcc-checked layout: this module knows no offset of its own.
const XEN_DM_OP_SIZE = SIZEOF.xen_dm_op;
const OP_NAMES: readonly DmOpName[] = DM_OP_NAMES.filter((n): n is DmOpName => n !== undefined);
const EXTENT_SIZE = MODIFIED_MEMORY_EXTENT.size;
const EXTENT_NR = modifiedMemoryExtentOffset('nr');
const EXTENT_FIRST_PFN = modifiedMemoryExtentOffset('firstPfn');
const MSI_ADDR = at('inject_msi', 'addr');
const MEM_TYPE_NR = at('set_mem_type', 'nr');
const MEM_TYPE_TYPE = at('set_mem_type', 'memType');
const MEM_TYPE_FIRST = at('set_mem_type', 'firstPfn');
const VRAM_NR = at('track_dirty_vram', 'nr');
const VRAM_FIRST = at('track_dirty_vram', 'firstPfn');
const RELOC_SIZE = at('relocate_memory', 'size');
const RELOC_SRC = at('relocate_memory', 'srcGfn');
const RELOC_DST = at('relocate_memory', 'dstGfn');
const MODIFIED_NR_EXTENTS = at('modified_memory', 'nrExtents');
const PIN_START = at('pin_memory_cacheattr', 'start');
const PIN_END = at('pin_memory_cacheattr', 'end');
const PIN_TYPE = at('pin_memory_cacheattr', 'type');
const RANGE_TYPE = at('map_io_range_to_ioreq_server', 'type');
const RANGE_START = at('map_io_range_to_ioreq_server', 'start');
const RANGE_END = at('map_io_range_to_ioreq_server', 'end');
const SHUTDOWN_REASON = at('remote_shutdown', 'reason');

/** An inclusive range of one `XEN_DMOP_IO_RANGE_*` type. */
export interface IoRange {
  readonly type: 'port' | 'mmio' | 'pci';
  readonly start: bigint;
  readonly end: bigint;
}

/** Constraints of one allowed op; an absent key means no constraint of that kind. */
export interface OpRule {
  /** inject_msi: inclusive [low, high] the MSI address must lie in. */
  readonly msiAddress?: readonly [bigint, bigint];
  /** set_mem_type: the `hvmmem_type_t` values allowed. */
  readonly memTypes?: readonly number[];
  /** Page count cap: per call (set_mem_type, track_dirty_vram, relocate_memory) or per extent and in total (modified_memory). */
  readonly maxPages?: number;
  /** modified_memory: at most this many extents in one call. */
  readonly maxExtents?: number;
  /** Every gfn the op names must be below `PolicyContext.guestMemoryEndGfn`. */
  readonly withinGuestMemory?: boolean;
  /** map/unmap_io_range: the range must lie inside one of `PolicyContext.ioRanges` of its type. */
  readonly withinDeclaredIoRanges?: boolean;
  /** set_isa_irq_level / set_pci_link_route: highest ISA IRQ (15). */
  readonly isaIrqMax?: number;
  /** set_pci_link_route: highest link (3); set_pci_intx_level: highest intx (3). */
  readonly linkMax?: number;
  /** remote_shutdown: the `SHUTDOWN_*` reasons allowed. */
  readonly shutdownReasons?: readonly number[];
  /** pin_memory_cacheattr: the `XEN_DMOP_MEM_CACHEATTR_*` types allowed. */
  readonly cacheAttrs?: readonly number[];
}

/** Which DM_OPs a device model may issue and with which arguments: data, checked by `validateProfile`. */
export interface PolicyProfile {
  readonly name: string;
  /** Limits at or below the kernel's module parameters. */
  readonly limits: { readonly maxBufs: number; readonly maxBufSize: number };
  /** Ops not listed are denied. */
  readonly ops: Readonly<Partial<Record<DmOpName, OpRule>>>;
}

/** What the toolstack declared for this domain, which a profile's rules refer to. */
export interface PolicyContext {
  /** First gfn past the guest's memory (RAM, holes and VRAM included). */
  readonly guestMemoryEndGfn: bigint;
  /** The I/O ranges this device model emulates. */
  readonly ioRanges: readonly IoRange[];
}

/** One DM_OP as it reaches privcmd: the target domid and its buffers (bufs[0] is `struct xen_dm_op`). */
export interface DmOpCall {
  readonly domid: number;
  readonly bufs: readonly Uint8Array[];
}

const RULE_KEYS = new Set([
  'msiAddress',
  'memTypes',
  'maxPages',
  'maxExtents',
  'withinGuestMemory',
  'withinDeclaredIoRanges',
  'isaIrqMax',
  'linkMax',
  'shutdownReasons',
  'cacheAttrs',
]);

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isNat = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

/**
 * Checks that `data` is a well-formed profile (JSON-like; `msiAddress` bounds may be bigint or
 * numeric strings) and returns it typed. Throws `PolicyError('BAD_PROFILE')` naming the path.
 */
export function validateProfile(data: unknown): PolicyProfile {
  const bad = (where: string, expected: string, got: unknown): never => {
    throw new PolicyError('BAD_PROFILE', where, `expected ${expected}, got ${show(got)}`);
  };
  if (!isObj(data)) return bad('/', 'an object', data);
  if (typeof data.name !== 'string' || data.name === '')
    bad('/name', 'a non-empty string', data.name);
  const limits = data.limits;
  if (!isObj(limits)) return bad('/limits', 'an object', limits);
  if (!isNat(limits.maxBufs) || limits.maxBufs < 1)
    bad('/limits/maxBufs', 'an integer >= 1', limits.maxBufs);
  if (!isNat(limits.maxBufSize) || limits.maxBufSize < 32) {
    bad('/limits/maxBufSize', 'an integer >= 32 (sizeof struct xen_dm_op)', limits.maxBufSize);
  }
  if (!isObj(data.ops)) return bad('/ops', 'an object', data.ops);
  const ops: Partial<Record<DmOpName, OpRule>> = {};
  for (const [name, rule] of Object.entries(data.ops)) {
    const where = `/ops/${name}`;
    if (!(OP_NAMES as readonly string[]).includes(name))
      bad(where, `a XEN_DMOP_* name (${OP_NAMES.join(', ')})`, name);
    if (!isObj(rule)) return bad(where, 'an object of constraints', rule);
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(rule)) {
      const at = `${where}/${key}`;
      if (!RULE_KEYS.has(key)) bad(at, `one of ${[...RULE_KEYS].join(', ')}`, key);
      switch (key) {
        case 'msiAddress': {
          if (!Array.isArray(value) || value.length !== 2) return bad(at, '[low, high]', value);
          const pair = value.map((v, i) => {
            try {
              if (typeof v === 'bigint' || typeof v === 'number' || typeof v === 'string')
                return BigInt(v);
            } catch {}
            return bad(`${at}/${i}`, 'an integer (bigint, number or decimal/0x string)', v);
          });
          if ((pair[0] as bigint) > (pair[1] as bigint)) bad(at, 'low <= high', value);
          out[key] = pair;
          break;
        }
        case 'memTypes':
        case 'shutdownReasons':
        case 'cacheAttrs':
          if (!Array.isArray(value) || !value.every(isNat))
            return bad(at, 'an array of non-negative integers', value);
          out[key] = [...value];
          break;
        case 'withinGuestMemory':
        case 'withinDeclaredIoRanges':
          if (typeof value !== 'boolean') bad(at, 'a boolean', value);
          out[key] = value;
          break;
        default:
          if (!isNat(value)) bad(at, 'a non-negative integer', value);
          out[key] = value;
      }
    }
    ops[name as DmOpName] = out as OpRule;
  }
  return {
    name: data.name as string,
    limits: { maxBufs: limits.maxBufs as number, maxBufSize: limits.maxBufSize as number },
    ops,
  };
}

const IO_RANGE_TYPES = ['port', 'mmio', 'pci'] as const;

function refuse(profile: PolicyProfile, name: DmOpName, key: string, what: string): Decision {
  return deny('EPERM', `profile ${profile.name}: XEN_DMOP_${name} ${what} (rule ${key})`);
}

/** The refusal for a byte field over the rule's cap, or undefined when the rule has no cap or it holds. */
function overCap(
  profile: PolicyProfile,
  name: DmOpName,
  key: 'isaIrqMax' | 'linkMax',
  cap: number | undefined,
  field: string,
  value: number,
): Decision | undefined {
  return cap !== undefined && value > cap
    ? refuse(profile, name, key, `${field} ${value} is over ${cap}`)
    : undefined;
}

function inGuest(end: bigint, first: bigint, nr: bigint): boolean {
  return first + nr <= end;
}
const memEnd = (context: PolicyContext) =>
  `guest memory ends at gfn 0x${context.guestMemoryEndGfn.toString(16)}`;

/**
 * The policy decision for one DM_OP, top to bottom like the kernel's checks: the privcmd model's
 * restriction and sizes first (when a model is given), then the profile's size limits, then the op,
 * then its arguments. A profile refusal is EPERM, as a restricted privcmd refuses what it may not do.
 */
export function decide(
  call: DmOpCall,
  profile: PolicyProfile,
  context: PolicyContext,
  model?: PrivcmdModel,
): Decision {
  return decideDmOp(call.domid, call.bufs, profile, context, model);
}

/** `decide` without the call object, for the handles' hot path. */
export function decideDmOp(
  domid: number,
  bufs: readonly Uint8Array[],
  profile: PolicyProfile,
  context: PolicyContext,
  model?: PrivcmdModel,
): Decision {
  if (model) {
    const k = model.decide({
      kind: 'dm_op',
      dom: domid,
      bufSizes: bufs.map((b) => b.byteLength),
      bufPageOffsets: bufs.map(() => 0),
    });
    if (!k.allowed || bufs.length === 0) return k;
  }
  const { limits } = profile;
  if (bufs.length > limits.maxBufs) {
    return deny(
      'E2BIG',
      `profile ${profile.name}: at most ${limits.maxBufs} buffers, got ${bufs.length}`,
    );
  }
  for (let i = 0; i < bufs.length; i++) {
    const size = bufs[i]?.byteLength ?? 0;
    if (size > limits.maxBufSize) {
      return deny(
        'E2BIG',
        `profile ${profile.name}: buffer ${i} is ${size} bytes, at most ${limits.maxBufSize}`,
      );
    }
  }
  const first = bufs[0];
  if (first === undefined) return allow('DM_OP with no buffers does nothing');
  if (first.byteLength < XEN_DM_OP_SIZE) {
    return deny(
      'EINVAL',
      `profile ${profile.name}: bufs[0] expected at least ${XEN_DM_OP_SIZE} bytes (struct xen_dm_op), got ${first.byteLength}`,
    );
  }
  const op = dmOpNumber(first) as number;
  const name = DM_OP_NAMES[op];
  if (name === undefined)
    return deny('EPERM', `profile ${profile.name}: op ${op} is not a XEN_DMOP_* op`);
  const rule = profile.ops[name];
  if (rule === undefined)
    return deny('EPERM', `profile ${profile.name}: XEN_DMOP_${name} is not allowed`);
  const memoryEnd = context.guestMemoryEndGfn;

  switch (name) {
    case 'inject_msi': {
      const window = compiled(profile).msi;
      // The common case in plain numbers: both bounds below 2^53, so hi32 * 2^32 + lo32 is exact
      // whenever it can lie between them.
      const hi32 = readU32(first, MSI_ADDR + 4);
      const addrNum =
        hi32 < 0x200000 ? hi32 * 0x100000000 + readU32(first, MSI_ADDR) : Number.MAX_VALUE;
      const outside =
        window !== undefined
          ? addrNum < window[0] || addrNum > window[1]
          : rule.msiAddress !== undefined &&
            (readU64(first, MSI_ADDR) < rule.msiAddress[0] ||
              readU64(first, MSI_ADDR) > rule.msiAddress[1]);
      if (outside && rule.msiAddress) {
        const addr = readU64(first, MSI_ADDR);
        const [lo, hi] = rule.msiAddress;
        return refuse(
          profile,
          name,
          'msiAddress',
          `address 0x${addr.toString(16)} is outside 0x${lo.toString(16)}..0x${hi.toString(16)}`,
        );
      }
      break;
    }
    case 'set_mem_type': {
      const nr = readU32(first, MEM_TYPE_NR);
      const memType = readU16(first, MEM_TYPE_TYPE);
      const firstPfn = readU64(first, MEM_TYPE_FIRST);
      if (rule.memTypes && !rule.memTypes.includes(memType)) {
        return refuse(
          profile,
          name,
          'memTypes',
          `mem_type ${memType} is not one of ${rule.memTypes.join(', ')}`,
        );
      }
      if (rule.maxPages !== undefined && nr > rule.maxPages)
        return refuse(profile, name, 'maxPages', `nr ${nr} is over ${rule.maxPages}`);
      if (rule.withinGuestMemory && !inGuest(memoryEnd, firstPfn, BigInt(nr))) {
        return refuse(
          profile,
          name,
          'withinGuestMemory',
          `pages 0x${firstPfn.toString(16)}+${nr} pass the end: ${memEnd(context)}`,
        );
      }
      break;
    }
    case 'track_dirty_vram': {
      const nr = readU32(first, VRAM_NR);
      const firstPfn = readU64(first, VRAM_FIRST);
      if (rule.maxPages !== undefined && nr > rule.maxPages)
        return refuse(profile, name, 'maxPages', `nr ${nr} is over ${rule.maxPages}`);
      if (rule.withinGuestMemory && !inGuest(memoryEnd, firstPfn, BigInt(nr))) {
        return refuse(
          profile,
          name,
          'withinGuestMemory',
          `pages 0x${firstPfn.toString(16)}+${nr} pass the end: ${memEnd(context)}`,
        );
      }
      break;
    }
    case 'relocate_memory': {
      const size = readU32(first, RELOC_SIZE);
      const src = readU64(first, RELOC_SRC);
      const dst = readU64(first, RELOC_DST);
      if (rule.maxPages !== undefined && size > rule.maxPages)
        return refuse(profile, name, 'maxPages', `size ${size} is over ${rule.maxPages}`);
      if (
        rule.withinGuestMemory &&
        (!inGuest(memoryEnd, src, BigInt(size)) || !inGuest(memoryEnd, dst, BigInt(size)))
      ) {
        return refuse(
          profile,
          name,
          'withinGuestMemory',
          `gfns 0x${src.toString(16)}->0x${dst.toString(16)}+${size} pass the end: ${memEnd(context)}`,
        );
      }
      break;
    }
    case 'modified_memory': {
      const nrExtents = readU32(first, MODIFIED_NR_EXTENTS);
      if (rule.maxExtents !== undefined && nrExtents > rule.maxExtents) {
        return refuse(
          profile,
          name,
          'maxExtents',
          `nr_extents ${nrExtents} is over ${rule.maxExtents}`,
        );
      }
      const extents = bufs[1];
      if (extents === undefined || extents.byteLength < nrExtents * EXTENT_SIZE) {
        return deny(
          'EINVAL',
          `profile ${profile.name}: XEN_DMOP_modified_memory expects ${nrExtents} extents of ${EXTENT_SIZE} bytes in bufs[1], got ${extents?.byteLength ?? 'no buffer'}`,
        );
      }
      let total = 0;
      for (let i = 0; i < nrExtents; i++) {
        const nr = readU32(extents, i * EXTENT_SIZE + EXTENT_NR);
        const firstPfn = readU64(extents, i * EXTENT_SIZE + EXTENT_FIRST_PFN);
        total += nr;
        if (rule.maxPages !== undefined && total > rule.maxPages) {
          return refuse(
            profile,
            name,
            'maxPages',
            `extents up to ${i} cover ${total} pages, over ${rule.maxPages}`,
          );
        }
        if (rule.withinGuestMemory && !inGuest(memoryEnd, firstPfn, BigInt(nr))) {
          return refuse(
            profile,
            name,
            'withinGuestMemory',
            `extent ${i} 0x${firstPfn.toString(16)}+${nr} passes the end: ${memEnd(context)}`,
          );
        }
      }
      break;
    }
    case 'pin_memory_cacheattr': {
      const start = readU64(first, PIN_START);
      const last = readU64(first, PIN_END);
      const type = readU32(first, PIN_TYPE);
      if (rule.cacheAttrs && !rule.cacheAttrs.includes(type)) {
        return refuse(
          profile,
          name,
          'cacheAttrs',
          `type ${type} is not one of ${rule.cacheAttrs.join(', ')}`,
        );
      }
      if (rule.withinGuestMemory && (last < start || last >= memoryEnd)) {
        return refuse(
          profile,
          name,
          'withinGuestMemory',
          `gfns 0x${start.toString(16)}..0x${last.toString(16)} pass the end: ${memEnd(context)}`,
        );
      }
      break;
    }
    case 'map_io_range_to_ioreq_server':
    case 'unmap_io_range_from_ioreq_server': {
      const type = IO_RANGE_TYPES[readU32(first, RANGE_TYPE)];
      const start = readU64(first, RANGE_START);
      const end = readU64(first, RANGE_END);
      if (rule.withinDeclaredIoRanges) {
        const inside = context.ioRanges.some(
          (r) => r.type === type && r.start <= start && end <= r.end && start <= end,
        );
        if (!inside) {
          return refuse(
            profile,
            name,
            'withinDeclaredIoRanges',
            `${type ?? `type ${readU32(first, RANGE_TYPE)}`} range 0x${start.toString(16)}..0x${end.toString(16)} is not inside a declared range`,
          );
        }
      }
      break;
    }
    case 'set_isa_irq_level':
      return (
        overCap(profile, name, 'isaIrqMax', rule.isaIrqMax, 'isa_irq', first[8] as number) ??
        allowed(profile, name)
      );
    case 'set_pci_link_route':
      return (
        overCap(profile, name, 'linkMax', rule.linkMax, 'link', first[8] as number) ??
        overCap(profile, name, 'isaIrqMax', rule.isaIrqMax, 'isa_irq', first[9] as number) ??
        allowed(profile, name)
      );
    case 'set_pci_intx_level':
      return (
        overCap(profile, name, 'linkMax', rule.linkMax, 'intx', first[12] as number) ??
        allowed(profile, name)
      );
    case 'remote_shutdown':
      if (rule.shutdownReasons && !rule.shutdownReasons.includes(readU32(first, SHUTDOWN_REASON))) {
        return refuse(
          profile,
          name,
          'shutdownReasons',
          `reason ${readU32(first, SHUTDOWN_REASON)} is not one of ${rule.shutdownReasons.join(', ')}`,
        );
      }
      break;
    default:
      break;
  }
  return allowed(profile, name);
}

// Per profile, built once: the allow decisions (the allowed path is the hot one) and the MSI
// window as numbers when it fits in 2^53.
interface Compiled {
  readonly allowed: Map<DmOpName, Decision>;
  readonly msi: readonly [number, number] | undefined;
}
const COMPILED = new WeakMap<PolicyProfile, Compiled>();
let lastProfile: PolicyProfile | undefined;
let lastCompiled: Compiled | undefined;
function compiled(profile: PolicyProfile): Compiled {
  if (profile === lastProfile && lastCompiled !== undefined) return lastCompiled;
  let c = COMPILED.get(profile);
  if (c === undefined) {
    const w = profile.ops.inject_msi?.msiAddress;
    const safe = (v: bigint) => v <= BigInt(Number.MAX_SAFE_INTEGER);
    c = {
      allowed: new Map(),
      msi: w !== undefined && safe(w[0]) && safe(w[1]) ? [Number(w[0]), Number(w[1])] : undefined,
    };
    COMPILED.set(profile, c);
  }
  lastProfile = profile;
  lastCompiled = c;
  return c;
}

function allowed(profile: PolicyProfile, name: DmOpName): Decision {
  const byOp = compiled(profile).allowed;
  let d = byOp.get(name);
  if (d === undefined) {
    d = Object.freeze(allow(`profile ${profile.name}: XEN_DMOP_${name} allowed`));
    byOp.set(name, d);
  }
  return d;
}
