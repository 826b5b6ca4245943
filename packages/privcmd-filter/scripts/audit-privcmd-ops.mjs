#!/usr/bin/env node
// Builds the machine-readable privcmd audit (audit/privcmd-ops.json) and the two tables in
// docs/audits/privcmd-ops.md:
//   node packages/privcmd-filter/scripts/audit-privcmd-ops.mjs [path/to/qemu-7.2+dfsg]
// The op table (every privcmd/evtchn/gntdev ioctl and hypercall) cites QEMU's call sites, found by
// scanning QEMU 7.2's Xen code in .sources (scripts/fetch-sources.sh) with its
// CONFIG_XEN_CTRL_INTERFACE_VERSION compat blocks evaluated for Xen 4.17, so dead shims are not
// counted. The call table has a row per Xen library function QEMU calls, from the committed list
// tools/qemu-xen-calls extracts, with what audit-calls.mjs says each does in the kernel. The
// classification is the audit's judgement, written from the Xen 4.17 libraries
// (tools/libs/{devicemodel,foreignmemory,evtchn,gnttab,call,ctrl,store,toolcore}) and Linux 6.1
// drivers/xen.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { activeLines } from '../../../tools/qemu-xen-calls/extract.mjs';
import { CALLS } from './audit-calls.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const qemu = process.argv[2] ?? join(repo, '.sources', 'qemu-7.2+dfsg');
const XEN_CALLS = join(here, '..', 'test', 'vectors', 'qemu-7.2-xen-calls.json');
const DIRS = [
  'hw/xen',
  'hw/i386/xen',
  'include/hw/xen',
  'accel/xen',
  'hw/9pfs',
  'hw/block/dataplane',
  'hw/block',
  'hw/char',
  'hw/net',
  'hw/display',
  'hw/usb',
];

function files() {
  const out = [];
  for (const d of DIRS) {
    let names = [];
    try {
      names = readdirSync(join(qemu, d));
    } catch {
      continue;
    }
    for (const n of names) {
      const p = join(qemu, d, n);
      if (!statSync(p).isFile() || !/\.[ch]$/.test(n)) continue;
      if (
        d !== 'hw/xen' &&
        d !== 'hw/i386/xen' &&
        d !== 'include/hw/xen' &&
        d !== 'accel/xen' &&
        !/xen/.test(n)
      )
        continue;
      out.push(p);
    }
  }
  return out.sort();
}

