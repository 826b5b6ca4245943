/*
 * dmop-capture layout: sizeof and offsetof of every struct the layout module of
 * @xen-depriv/dmop-abi describes, the ioctl numbers and the constants, as gcc computes them
 * from Debian's Xen 4.17 headers (libxen-dev). Prints one JSON document on stdout.
 */
#define __XEN_TOOLS__ 1
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <xenctrl.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/ioreq.h>
#include <xen/memory.h>
#define __user
#include <xen/sys/evtchn.h>
#include <xen/sys/privcmd.h>

static int first_struct = 1, first_field;

static void begin(const char *name, size_t size) {
  printf("%s\n    \"%s\": { \"size\": %zu, \"fields\": {", first_struct ? "" : ",", name, size);
  first_struct = 0;
  first_field = 1;
}
static void field(const char *name, size_t off, size_t size) {
  printf("%s\"%s\": [%zu, %zu]", first_field ? " " : ", ", name, off, size);
  first_field = 0;
}
static void end(void) { printf(" } }"); }

#define STR_(x) #x
#define STR(x) STR_(x)
#define B(T) begin(STR(T), sizeof(T))
#define F(T, f) field(#f, offsetof(T, f), sizeof(((T *)0)->f))
#define FN(T, n, f) field(n, offsetof(T, f), sizeof(((T *)0)->f))

static int first_const;
static void cbegin(const char *section) {
  printf("\n  },\n  \"%s\": {", section);
  first_const = 1;
}
static void constant(const char *name, unsigned long long value) {
  printf("%s\n    \"%s\": %llu", first_const ? "" : ",", name, value);
  first_const = 0;
}
#define C(x) constant(#x, (unsigned long long)(x))

