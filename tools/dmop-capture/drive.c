/*
 * dmop-capture driver: calls every function of Debian's libxendevicemodel (and the
 * libxenforeignmemory calls memmap relies on) with distinctive arguments, under shim.so,
 * and prints one JSON document of golden vectors on stdout.
 *
 * Each vector names the library function, its arguments, the equivalent encodeDmOp input
 * ("dmop"), every ioctl the call made (recorded by the shim, with the fake reply the driver
 * queued) and what the library returned to its caller ("outputs"), so tests can check both
 * directions: our encoding against the library's, and our decoding of the same reply.
 *
 * Values are chosen so that every byte of a field differs and 64-bit fields exceed 2^53.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xendevicemodel.h>
#include <xenforeignmemory.h>

typedef void (*reply_fn)(int, int, int, const void **, const size_t *);
typedef char *(*take_fn)(void);
static reply_fn capture_reply;
static take_fn capture_take;
static int first = 1;

static void reply(int ret, int err, int nbufs, const void **bufs, const size_t *sizes) {
  capture_reply(ret, err, nbufs, bufs, sizes);
}

static void reply1(const struct xen_dm_op *op) {
  const void *b[1] = { op };
  size_t s[1] = { sizeof(*op) };
  reply(0, 0, 1, b, s);
}

/* args, dmop and outputs are JSON object bodies (without braces); dmop NULL when no DM_OP. */
static void emit(const char *fn, const char *args, const char *dmop, int rc, int err, const char *outputs) {
  char *ioctls = capture_take();
  printf("%s\n    {\"fn\":\"%s\",\"args\":{%s},\"dmop\":", first ? "" : ",", fn, args);
  if (dmop) printf("{%s}", dmop);
  else printf("null");
  printf(",\"ioctls\":%s,\"rc\":%d,\"errno\":%d,\"outputs\":{%s}}", ioctls, rc, rc < 0 ? err : 0, outputs);
  free(ioctls);
  first = 0;
}

#define S(...) ({ static char _b[1024]; snprintf(_b, sizeof(_b), __VA_ARGS__); _b; })
#define U64 "\"0x%016" PRIx64 "\""

