// The audit's judgement of each Xen library function QEMU 7.2 calls: what it does at the kernel
// level, before and after `xentoolcore_restrict_all` (what -xen-domid-restrict calls), and which
// rows of the op table (audit-privcmd-ops.mjs) it reaches. Written from the Xen 4.17 libraries
// (tools/libs/{call,ctrl,devicemodel,evtchn,foreignmemory,gnttab,store,toolcore}) and Linux 6.1
// drivers/xen/{privcmd,evtchn,gntdev}.c. The list of functions itself is extracted from QEMU's
// sources (tools/qemu-xen-calls); the test fails when a function there has no entry here.
//
// phase: open (opens a device node or socket: QEMU does it in xen_init and machine/device init,
// before xen_setup_post restricts; a handle opened later is not restricted), restrict, run,
// close (no request to a driver).

const PRIVCMD = '/dev/xen/privcmd (/proc/xen/privcmd if absent)';
/** What each library's handle becomes once xentoolcore_restrict_all has run. */
const AFTER = {
  privcmd:
    'Restricted fd: the kernel admits the request only for the restricted domid (EPERM otherwise).',
  evtchn: 'Restricted fd: binds only to the restricted domid (EACCES otherwise).',
  devnull:
    'The fd is /dev/null (dup2): ioctl fails with ENOTTY, write with EBADF, read sees EOF; the request never reaches Xen.',
  xenstore:
    'The connection fd is /dev/null (dup2): the request fails (write EBADF) without reaching xenstored.',
  none: 'Unchanged (no request to a Xen driver).',
};

const xs = (msg) => ({
  phase: 'run',
  kernel: `One xenstore wire message (${msg}) written to and answered on the handle's connection; no Xen driver ioctl.`,
  reaches: [],
  restricted: AFTER.xenstore,
});
const hypercall = (op) => ({
  phase: 'run',
  kernel: `IOCTL_PRIVCMD_HYPERCALL on libxencall's privcmd fd: ${op}.`,
  reaches: ['IOCTL_PRIVCMD_HYPERCALL', op],
  restricted: AFTER.devnull,
});
const dmop = (op) => ({
  phase: 'run',
  kernel: `IOCTL_PRIVCMD_DM_OP on the devicemodel privcmd fd: __HYPERVISOR_dm_op, XEN_DMOP_${op}.`,
  reaches: ['IOCTL_PRIVCMD_DM_OP', '__HYPERVISOR_dm_op', `XEN_DMOP_${op}`],
  restricted: AFTER.privcmd,
});
const close = (what) => ({
  phase: 'close',
  kernel: what,
  reaches: [],
  restricted: AFTER.none,
});