function scan() {
  const uses = new Map();
  for (const f of files()) {
    const lines = activeLines(readFileSync(f, 'utf8'));
    lines.forEach((line, i) => {
      if (line === null) return;
      for (const m of line.matchAll(
        /\b((?:xendevicemodel|xenforeignmemory|xenevtchn|xengnttab|xc|xentoolcore)_[a-z0-9_]+)\s*\(/g,
      )) {
        // Declarations and definitions of the compat wrappers are not uses.
        if (
          /^\s*(static|extern|int|void|xen|typedef)\b/.test(line) &&
          /\)\s*[;{]?\s*$|,\s*$/.test(line) &&
          !/=|return/.test(line)
        )
          continue;
        const loc = `${relative(qemu, f)}:${i + 1}`;
        if (!uses.has(m[1])) uses.set(m[1], []);
        uses.get(m[1]).push(loc);
      }
    });
  }
  return uses;
}

// kind: ioctl | hypercall; class: dm_op | restricted | needs_new_dm_op | unreachable
const ENTRIES = [
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_DM_OP',
    class: 'dm_op',
    via: ['xendevicemodel_*'],
    note: 'Every libxendevicemodel call; the kernel checks only the domid, number and size of buffers.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_RESTRICT',
    class: 'restricted',
    via: ['xentoolcore_restrict_all'],
    note: 'The restriction itself (-xen-domid-restrict); a second domid is EINVAL.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_MMAPBATCH_V2',
    class: 'restricted',
    via: ['xenforeignmemory_map', 'xenforeignmemory_map2'],
    note: 'Mapcache and ioreq pages; EPERM for another domid once restricted.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_MMAPBATCH',
    class: 'restricted',
    via: ['xenforeignmemory_map', 'xenforeignmemory_map2'],
    note: 'libxenforeignmemory falls back to it when MMAPBATCH_V2 is ENOTTY; same domid check.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_MMAP_RESOURCE',
    class: 'restricted',
    via: ['xenforeignmemory_map_resource'],
    note: 'ioreq server pages (XENMEM_acquire_resource); EPERM for another domid.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_MMAP',
    class: 'restricted',
    via: [],
    note: 'Not used by the Xen 4.17 libraries QEMU calls; domid-checked by the kernel.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_IRQFD',
    class: 'restricted',
    via: [],
    note: 'Linux >= 6.7 only, not used by QEMU 7.2; domid-checked.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_IOEVENTFD',
    class: 'restricted',
    via: [],
    note: 'Linux >= 6.7 only, not used by QEMU 7.2; domid-checked.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_UNIMPLEMENTED',
    class: 'unreachable',
    via: [],
    note: "_IOC(_IOC_NONE, 'P', 0xFF, 0), no handler in Linux privcmd: libxenforeignmemory's open probes with it which errno an unknown ioctl gets (ENOTTY), before the restriction (seen in the lab trace); the seccomp filter answers ENOTTY too.",
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_PRIVCMD_HYPERCALL',
    class: 'unreachable',
    via: [
      'xc_set_hvm_param',
      'xc_get_hvm_param',
      'xc_hvm_param_get',
      'xc_domain_populate_physmap_exact',
      'xc_domain_shutdown',
      'xc_physdev_map_pirq',
      'xc_physdev_map_pirq_msi',
      'xc_physdev_unmap_pirq',
      'xc_domain_bind_pt_pci_irq',
      'xc_domain_unbind_pt_irq',
      'xc_domain_update_msi_irq',
      'xc_domain_unbind_msi_irq',
      'xc_domain_memory_mapping',
      'xc_domain_ioport_mapping',
      'xc_domain_iomem_permission',
    ],
    note: 'libxencall; EPERM on a restricted fd, and xentoolcore_restrict_all dup2s /dev/null over the xencall fd. The individual hypercalls are below.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_EVTCHN_RESTRICT_DOMID',
    class: 'restricted',
    via: ['xentoolcore_restrict_all'],
    note: 'Once only (EACCES after), domid 0 and reserved domids EINVAL.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_EVTCHN_BIND_INTERDOMAIN',
    class: 'restricted',
    via: ['xenevtchn_bind_interdomain'],
    note: 'EACCES unless the remote domain is the restricted domid.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_EVTCHN_UNBIND',
    class: 'restricted',
    via: ['xenevtchn_unbind'],
    note: 'Only ports this fd bound (ENOTCONN otherwise).',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_EVTCHN_NOTIFY',
    class: 'restricted',
    via: ['xenevtchn_notify'],
    note: 'Only ports this fd bound (ENOTCONN otherwise).',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_EVTCHN_BIND_VIRQ',
    class: 'unreachable',
    via: [],
    note: 'EACCES on a restricted evtchn fd; QEMU does not use it.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_EVTCHN_BIND_UNBOUND_PORT',
    class: 'unreachable',
    via: [],
    note: 'EACCES on a restricted evtchn fd; QEMU does not use it.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_GNTDEV_MAP_GRANT_REF',
    class: 'needs_new_dm_op',
    via: ['xengnttab_map_grant_ref', 'xengnttab_map_grant_refs', 'xengnttab_map_domain_grant_refs'],
    note: 'PV backends (xen-block, console, xenfb, usb). gntdev has no domid restriction: xentoolcore_restrict_all dup2s /dev/null over the fd, so a depriv DM has no grant mapping until gntdev gains one.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_GNTDEV_UNMAP_GRANT_REF',
    class: 'needs_new_dm_op',
    via: ['xengnttab_unmap'],
    note: 'As MAP_GRANT_REF.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR',
    class: 'needs_new_dm_op',
    via: ['xengnttab_unmap'],
    note: 'Finds the grant map behind an address before UNMAP_GRANT_REF; as MAP_GRANT_REF.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_GNTDEV_GRANT_COPY',
    class: 'needs_new_dm_op',
    via: ['xengnttab_grant_copy'],
    note: 'xen-block dataplane; as MAP_GRANT_REF.',
  },
  {
    kind: 'ioctl',
    name: 'IOCTL_GNTDEV_SET_MAX_GRANTS',
    class: 'needs_new_dm_op',
    via: ['xengnttab_set_max_grants'],
    note: 'As MAP_GRANT_REF.',
  },
  {
    kind: 'hypercall',
    name: '__HYPERVISOR_dm_op',
    class: 'dm_op',
    via: ['xendevicemodel_*'],
    note: 'XEN_DMOP_* sub-ops, one row each below.',
  },
  {
    kind: 'hypercall',
    name: 'XENMEM_acquire_resource',
    class: 'restricted',
    via: ['xenforeignmemory_map_resource'],
    note: 'Issued by the kernel for MMAP_RESOURCE with the checked domid.',
  },
  {
    kind: 'hypercall',
    name: 'XENMEM_add_to_physmap_range (foreign map)',
    class: 'restricted',
    via: ['xenforeignmemory_map', 'xenforeignmemory_map2'],
    note: 'Issued by the kernel for MMAPBATCH(_V2) (mmu_update on PV dom0) with the checked domid.',
  },
  {
    kind: 'hypercall',
    name: 'XENMEM_populate_physmap',
    class: 'needs_new_dm_op',
    via: ['xc_domain_populate_physmap_exact'],
    note: 'xen_ram_alloc for VRAM and ROM regions at run time; unreachable once restricted, so the toolstack must populate them or a DM_OP is needed.',
  },
  {
    kind: 'hypercall',
    name: 'XENMEM_add_to_physmap',
    class: 'unreachable',
    via: ['xc_domain_add_to_physmap'],
    note: 'Only in the pre-4.11 compat shim of relocate_memory; XEN_DMOP_relocate_memory replaces it.',
  },
  {
    kind: 'hypercall',
    name: 'HVMOP_set_param',
    class: 'needs_new_dm_op',
    via: ['xc_set_hvm_param'],
    note: 'HVM_PARAM_ACPI_S_STATE on suspend/resume (xen-hvm.c); no DM_OP sets it, so S3 fails in a depriv DM.',
  },
  {
    kind: 'hypercall',
    name: 'HVMOP_get_param',
    class: 'needs_new_dm_op',
    via: ['xc_get_hvm_param', 'xc_hvm_param_get'],
    note: 'HVM_PARAM_VMPORT_REGS_PFN (vmport) and the legacy default ioreq server pfns; the latter is not needed with create_ioreq_server, the former needs a DM_OP.',
  },
  {
    kind: 'hypercall',
    name: 'SCHEDOP_remote_shutdown',
    class: 'unreachable',
    via: ['xc_domain_shutdown'],
    note: 'Fallback in destroy_hvm_domain when XEN_DMOP_remote_shutdown fails; EPERM once restricted.',
  },
  {
    kind: 'hypercall',
    name: 'EVTCHNOP_bind_interdomain',
    class: 'restricted',
    via: ['xenevtchn_bind_interdomain'],
    note: 'Via the evtchn driver, checked against its restricted domid.',
  },
  {
    kind: 'hypercall',
    name: 'EVTCHNOP_send',
    class: 'restricted',
    via: ['xenevtchn_notify'],
    note: 'Via the evtchn driver, only on ports the fd bound.',
  },
  {
    kind: 'hypercall',
    name: 'EVTCHNOP_close',
    class: 'restricted',
    via: ['xenevtchn_unbind'],
    note: 'Via the evtchn driver, only on ports the fd bound.',
  },
  {
    kind: 'hypercall',
    name: 'EVTCHNOP_unmask',
    class: 'restricted',
    via: ['xenevtchn_unmask'],
    note: 'write(2) on the evtchn fd, only ports the fd bound.',
  },
  {
    kind: 'hypercall',
    name: 'GNTTABOP_map_grant_ref',
    class: 'needs_new_dm_op',
    via: ['xengnttab_map_grant_ref', 'xengnttab_map_grant_refs', 'xengnttab_map_domain_grant_refs'],
    note: 'Via gntdev, not domid-restricted.',
  },
  {
    kind: 'hypercall',
    name: 'GNTTABOP_copy',
    class: 'needs_new_dm_op',
    via: ['xengnttab_grant_copy'],
    note: 'Via gntdev, not domid-restricted.',
  },
  {
    kind: 'hypercall',
    name: 'PHYSDEVOP_map_pirq',
    class: 'unreachable',
    via: ['xc_physdev_map_pirq', 'xc_physdev_map_pirq_msi'],
    note: 'PCI passthrough (xen_pt); host resources: the toolstack does it, never a depriv DM.',
  },
  {
    kind: 'hypercall',
    name: 'PHYSDEVOP_unmap_pirq',
    class: 'unreachable',
    via: ['xc_physdev_unmap_pirq'],
    note: 'PCI passthrough.',
  },
  {
    kind: 'hypercall',
    name: 'XEN_DOMCTL_bind_pt_irq',
    class: 'unreachable',
    via: ['xc_domain_bind_pt_pci_irq', 'xc_domain_update_msi_irq'],
    note: 'PCI passthrough.',
  },
  {
    kind: 'hypercall',
    name: 'XEN_DOMCTL_unbind_pt_irq',
    class: 'unreachable',
    via: ['xc_domain_unbind_pt_irq', 'xc_domain_unbind_msi_irq'],
    note: 'PCI passthrough.',
  },
  {
    kind: 'hypercall',
    name: 'XEN_DOMCTL_memory_mapping',
    class: 'unreachable',
    via: ['xc_domain_memory_mapping'],
    note: 'PCI passthrough BARs, IGD.',
  },
  {
    kind: 'hypercall',
    name: 'XEN_DOMCTL_ioport_mapping',
    class: 'unreachable',
    via: ['xc_domain_ioport_mapping'],
    note: 'PCI passthrough, IGD VGA ports.',
  },
  {
    kind: 'hypercall',
    name: 'XEN_DOMCTL_iomem_permission',
    class: 'unreachable',
    via: ['xc_domain_iomem_permission'],
    note: 'IGD passthrough opregion.',
  },
];