int main(void) {
  printf("{\n  \"source\": \"gcc sizeof/offsetof over Debian libxen-dev headers via tools/dmop-capture\",\n  \"structs\": {");
  B(struct xen_dm_op); F(struct xen_dm_op, op); F(struct xen_dm_op, pad); F(struct xen_dm_op, u); end();
  B(struct xen_dm_op_buf); F(struct xen_dm_op_buf, h); F(struct xen_dm_op_buf, size); end();
#define T struct xen_dm_op_create_ioreq_server
  B(T); F(T, handle_bufioreq); F(T, pad); F(T, id); end();
#undef T
#define T struct xen_dm_op_get_ioreq_server_info
  B(T); F(T, id); F(T, flags); F(T, bufioreq_port); F(T, ioreq_gfn); F(T, bufioreq_gfn); end();
#undef T
#define T struct xen_dm_op_ioreq_server_range
  B(T); F(T, id); F(T, pad); F(T, type); F(T, start); F(T, end); end();
#undef T
#define T struct xen_dm_op_set_ioreq_server_state
  B(T); F(T, id); F(T, enabled); F(T, pad); end();
#undef T
#define T struct xen_dm_op_destroy_ioreq_server
  B(T); F(T, id); F(T, pad); end();
#undef T
#define T struct xen_dm_op_track_dirty_vram
  B(T); F(T, nr); F(T, pad); F(T, first_pfn); end();
#undef T
#define T struct xen_dm_op_set_pci_intx_level
  B(T); F(T, domain); F(T, bus); F(T, device); F(T, intx); F(T, level); end();
#undef T
#define T struct xen_dm_op_set_isa_irq_level
  B(T); F(T, isa_irq); F(T, level); end();
#undef T
#define T struct xen_dm_op_set_pci_link_route
  B(T); F(T, link); F(T, isa_irq); end();
#undef T
#define T struct xen_dm_op_modified_memory
  B(T); F(T, nr_extents); F(T, opaque); end();
#undef T
#define T struct xen_dm_op_modified_memory_extent
  B(T); F(T, nr); F(T, pad); F(T, first_pfn); end();
#undef T
#define T struct xen_dm_op_set_mem_type
  B(T); F(T, nr); F(T, mem_type); F(T, pad); F(T, first_pfn); end();
#undef T
#define T struct xen_dm_op_inject_event
  B(T); F(T, vcpuid); F(T, vector); F(T, type); F(T, insn_len); F(T, pad0); F(T, error_code); F(T, pad1); F(T, cr2); end();
#undef T
#define T struct xen_dm_op_inject_msi
  B(T); F(T, data); F(T, pad); F(T, addr); end();
#undef T
#define T struct xen_dm_op_map_mem_type_to_ioreq_server
  B(T); F(T, id); F(T, type); F(T, flags); F(T, opaque); end();
#undef T
#define T struct xen_dm_op_remote_shutdown
  B(T); F(T, reason); end();
#undef T
#define T struct xen_dm_op_relocate_memory
  B(T); F(T, size); F(T, pad); F(T, src_gfn); F(T, dst_gfn); end();
#undef T
#define T struct xen_dm_op_pin_memory_cacheattr
  B(T); F(T, start); F(T, end); F(T, type); F(T, pad); end();
#undef T
#define T struct xen_dm_op_set_irq_level
  B(T); F(T, irq); F(T, level); F(T, pad); end();
#undef T
#define T struct xen_dm_op_nr_vcpus
  B(T); F(T, vcpus); end();
#undef T
#define T struct privcmd_hypercall
  B(T); F(T, op); F(T, arg); end();
#undef T
#define T struct privcmd_mmap_entry
  B(T); F(T, va); F(T, mfn); F(T, npages); end();
#undef T
#define T struct privcmd_mmap
  B(T); F(T, num); F(T, dom); F(T, entry); end();
#undef T
#define T struct privcmd_mmapbatch
  B(T); F(T, num); F(T, dom); F(T, addr); F(T, arr); end();
#undef T
#define T struct privcmd_mmapbatch_v2
  B(T); F(T, num); F(T, dom); F(T, addr); F(T, arr); F(T, err); end();
#undef T
#define T struct privcmd_dm_op_buf
  B(T); F(T, uptr); F(T, size); end();
#undef T
#define T struct privcmd_dm_op
  B(T); F(T, dom); F(T, num); F(T, ubufs); end();
#undef T
#define T struct privcmd_mmap_resource
  B(T); F(T, dom); F(T, type); F(T, id); F(T, idx); F(T, num); F(T, addr); end();
#undef T
#define T struct ioctl_evtchn_bind_virq
  B(T); F(T, virq); end();
#undef T
#define T struct ioctl_evtchn_bind_interdomain
  B(T); F(T, remote_domain); F(T, remote_port); end();
#undef T
#define T struct ioctl_evtchn_bind_unbound_port
  B(T); F(T, remote_domain); end();
#undef T
#define T struct ioctl_evtchn_unbind
  B(T); F(T, port); end();
#undef T
#define T struct ioctl_evtchn_notify
  B(T); F(T, port); end();
#undef T
#define T struct ioctl_evtchn_restrict_domid
  B(T); F(T, domid); end();
#undef T

  cbegin("ioctls");
  C(IOCTL_PRIVCMD_HYPERCALL); C(IOCTL_PRIVCMD_MMAP); C(IOCTL_PRIVCMD_MMAPBATCH); C(IOCTL_PRIVCMD_MMAPBATCH_V2);
  C(IOCTL_PRIVCMD_DM_OP); C(IOCTL_PRIVCMD_RESTRICT); C(IOCTL_PRIVCMD_MMAP_RESOURCE); C(IOCTL_PRIVCMD_UNIMPLEMENTED);
  C(IOCTL_EVTCHN_BIND_VIRQ); C(IOCTL_EVTCHN_BIND_INTERDOMAIN); C(IOCTL_EVTCHN_BIND_UNBOUND_PORT);
  C(IOCTL_EVTCHN_UNBIND); C(IOCTL_EVTCHN_NOTIFY); C(IOCTL_EVTCHN_RESET); C(IOCTL_EVTCHN_RESTRICT_DOMID);

  cbegin("constants");
  C(XEN_DMOP_create_ioreq_server); C(XEN_DMOP_get_ioreq_server_info); C(XEN_DMOP_map_io_range_to_ioreq_server);
  C(XEN_DMOP_unmap_io_range_from_ioreq_server); C(XEN_DMOP_set_ioreq_server_state); C(XEN_DMOP_destroy_ioreq_server);
  C(XEN_DMOP_track_dirty_vram); C(XEN_DMOP_set_pci_intx_level); C(XEN_DMOP_set_isa_irq_level);
  C(XEN_DMOP_set_pci_link_route); C(XEN_DMOP_modified_memory); C(XEN_DMOP_set_mem_type); C(XEN_DMOP_inject_event);
  C(XEN_DMOP_inject_msi); C(XEN_DMOP_map_mem_type_to_ioreq_server); C(XEN_DMOP_remote_shutdown);
  C(XEN_DMOP_relocate_memory); C(XEN_DMOP_pin_memory_cacheattr); C(XEN_DMOP_set_irq_level); C(XEN_DMOP_nr_vcpus);
  C(XEN_DMOP_no_gfns); C(XEN_DMOP_IO_RANGE_PORT); C(XEN_DMOP_IO_RANGE_MEMORY); C(XEN_DMOP_IO_RANGE_PCI);
  C(XEN_DMOP_EVENT_ext_int); C(XEN_DMOP_EVENT_nmi); C(XEN_DMOP_EVENT_hw_exc); C(XEN_DMOP_EVENT_sw_int);
  C(XEN_DMOP_EVENT_pri_sw_exc); C(XEN_DMOP_EVENT_sw_exc); C(XEN_DMOP_IOREQ_MEM_ACCESS_READ);
  C(XEN_DMOP_IOREQ_MEM_ACCESS_WRITE); C(XEN_DMOP_MEM_CACHEATTR_UC); C(XEN_DMOP_MEM_CACHEATTR_WC);
  C(XEN_DMOP_MEM_CACHEATTR_WT); C(XEN_DMOP_MEM_CACHEATTR_WP); C(XEN_DMOP_MEM_CACHEATTR_WB);
  C(XEN_DMOP_MEM_CACHEATTR_UCM); C(XEN_DMOP_DELETE_MEM_CACHEATTR);
  C(HVMMEM_ram_rw); C(HVMMEM_ram_ro); C(HVMMEM_mmio_dm); C(HVMMEM_unused);
  C(HVMMEM_ioreq_server);
  C(HVM_IOREQSRV_BUFIOREQ_OFF); C(HVM_IOREQSRV_BUFIOREQ_LEGACY); C(HVM_IOREQSRV_BUFIOREQ_ATOMIC);
  C(IOREQ_TYPE_PIO); C(IOREQ_TYPE_COPY); C(IOREQ_TYPE_PCI_CONFIG);
  C(DOMID_FIRST_RESERVED); C(DOMID_SELF); C(DOMID_INVALID); C(__HYPERVISOR_dm_op);
  C(XENMEM_resource_ioreq_server); C(XENMEM_resource_ioreq_server_frame_bufioreq);
  C(PRIVCMD_MMAPBATCH_MFN_ERROR); C(PRIVCMD_MMAPBATCH_PAGED_ERROR);
  printf("\n  }\n}\n");
  return 0;
}