/** @type {Record<string, {phase: string, kernel: string, reaches: string[], restricted: string}>} */
export const CALLS = {
  // libxenctrl
  xc_interface_open: {
    phase: 'open',
    kernel: `xencall_open: open ${PRIVCMD} and /dev/xen/hypercall (ENOENT tolerated); xenforeignmemory_open and xendevicemodel_open as in their rows. All four fds are registered with xentoolcore.`,
    reaches: ['IOCTL_PRIVCMD_UNIMPLEMENTED', 'IOCTL_PRIVCMD_DM_OP'],
    restricted:
      'The xencall fds become /dev/null; its foreignmemory and devicemodel fds get IOCTL_PRIVCMD_RESTRICT.',
  },
  xc_interface_close: close('close(2) of its xencall, foreignmemory and devicemodel fds.'),
  xc_set_hvm_param: hypercall('HVMOP_set_param'),
  xc_get_hvm_param: hypercall('HVMOP_get_param'),
  xc_hvm_param_get: hypercall('HVMOP_get_param'),
  xc_domain_populate_physmap_exact: hypercall('XENMEM_populate_physmap'),
  xc_domain_shutdown: hypercall('SCHEDOP_remote_shutdown'),
  xc_physdev_map_pirq: hypercall('PHYSDEVOP_map_pirq'),
  xc_physdev_map_pirq_msi: hypercall('PHYSDEVOP_map_pirq'),
  xc_physdev_unmap_pirq: hypercall('PHYSDEVOP_unmap_pirq'),
  xc_domain_bind_pt_pci_irq: hypercall('XEN_DOMCTL_bind_pt_irq'),
  xc_domain_update_msi_irq: hypercall('XEN_DOMCTL_bind_pt_irq'),
  xc_domain_unbind_pt_irq: hypercall('XEN_DOMCTL_unbind_pt_irq'),
  xc_domain_unbind_msi_irq: hypercall('XEN_DOMCTL_unbind_pt_irq'),
  xc_domain_memory_mapping: hypercall('XEN_DOMCTL_memory_mapping'),
  xc_domain_ioport_mapping: hypercall('XEN_DOMCTL_ioport_mapping'),
  xc_domain_iomem_permission: hypercall('XEN_DOMCTL_iomem_permission'),

  // libxendevicemodel
  xendevicemodel_open: {
    phase: 'open',
    kernel: `xencall_open (${PRIVCMD} and /dev/xen/hypercall, the fallback transport), then open /dev/xen/privcmd and probe it with IOCTL_PRIVCMD_DM_OP for DOMID_INVALID with 0 buffers; if the probe fails the fd is closed and every DM_OP goes through IOCTL_PRIVCMD_HYPERCALL.`,
    reaches: ['IOCTL_PRIVCMD_DM_OP'],
    restricted:
      'Its privcmd fd gets IOCTL_PRIVCMD_RESTRICT; its xencall fds become /dev/null (so the HYPERCALL fallback is gone).',
  },
  xendevicemodel_create_ioreq_server: dmop('create_ioreq_server'),
  xendevicemodel_get_ioreq_server_info: dmop('get_ioreq_server_info'),
  xendevicemodel_map_io_range_to_ioreq_server: dmop('map_io_range_to_ioreq_server'),
  xendevicemodel_unmap_io_range_from_ioreq_server: dmop('unmap_io_range_from_ioreq_server'),
  xendevicemodel_map_pcidev_to_ioreq_server: dmop('map_io_range_to_ioreq_server'),
  xendevicemodel_unmap_pcidev_from_ioreq_server: dmop('unmap_io_range_from_ioreq_server'),
  xendevicemodel_set_ioreq_server_state: dmop('set_ioreq_server_state'),
  xendevicemodel_destroy_ioreq_server: dmop('destroy_ioreq_server'),
  xendevicemodel_track_dirty_vram: dmop('track_dirty_vram'),
  xendevicemodel_set_pci_intx_level: dmop('set_pci_intx_level'),
  xendevicemodel_set_isa_irq_level: dmop('set_isa_irq_level'),
  xendevicemodel_set_pci_link_route: dmop('set_pci_link_route'),
  xendevicemodel_modified_memory: dmop('modified_memory'),
  xendevicemodel_set_mem_type: dmop('set_mem_type'),
  xendevicemodel_inject_msi: dmop('inject_msi'),
  xendevicemodel_shutdown: dmop('remote_shutdown'),
  xendevicemodel_relocate_memory: dmop('relocate_memory'),
  xendevicemodel_pin_memory_cacheattr: dmop('pin_memory_cacheattr'),

  // libxenforeignmemory
  xenforeignmemory_open: {
    phase: 'open',
    kernel: `open ${PRIVCMD}, then IOCTL_PRIVCMD_UNIMPLEMENTED to learn which errno an unknown ioctl gets (ENOTTY on Linux 6.1; the open fails if it succeeds).`,
    reaches: ['IOCTL_PRIVCMD_UNIMPLEMENTED'],
    restricted: 'Its fd gets IOCTL_PRIVCMD_RESTRICT.',
  },
  xenforeignmemory_close: close('close(2) of its privcmd fd.'),
  xenforeignmemory_map: {
    phase: 'run',
    kernel:
      'mmap(2) of the privcmd fd, then IOCTL_PRIVCMD_MMAPBATCH_V2 (MMAPBATCH when V2 gets the unimplemented errno).',
    reaches: [
      'IOCTL_PRIVCMD_MMAPBATCH_V2',
      'IOCTL_PRIVCMD_MMAPBATCH',
      'XENMEM_add_to_physmap_range (foreign map)',
    ],
    restricted: AFTER.privcmd,
  },
  xenforeignmemory_map2: {
    phase: 'run',
    kernel: 'As xenforeignmemory_map, at a caller-chosen address (the mapcache).',
    reaches: [
      'IOCTL_PRIVCMD_MMAPBATCH_V2',
      'IOCTL_PRIVCMD_MMAPBATCH',
      'XENMEM_add_to_physmap_range (foreign map)',
    ],
    restricted: AFTER.privcmd,
  },
  xenforeignmemory_unmap: close('munmap(2); no ioctl.'),
  xenforeignmemory_map_resource: {
    phase: 'run',
    kernel:
      'mmap(2) of the privcmd fd, then IOCTL_PRIVCMD_MMAP_RESOURCE (the kernel issues XENMEM_acquire_resource).',
    reaches: ['IOCTL_PRIVCMD_MMAP_RESOURCE', 'XENMEM_acquire_resource'],
    restricted: AFTER.privcmd,
  },
  xenforeignmemory_unmap_resource: close('munmap(2); no ioctl.'),

  // libxenevtchn
  xenevtchn_open: {
    phase: 'open',
    kernel: 'open /dev/xen/evtchn (O_CLOEXEC); no ioctl. The fd is registered with xentoolcore.',
    reaches: [],
    restricted: 'Its fd gets IOCTL_EVTCHN_RESTRICT_DOMID.',
  },
  xenevtchn_close: close('close(2); the driver unbinds the ports the fd bound.'),
  xenevtchn_fd: close('Returns the fd (for QEMU to poll); no syscall.'),
  xenevtchn_pending: {
    phase: 'run',
    kernel: 'read(2) of one pending port from the evtchn fd; no ioctl.',
    reaches: [],
    restricted: AFTER.none,
  },
  xenevtchn_unmask: {
    phase: 'run',
    kernel: 'write(2) of the port to the evtchn fd; the driver unmasks only ports the fd bound.',
    reaches: ['EVTCHNOP_unmask'],
    restricted: AFTER.none,
  },
  xenevtchn_bind_interdomain: {
    phase: 'run',
    kernel: 'IOCTL_EVTCHN_BIND_INTERDOMAIN (the driver issues EVTCHNOP_bind_interdomain).',
    reaches: ['IOCTL_EVTCHN_BIND_INTERDOMAIN', 'EVTCHNOP_bind_interdomain'],
    restricted: AFTER.evtchn,
  },
  xenevtchn_notify: {
    phase: 'run',
    kernel: 'IOCTL_EVTCHN_NOTIFY (EVTCHNOP_send), only on ports the fd bound.',
    reaches: ['IOCTL_EVTCHN_NOTIFY', 'EVTCHNOP_send'],
    restricted: AFTER.none,
  },
  xenevtchn_unbind: {
    phase: 'run',
    kernel: 'IOCTL_EVTCHN_UNBIND (EVTCHNOP_close), only on ports the fd bound.',
    reaches: ['IOCTL_EVTCHN_UNBIND', 'EVTCHNOP_close'],
    restricted: AFTER.none,
  },

  // libxengnttab
  xengnttab_open: {
    phase: 'open',
    kernel:
      'open /dev/xen/gntdev (O_CLOEXEC); no ioctl. The fd is registered with xentoolcore; gntdev has no domid restriction.',
    reaches: [],
    restricted: 'The fd becomes /dev/null: no grant mapping or copy after the restriction.',
  },
  xengnttab_close: close('close(2).'),
  xengnttab_set_max_grants: {
    phase: 'run',
    kernel:
      'IOCTL_GNTDEV_SET_MAX_GRANTS; Linux 6.1 gntdev does not implement it (ENOTTY), which the library ignores.',
    reaches: ['IOCTL_GNTDEV_SET_MAX_GRANTS'],
    restricted: AFTER.devnull,
  },
  xengnttab_map_domain_grant_refs: {
    phase: 'run',
    kernel:
      'IOCTL_GNTDEV_MAP_GRANT_REF, then mmap(2) of the gntdev fd (the driver issues GNTTABOP_map_grant_ref).',
    reaches: ['IOCTL_GNTDEV_MAP_GRANT_REF', 'GNTTABOP_map_grant_ref'],
    restricted: AFTER.devnull,
  },
  xengnttab_unmap: {
    phase: 'run',
    kernel: 'IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR, munmap(2), IOCTL_GNTDEV_UNMAP_GRANT_REF.',
    reaches: ['IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR', 'IOCTL_GNTDEV_UNMAP_GRANT_REF'],
    restricted: AFTER.devnull,
  },
  xengnttab_grant_copy: {
    phase: 'run',
    kernel: 'IOCTL_GNTDEV_GRANT_COPY (the driver issues GNTTABOP_copy).',
    reaches: ['IOCTL_GNTDEV_GRANT_COPY', 'GNTTABOP_copy'],
    restricted: AFTER.devnull,
  },

  // libxentoolcore
  xentoolcore_restrict_all: {
    phase: 'restrict',
    kernel:
      "For every handle the process holds, in turn (stopping at the first failure): IOCTL_PRIVCMD_RESTRICT on devicemodel's and foreignmemory's privcmd fds, IOCTL_EVTCHN_RESTRICT_DOMID on evtchn fds, and open(/dev/null) + dup2(2) over xencall's privcmd and /dev/xen/hypercall fds, gntdev fds and xenstore connections.",
    reaches: ['IOCTL_PRIVCMD_RESTRICT', 'IOCTL_EVTCHN_RESTRICT_DOMID'],
    restricted: 'A second call with the same domid succeeds; another domid is EINVAL (privcmd).',
  },

  // libxenstore
  xs_open: {
    phase: 'open',
    kernel:
      'connect(2) to xenstored\'s unix socket ($XENSTORED_PATH, else "$XEN_RUN_STORED/socket"), else open /dev/xen/xenbus; no ioctl. The fd is registered with xentoolcore.',
    reaches: [],
    restricted: AFTER.xenstore,
  },
  xs_daemon_open: {
    phase: 'open',
    kernel: 'xs_open(0) (Xen 4.17 keeps the name for compatibility).',
    reaches: [],
    restricted: AFTER.xenstore,
  },
  xs_close: close('close(2) of the connection and the watch pipe; joins the reader thread.'),
  xs_daemon_close: close('xs_close.'),
  xs_fileno: close('Creates the watch pipe on first use and returns its read end; no request.'),
  xs_check_watch: close('Reads a queued watch event (from the watch pipe); no request.'),
  xs_read_watch: close('Takes the next watch event the connection delivered; no request.'),
  xs_read: xs('XS_READ'),
  xs_write: xs('XS_WRITE'),
  xs_mkdir: xs('XS_MKDIR'),
  xs_rm: xs('XS_RM'),
  xs_directory: xs('XS_DIRECTORY'),
  xs_set_permissions: xs('XS_SET_PERMS'),
  xs_watch: xs('XS_WATCH'),
  xs_unwatch: xs('XS_UNWATCH'),
  xs_transaction_start: xs('XS_TRANSACTION_START'),
  xs_transaction_end: xs('XS_TRANSACTION_END'),
  xs_get_domain_path: xs('XS_GET_DOMAIN_PATH'),
};