// Which xendevicemodel_* reaches which XEN_DMOP_* (tools/libs/devicemodel/core.c).
const DMOP_VIA = {
  create_ioreq_server: ['xendevicemodel_create_ioreq_server'],
  get_ioreq_server_info: ['xendevicemodel_get_ioreq_server_info'],
  map_io_range_to_ioreq_server: [
    'xendevicemodel_map_io_range_to_ioreq_server',
    'xendevicemodel_map_pcidev_to_ioreq_server',
  ],
  unmap_io_range_from_ioreq_server: [
    'xendevicemodel_unmap_io_range_from_ioreq_server',
    'xendevicemodel_unmap_pcidev_from_ioreq_server',
  ],
  set_ioreq_server_state: ['xendevicemodel_set_ioreq_server_state'],
  destroy_ioreq_server: ['xendevicemodel_destroy_ioreq_server'],
  track_dirty_vram: ['xendevicemodel_track_dirty_vram'],
  set_pci_intx_level: ['xendevicemodel_set_pci_intx_level'],
  set_isa_irq_level: ['xendevicemodel_set_isa_irq_level'],
  set_pci_link_route: ['xendevicemodel_set_pci_link_route'],
  modified_memory: ['xendevicemodel_modified_memory'],
  set_mem_type: ['xendevicemodel_set_mem_type'],
  inject_event: ['xendevicemodel_inject_event'],
  inject_msi: ['xendevicemodel_inject_msi'],
  map_mem_type_to_ioreq_server: ['xendevicemodel_map_mem_type_to_ioreq_server'],
  remote_shutdown: ['xendevicemodel_shutdown'],
  relocate_memory: ['xendevicemodel_relocate_memory'],
  pin_memory_cacheattr: ['xendevicemodel_pin_memory_cacheattr'],
  set_irq_level: ['xendevicemodel_set_irq_level'],
  nr_vcpus: ['xendevicemodel_nr_vcpus'],
};