int main(void) {
  capture_reply = (reply_fn)dlsym(RTLD_DEFAULT, "capture_reply");
  capture_take = (take_fn)dlsym(RTLD_DEFAULT, "capture_take");
  if (!capture_reply || !capture_take) {
    fprintf(stderr, "drive: run me with LD_PRELOAD=shim.so\n");
    return 2;
  }
  printf("{\n  \"source\": \"Debian libxendevicemodel/libxenforeignmemory via tools/dmop-capture\",\n  \"vectors\": [");

  xendevicemodel_handle *dm = xendevicemodel_open(NULL, 0);
  if (!dm) {
    perror("xendevicemodel_open");
    return 1;
  }
  emit("xendevicemodel_open", "", NULL, 0, 0, "");

  const domid_t dom = 0x3a5c;
  const ioservid_t id = 0xa1b2;
  int rc;
  struct xen_dm_op r;
  char a[512], o[512];

  /* create_ioreq_server: the reply carries the id; HVM_IOREQSRV_BUFIOREQ_ATOMIC. */
  {
    ioservid_t out = 0;
    memset(&r, 0, sizeof(r));
    r.op = XEN_DMOP_create_ioreq_server;
    r.u.create_ioreq_server.handle_bufioreq = 2;
    r.u.create_ioreq_server.id = 0xbeef;
    reply1(&r);
    rc = xendevicemodel_create_ioreq_server(dm, dom, 2, &out);
    emit("xendevicemodel_create_ioreq_server", S("\"domid\":%u,\"handleBufioreq\":2", dom),
         "\"op\":\"create_ioreq_server\",\"handleBufioreq\":2", rc, errno, S("\"id\":%u", out));
  }
  /* get_ioreq_server_info, all outputs requested: flags 0. */
  {
    xen_pfn_t g = 0, bg = 0;
    evtchn_port_t port = 0;
    memset(&r, 0, sizeof(r));
    r.op = XEN_DMOP_get_ioreq_server_info;
    r.u.get_ioreq_server_info.id = id;
    r.u.get_ioreq_server_info.bufioreq_port = 0xc3d4e5f6;
    r.u.get_ioreq_server_info.ioreq_gfn = 0xfedcba9876543210ull;
    r.u.get_ioreq_server_info.bufioreq_gfn = 0x0123456789abcdefull;
    reply1(&r);
    rc = xendevicemodel_get_ioreq_server_info(dm, dom, id, &g, &bg, &port);
    snprintf(o, sizeof(o), "\"ioreqGfn\":" U64 ",\"bufioreqGfn\":" U64 ",\"bufioreqPort\":%u", (uint64_t)g,
             (uint64_t)bg, port);
    emit("xendevicemodel_get_ioreq_server_info", S("\"domid\":%u,\"id\":%u,\"gfns\":true", dom, id),
         S("\"op\":\"get_ioreq_server_info\",\"id\":%u,\"flags\":0", id), rc, errno, o);
  }
  /* get_ioreq_server_info without gfns: the library sets XEN_DMOP_no_gfns. */
  {
    evtchn_port_t port = 0;
    memset(&r, 0, sizeof(r));
    r.op = XEN_DMOP_get_ioreq_server_info;
    r.u.get_ioreq_server_info.id = id;
    r.u.get_ioreq_server_info.flags = XEN_DMOP_no_gfns;
    r.u.get_ioreq_server_info.bufioreq_port = 0x0badf00d;
    reply1(&r);
    rc = xendevicemodel_get_ioreq_server_info(dm, dom, id, NULL, NULL, &port);
    emit("xendevicemodel_get_ioreq_server_info", S("\"domid\":%u,\"id\":%u,\"gfns\":false", dom, id),
         S("\"op\":\"get_ioreq_server_info\",\"id\":%u,\"flags\":1", id), rc, errno, S("\"bufioreqPort\":%u", port));
  }
  /* map/unmap io ranges: MMIO at the top of the address space, a port range. */
  {
    rc = xendevicemodel_map_io_range_to_ioreq_server(dm, dom, id, 1, 0xfffffffffffff000ull, 0xffffffffffffffffull);
    snprintf(a, sizeof(a), "\"domid\":%u,\"id\":%u,\"isMmio\":true,\"start\":" U64 ",\"end\":" U64, dom, id,
             (uint64_t)0xfffffffffffff000ull, (uint64_t)0xffffffffffffffffull);
    snprintf(o, sizeof(o), "\"op\":\"map_io_range_to_ioreq_server\",\"id\":%u,\"type\":1,\"start\":" U64 ",\"end\":" U64,
             id, (uint64_t)0xfffffffffffff000ull, (uint64_t)0xffffffffffffffffull);
    emit("xendevicemodel_map_io_range_to_ioreq_server", a, o, rc, errno, "");

    rc = xendevicemodel_map_io_range_to_ioreq_server(dm, dom, id, 0, 0x3f8, 0x3ff);
    snprintf(a, sizeof(a), "\"domid\":%u,\"id\":%u,\"isMmio\":false,\"start\":" U64 ",\"end\":" U64, dom, id,
             (uint64_t)0x3f8, (uint64_t)0x3ff);
    snprintf(o, sizeof(o), "\"op\":\"map_io_range_to_ioreq_server\",\"id\":%u,\"type\":0,\"start\":" U64 ",\"end\":" U64,
             id, (uint64_t)0x3f8, (uint64_t)0x3ff);
    emit("xendevicemodel_map_io_range_to_ioreq_server", a, o, rc, errno, "");

    rc = xendevicemodel_unmap_io_range_from_ioreq_server(dm, dom, id, 1, 0x00f1e2d3c4b5a697ull, 0x00f1e2d3c4b5a6ffull);
    snprintf(a, sizeof(a), "\"domid\":%u,\"id\":%u,\"isMmio\":true,\"start\":" U64 ",\"end\":" U64, dom, id,
             (uint64_t)0x00f1e2d3c4b5a697ull, (uint64_t)0x00f1e2d3c4b5a6ffull);
    snprintf(o, sizeof(o),
             "\"op\":\"unmap_io_range_from_ioreq_server\",\"id\":%u,\"type\":1,\"start\":" U64 ",\"end\":" U64, id,
             (uint64_t)0x00f1e2d3c4b5a697ull, (uint64_t)0x00f1e2d3c4b5a6ffull);
    emit("xendevicemodel_unmap_io_range_from_ioreq_server", a, o, rc, errno, "");
  }
  /* map_mem_type_to_ioreq_server: HVMMEM_ioreq_server, read and write. */
  {
    rc = xendevicemodel_map_mem_type_to_ioreq_server(dm, dom, id, HVMMEM_ioreq_server, XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);
    snprintf(o, sizeof(o), "\"op\":\"map_mem_type_to_ioreq_server\",\"id\":%u,\"type\":%u,\"flags\":2", id,
             HVMMEM_ioreq_server);
    emit("xendevicemodel_map_mem_type_to_ioreq_server",
         S("\"domid\":%u,\"id\":%u,\"type\":%u,\"flags\":2", dom, id, HVMMEM_ioreq_server), o, rc, errno, "");
    /* The library itself refuses read forwarding and other types with EINVAL, before any ioctl. */
    errno = 0;
    rc = xendevicemodel_map_mem_type_to_ioreq_server(dm, dom, id, HVMMEM_ioreq_server, 3);
    emit("xendevicemodel_map_mem_type_to_ioreq_server", S("\"domid\":%u,\"id\":%u,\"type\":%u,\"flags\":3", dom, id, HVMMEM_ioreq_server),
         NULL, rc, errno, "");
    errno = 0;
    rc = xendevicemodel_map_mem_type_to_ioreq_server(dm, dom, id, HVMMEM_mmio_dm, 2);
    emit("xendevicemodel_map_mem_type_to_ioreq_server", S("\"domid\":%u,\"id\":%u,\"type\":%u,\"flags\":2", dom, id, HVMMEM_mmio_dm),
         NULL, rc, errno, "");
  }
  /* map/unmap pcidev: the library packs XEN_DMOP_PCI_SBDF into start == end. */
  {
    uint64_t sbdf = XEN_DMOP_PCI_SBDF((uint64_t)0xabcd, 0xef, 0x1f, 7);
    rc = xendevicemodel_map_pcidev_to_ioreq_server(dm, dom, id, 0xabcd, 0xef, 0x1f, 7);
    snprintf(o, sizeof(o), "\"op\":\"map_io_range_to_ioreq_server\",\"id\":%u,\"type\":2,\"start\":" U64 ",\"end\":" U64,
             id, sbdf, sbdf);
    emit("xendevicemodel_map_pcidev_to_ioreq_server",
         S("\"domid\":%u,\"id\":%u,\"segment\":43981,\"bus\":239,\"device\":31,\"function\":7", dom, id), o, rc, errno, "");
    sbdf = XEN_DMOP_PCI_SBDF((uint64_t)0x1234, 0x56, 0x15, 3);
    rc = xendevicemodel_unmap_pcidev_from_ioreq_server(dm, dom, id, 0x1234, 0x56, 0x15, 3);
    snprintf(o, sizeof(o),
             "\"op\":\"unmap_io_range_from_ioreq_server\",\"id\":%u,\"type\":2,\"start\":" U64 ",\"end\":" U64, id, sbdf,
             sbdf);
    emit("xendevicemodel_unmap_pcidev_from_ioreq_server",
         S("\"domid\":%u,\"id\":%u,\"segment\":4660,\"bus\":86,\"device\":21,\"function\":3", dom, id), o, rc, errno, "");
  }
  /* The library refuses a device above 0x1f or a function above 7 with EINVAL, before any ioctl. */
  errno = 0;
  rc = xendevicemodel_map_pcidev_to_ioreq_server(dm, dom, id, 0, 0, 0x20, 0);
  emit("xendevicemodel_map_pcidev_to_ioreq_server",
       S("\"domid\":%u,\"id\":%u,\"segment\":0,\"bus\":0,\"device\":32,\"function\":0", dom, id), NULL, rc, errno, "");
  errno = 0;
  rc = xendevicemodel_unmap_pcidev_from_ioreq_server(dm, dom, id, 0, 0, 0, 8);
  emit("xendevicemodel_unmap_pcidev_from_ioreq_server",
       S("\"domid\":%u,\"id\":%u,\"segment\":0,\"bus\":0,\"device\":0,\"function\":8", dom, id), NULL, rc, errno, "");
  rc = xendevicemodel_set_ioreq_server_state(dm, dom, id, 1);
  emit("xendevicemodel_set_ioreq_server_state", S("\"domid\":%u,\"id\":%u,\"enabled\":true", dom, id),
       S("\"op\":\"set_ioreq_server_state\",\"id\":%u,\"enabled\":1", id), rc, errno, "");
  rc = xendevicemodel_destroy_ioreq_server(dm, dom, id);
  emit("xendevicemodel_destroy_ioreq_server", S("\"domid\":%u,\"id\":%u", dom, id),
       S("\"op\":\"destroy_ioreq_server\",\"id\":%u", id), rc, errno, "");
  rc = xendevicemodel_set_pci_intx_level(dm, dom, 0x1234, 0x56, 0x1f, 3, 1);
  emit("xendevicemodel_set_pci_intx_level",
       S("\"domid\":%u,\"segment\":4660,\"bus\":86,\"device\":31,\"intx\":3,\"level\":1", dom),
       "\"op\":\"set_pci_intx_level\",\"domain\":4660,\"bus\":86,\"device\":31,\"intx\":3,\"level\":1", rc, errno, "");
  rc = xendevicemodel_set_isa_irq_level(dm, dom, 15, 1);
  emit("xendevicemodel_set_isa_irq_level", S("\"domid\":%u,\"irq\":15,\"level\":1", dom),
       "\"op\":\"set_isa_irq_level\",\"isaIrq\":15,\"level\":1", rc, errno, "");
  rc = xendevicemodel_set_irq_level(dm, dom, 0x89abcdef, 1);
  emit("xendevicemodel_set_irq_level", S("\"domid\":%u,\"irq\":%u,\"level\":1", dom, 0x89abcdefu),
       S("\"op\":\"set_irq_level\",\"irq\":%u,\"level\":1", 0x89abcdefu), rc, errno, "");
  rc = xendevicemodel_set_pci_link_route(dm, dom, 3, 11);
  emit("xendevicemodel_set_pci_link_route", S("\"domid\":%u,\"link\":3,\"irq\":11", dom),
       "\"op\":\"set_pci_link_route\",\"link\":3,\"isaIrq\":11", rc, errno, "");
  {
    const uint64_t addr = 0xfedcba98fee01234ull;
    rc = xendevicemodel_inject_msi(dm, dom, addr, 0x89abcdef);
    snprintf(a, sizeof(a), "\"domid\":%u,\"addr\":" U64 ",\"data\":%u", dom, addr, 0x89abcdefu);
    snprintf(o, sizeof(o), "\"op\":\"inject_msi\",\"addr\":" U64 ",\"data\":%u", addr, 0x89abcdefu);
    emit("xendevicemodel_inject_msi", a, o, rc, errno, "");
    /* The same call refused: the library returns -1 with the ioctl's errno. */
    reply(-1, EPERM, 0, NULL, NULL);
    errno = 0;
    rc = xendevicemodel_inject_msi(dm, dom, addr, 0x89abcdef);
    emit("xendevicemodel_inject_msi", a, o, rc, errno, "");
  }
  /* track_dirty_vram: 70 pages, a 9-byte bitmap written back by the fake hypervisor. */
  {
    const uint64_t pfn = 0x0023456789abcdefull;
    unsigned long bitmap[2] = { 0, 0 };
    const unsigned char dirty[9] = { 0x01, 0x80, 0xa5, 0x5a, 0xff, 0x00, 0x3c, 0xc3, 0x2f };
    memset(&r, 0, sizeof(r));
    r.op = XEN_DMOP_track_dirty_vram;
    r.u.track_dirty_vram.first_pfn = pfn;
    r.u.track_dirty_vram.nr = 70;
    const void *b[2] = { &r, dirty };
    size_t s[2] = { sizeof(r), sizeof(dirty) };
    reply(0, 0, 2, b, s);
    rc = xendevicemodel_track_dirty_vram(dm, dom, pfn, 70, bitmap);
    snprintf(a, sizeof(a), "\"domid\":%u,\"firstPfn\":" U64 ",\"nr\":70", dom, pfn);
    snprintf(o, sizeof(o), "\"op\":\"track_dirty_vram\",\"firstPfn\":" U64 ",\"nr\":70", pfn);
    char out[64];
    snprintf(out, sizeof(out), "\"dirtyBitmap\":\"");
    for (int i = 0; i < 9; i++) snprintf(out + strlen(out), sizeof(out) - strlen(out), "%02x", ((unsigned char *)bitmap)[i]);
    strcat(out, "\"");
    emit("xendevicemodel_track_dirty_vram", a, o, rc, errno, out);
  }
  {
    const uint64_t pfn = 0x00fedcba98765432ull;
    rc = xendevicemodel_modified_memory(dm, dom, pfn, 0x89abcdef);
    snprintf(a, sizeof(a), "\"domid\":%u,\"firstPfn\":" U64 ",\"nr\":%u", dom, pfn, 0x89abcdefu);
    snprintf(o, sizeof(o), "\"op\":\"modified_memory\",\"extents\":[{\"firstPfn\":" U64 ",\"nr\":%u}]", pfn, 0x89abcdefu);
    emit("xendevicemodel_modified_memory", a, o, rc, errno, "");

    struct xen_dm_op_modified_memory_extent ext[3] = {
      { .nr = 1, .first_pfn = 0x0011223344556677ull },
      { .nr = 0xfffffffe, .first_pfn = 0x8899aabbccddeeffull },
      { .nr = 0x01020304, .first_pfn = 0 },
    };
    rc = xendevicemodel_modified_memory_bulk(dm, dom, ext, 3);
    const char *exts = "[{\"firstPfn\":\"0x0011223344556677\",\"nr\":1},{\"firstPfn\":\"0x8899aabbccddeeff\",\"nr\":"
                       "4294967294},{\"firstPfn\":\"0x0000000000000000\",\"nr\":16909060}]";
    snprintf(a, sizeof(a), "\"domid\":%u,\"extents\":%s", dom, exts);
    snprintf(o, sizeof(o), "\"op\":\"modified_memory\",\"extents\":%s", exts);
    emit("xendevicemodel_modified_memory_bulk", a, o, rc, errno, "");
  }
  {
    const uint64_t pfn = 0x0013579bdf02468aull;
    rc = xendevicemodel_set_mem_type(dm, dom, HVMMEM_mmio_dm, pfn, 0x7654321);
    snprintf(a, sizeof(a), "\"domid\":%u,\"memType\":%u,\"firstPfn\":" U64 ",\"nr\":%u", dom, HVMMEM_mmio_dm, pfn,
             0x7654321u);
    snprintf(o, sizeof(o), "\"op\":\"set_mem_type\",\"memType\":%u,\"firstPfn\":" U64 ",\"nr\":%u",
             HVMMEM_mmio_dm, pfn, 0x7654321u);
    emit("xendevicemodel_set_mem_type", a, o, rc, errno, "");
  }
  {
    const uint64_t extra = 0x8000000000000001ull;
    rc = xendevicemodel_inject_event(dm, dom, 0x12345678, 0xec, 3, 0xfedcba98, 0x0f, extra);
    snprintf(a, sizeof(a),
             "\"domid\":%u,\"vcpu\":%u,\"vector\":236,\"type\":3,\"errorCode\":%u,\"insnLen\":15,\"extra\":" U64, dom,
             0x12345678u, 0xfedcba98u, extra);
    snprintf(o, sizeof(o),
             "\"op\":\"inject_event\",\"vcpuid\":%u,\"vector\":236,\"type\":3,\"insnLen\":15,\"errorCode\":%u,\"cr2\":" U64,
             0x12345678u, 0xfedcba98u, extra);
    emit("xendevicemodel_inject_event", a, o, rc, errno, "");
  }
  rc = xendevicemodel_shutdown(dm, dom, 0x89abcdef);
  emit("xendevicemodel_shutdown", S("\"domid\":%u,\"reason\":%u", dom, 0x89abcdefu),
       S("\"op\":\"remote_shutdown\",\"reason\":%u", 0x89abcdefu), rc, errno, "");
  {
    const uint64_t src = 0x0102030405060708ull, dst = 0xf0e0d0c0b0a09080ull;
    rc = xendevicemodel_relocate_memory(dm, dom, 0x89abcdef, src, dst);
    snprintf(a, sizeof(a), "\"domid\":%u,\"size\":%u,\"srcGfn\":" U64 ",\"dstGfn\":" U64, dom, 0x89abcdefu, src, dst);
    snprintf(o, sizeof(o), "\"op\":\"relocate_memory\",\"size\":%u,\"srcGfn\":" U64 ",\"dstGfn\":" U64, 0x89abcdefu, src,
             dst);
    emit("xendevicemodel_relocate_memory", a, o, rc, errno, "");
  }
  {
    const uint64_t start = 0x1122334455667788ull, end = 0x99aabbccddeeff00ull;
    rc = xendevicemodel_pin_memory_cacheattr(dm, dom, start, end, XEN_DMOP_DELETE_MEM_CACHEATTR);
    snprintf(a, sizeof(a), "\"domid\":%u,\"start\":" U64 ",\"end\":" U64 ",\"type\":%u", dom, start, end, 0xffffffffu);
    snprintf(o, sizeof(o), "\"op\":\"pin_memory_cacheattr\",\"start\":" U64 ",\"end\":" U64 ",\"type\":%u", start, end,
             0xffffffffu);
    emit("xendevicemodel_pin_memory_cacheattr", a, o, rc, errno, "");
  }
  {
    unsigned int vcpus = 0;
    memset(&r, 0, sizeof(r));
    r.op = XEN_DMOP_nr_vcpus;
    r.u.nr_vcpus.vcpus = 0x87654321;
    reply1(&r);
    rc = xendevicemodel_nr_vcpus(dm, dom, &vcpus);
    emit("xendevicemodel_nr_vcpus", S("\"domid\":%u", dom), "\"op\":\"nr_vcpus\"", rc, errno, S("\"vcpus\":%u", vcpus));
  }
  rc = xendevicemodel_restrict(dm, dom);
  emit("xendevicemodel_restrict", S("\"domid\":%u", dom), NULL, rc, errno, "");
  xendevicemodel_close(dm);
  emit("xendevicemodel_close", "", NULL, 0, 0, "");

  /* libxenforeignmemory: what memmap's privcmd backend has to reproduce. */
  xenforeignmemory_handle *fm = xenforeignmemory_open(NULL, 0);
  if (!fm) {
    perror("xenforeignmemory_open");
    return 1;
  }
  emit("xenforeignmemory_open", "", NULL, 0, 0, "");
  {
    const xen_pfn_t arr[3] = { 0x00fedcba98765432ull, 0x12345, 0x8000000000000000ull };
    int err[3] = { 0x11111111, 0x22222222, 0x33333333 };
    const int fake_err[3] = { 0, -EFAULT, -ENOENT };
    const void *b[1] = { fake_err };
    size_t s[1] = { sizeof(fake_err) };
    reply(0, 0, 1, b, s);
    void *p = xenforeignmemory_map(fm, dom, PROT_READ | PROT_WRITE, 3, arr, err);
    snprintf(a, sizeof(a), "\"domid\":%u,\"prot\":3,\"arr\":[\"0x00fedcba98765432\",\"0x0000000000012345\",\"0x8000000000000000\"]",
             dom);
    snprintf(o, sizeof(o), "\"mapped\":%s,\"err\":[%d,%d,%d]", p ? "true" : "false", err[0], err[1], err[2]);
    emit("xenforeignmemory_map", a, NULL, p ? 0 : -1, errno, o);
    if (p) xenforeignmemory_unmap(fm, p, 3);
  }
  {
    void *addr = NULL;
    xenforeignmemory_resource_handle *res =
        xenforeignmemory_map_resource(fm, dom, 0 /* XENMEM_resource_ioreq_server */, id, 1 /* frame_ioreq(0) */,
                                      2, &addr, PROT_READ | PROT_WRITE, 0);
    emit("xenforeignmemory_map_resource",
         S("\"domid\":%u,\"type\":0,\"id\":%u,\"frame\":1,\"nrFrames\":2,\"prot\":3", dom, id), NULL, res ? 0 : -1, errno,
         S("\"mapped\":%s", res ? "true" : "false"));
    if (res) xenforeignmemory_unmap_resource(fm, res);
  }
  rc = xenforeignmemory_restrict(fm, dom);
  emit("xenforeignmemory_restrict", S("\"domid\":%u", dom), NULL, rc, errno, "");
  xenforeignmemory_close(fm);
  printf("\n  ]\n}\n");
  return 0;
}
