/* A device-model-like client of Debian's libxendevicemodel and libxenevtchn, for the recorder's
 * test: it issues the requests a QEMU would, plus a few a policy must refuse. */
#include <stdio.h>
#include <stdlib.h>
#include <xendevicemodel.h>
#include <xenevtchn.h>
#include <xen/hvm/hvm_op.h>

int main(int argc, char **argv) {
  domid_t domid = argc > 1 ? (domid_t)atoi(argv[1]) : 7;
  xendevicemodel_handle *dmod = xendevicemodel_open(NULL, 0);
  xenevtchn_handle *xce = xenevtchn_open(NULL, 0);
  if (dmod == NULL || xce == NULL) {
    perror("open");
    return 1;
  }
  ioservid_t id = 0;
  xendevicemodel_create_ioreq_server(dmod, domid, 2 /* HVM_IOREQSRV_BUFIOREQ_ATOMIC */, &id);
  xendevicemodel_map_io_range_to_ioreq_server(dmod, domid, id, 0, 0x1f0, 0x1f7);
  xendevicemodel_set_ioreq_server_state(dmod, domid, id, 1);
  xendevicemodel_inject_msi(dmod, domid, 0xfee01000, 0x4041);
  /* Refused by the qemu-xen-hvm profile: MSI outside the APIC window, a memory type QEMU never sets. */
  xendevicemodel_inject_msi(dmod, domid, 0xfed00000, 0x4041);
  xendevicemodel_set_mem_type(dmod, domid, HVMMEM_mmio_dm, 0x100, 1);
  xendevicemodel_restrict(dmod, domid);
  xenevtchn_restrict(xce, domid);
  xenevtchn_bind_interdomain(xce, domid, 5);
  /* Refused by the kernel once restricted: another domid. */
  xendevicemodel_set_isa_irq_level(dmod, (domid_t)(domid + 1), 4, 1);
  xenevtchn_bind_interdomain(xce, (domid_t)(domid + 1), 5);
  xendevicemodel_close(dmod);
  xenevtchn_close(xce);
  return 0;
}