const natural = (a, b) => a.localeCompare(b, 'en', { numeric: true });
const uses = scan();
const locate = (via) =>
  via.flatMap((fn) =>
    fn.endsWith('_*')
      ? [...uses]
          .filter(([k]) => k.startsWith(fn.slice(0, -1)) && !/_(open|close)$/.test(k))
          .flatMap(([, v]) => v)
      : (uses.get(fn) ?? []),
  );
const rows = [
  ...ENTRIES.map((e) => ({ ...e, uses: [...new Set(locate(e.via))].sort(natural) })),
  ...Object.entries(DMOP_VIA).map(([op, via]) => {
    const u = [...new Set(locate(via))].sort(natural);
    return {
      kind: 'dm_op',
      name: `XEN_DMOP_${op}`,
      class: 'dm_op',
      via,
      note:
        u.length === 0
          ? 'Not used by QEMU 7.2 x86 (a profile for it must not allow it).'
          : 'Used by QEMU 7.2.',
      uses: u,
    };
  }),
];
// One row per Xen library function QEMU calls (the list tools/qemu-xen-calls extracted).
const extracted = JSON.parse(readFileSync(XEN_CALLS, 'utf8'));
const unaudited = extracted.functions.map((f) => f.name).filter((n) => !(n in CALLS));
const stale = Object.keys(CALLS).filter((n) => !extracted.functions.some((f) => f.name === n));
if (unaudited.length > 0 || stale.length > 0) {
  throw new Error(
    `scripts/audit-calls.mjs: expected an entry per function of ${relative(repo, XEN_CALLS)}; missing: ${unaudited.join(' ') || '(none)'}; not called by QEMU: ${stale.join(' ') || '(none)'}`,
  );
}
const calls = extracted.functions.map((f) => ({
  name: f.name,
  library: f.library,
  ...CALLS[f.name],
  wrappers: Object.entries(extracted.wrappers)
    .filter(([, libs]) => libs.includes(f.name))
    .map(([w]) => w),
  files: f.files,
}));
const unknown = calls.flatMap((c) =>
  c.reaches.filter((r) => !rows.some((e) => e.name === r)).map((r) => `${c.name} -> ${r}`),
);
if (unknown.length > 0)
  throw new Error(`audit-calls.mjs reaches rows that do not exist: ${unknown}`);

const out = {
  source: 'qemu 7.2+dfsg (Debian bookworm), Xen 4.17 libraries, Linux 6.1 drivers/xen',
  classes: {
    dm_op:
      'DM_OP already: a stable sub-op of __HYPERVISOR_dm_op, checked by the kernel for the domid only',
    restricted: 'restricted by the kernel to the domid (privcmd/evtchn restriction)',
    needs_new_dm_op: 'needs a DM_OP (or a kernel restriction) that does not exist yet',
    unreachable: 'must not be reachable from a depriv DM',
  },
  phases: {
    open: 'opens a device node or socket; QEMU does it before xentoolcore_restrict_all',
    restrict: 'the restriction itself (-xen-domid-restrict)',
    run: 'a request to a Xen driver or xenstored',
    close: 'no request to a driver (close, munmap, poll helpers)',
  },
  entries: rows,
  calls,
};
writeFileSync(join(here, '..', 'audit', 'privcmd-ops.json'), `${JSON.stringify(out, null, 2)}\n`);

const code = (xs) => xs.map((x) => `\`${x}\``).join(', ') || '(none)';
const md = join(repo, 'docs', 'audits', 'privcmd-ops.md');
const tables = {
  table: [
    '| kind | operation | class | reached through | QEMU call sites | note |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.kind} | \`${r.name}\` | ${r.class} | ${code(r.via)} | ${code(r.uses)} | ${r.note} |`,
    ),
  ],
  calls: [
    '| call | library | phase | kernel level | reaches | once restricted | QEMU files |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...calls.map(
      (c) =>
        `| \`${c.name}\` | ${c.library} | ${c.phase} | ${c.kernel} | ${code(c.reaches)} | ${c.restricted} | ${code(c.files)}${c.wrappers.length > 0 ? ` (via ${code(c.wrappers)})` : ''} |`,
    ),
  ],
};
let doc = readFileSync(md, 'utf8');
for (const [name, lines] of Object.entries(tables)) {
  const begin = `<!-- ${name}:begin (scripts/audit-privcmd-ops.mjs) -->`;
  const end = `<!-- ${name}:end -->`;
  const a = doc.indexOf(begin);
  const b = doc.indexOf(end);
  if (a < 0 || b < 0) throw new Error(`${md}: expected ${begin} ... ${end} markers`);
  doc = `${doc.slice(0, a + begin.length)}\n\n${lines.join('\n')}\n\n${doc.slice(b)}`;
}
writeFileSync(md, doc);
console.log(
  `${rows.length} op rows (${[...uses.values()].flat().length} call sites), ${calls.length} library calls`,
);
