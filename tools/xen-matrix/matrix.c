/*
 * xen-matrix: a recorded request/answer matrix of real Xen 4.17 and the Linux 6.1 privcmd and
 * evtchn drivers, for the models in @xen-depriv/dmop-abi/sim and @xen-depriv/privcmd-filter.
 *
 * Every request is a raw ioctl with a hand-built argument (no libxendevicemodel, no libxencall),
 * so malformed requests reach the kernel and Xen exactly as written. libxenctrl is used only to
 * set the stage (two fresh HVM domains, their memory and HVM params), which the first record
 * describes. Output: JSON lines on stdout, one per request, in the order they were made; the
 * answers are stateful and must be replayed in order. See README.md.
 *
 * Build and run: tools/xen-matrix/run.sh (compiles on the host, runs in the lab's dom0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xenctrl.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/memory.h>
#include <xen/event_channel.h>
#include <xen/version.h>
#include <xen/sys/privcmd.h>
#include <xen/sys/evtchn.h>

#define PAGE 4096
/* Linux >= 6.7 only: Linux 6.1 answers ENOTTY. Numbers as include/uapi/xen/privcmd.h. */
#define IOCTL_PRIVCMD_IRQFD_ 0x40185008
#define IOCTL_PRIVCMD_IOEVENTFD_ 0x40305009

static int n;                 /* request counter */
static const char *layer = "dmop";
static uint8_t *arena;        /* 64 locked pages for buffers */
static uint8_t *ro_page;      /* a read-only page */
static domid_t A, B, MISSING;

static void hex(const void *p, size_t len)
{
    const uint8_t *b = p;
    putchar('"');
    for (size_t i = 0; i < len; i++) printf("%02x", b[i]);
    putchar('"');
}

/* ---- DM_OP -------------------------------------------------------------------------------- */

enum ptr { P_OK, P_NULL, P_BAD, P_KERNEL, P_RO };
static const char *ptr_name[] = { "ok", "null", "bad", "kernel", "readonly" };

struct bs {
    enum ptr ptr;
    size_t size;     /* size given to the kernel */
    unsigned off;    /* offset in its page (P_OK) */
    const void *data;
    size_t len;      /* bytes of data (rest zero) */
};

static void *ptr_of(enum ptr p, uint8_t *ok)
{
    switch (p) {
    case P_OK: return ok;
    case P_NULL: return NULL;
    case P_BAD: return (void *)0x1000; /* never mapped */
    case P_KERNEL: return (void *)0xffff888000000000ull;
    case P_RO: return ro_page;
    }
    return NULL;
}

/*
 * One IOCTL_PRIVCMD_DM_OP. ubufs_ptr/arg_ptr: where the buffer array and the argument itself
 * live (P_OK normally). Prints one record.
 */
static int dmop_raw(int fd, const char *fdname, const char *what, domid_t dom, unsigned num,
                    const struct bs *b, enum ptr ubufs_ptr, enum ptr arg_ptr)
{
    static privcmd_dm_op_buf_t ubufs[32];
    uint8_t *slot[32];
    for (unsigned i = 0; i < num && i < 32; i++) {
        slot[i] = arena + (size_t)i * 2 * PAGE + b[i].off;
        memset(arena + (size_t)i * 2 * PAGE, 0, 2 * PAGE);
        if (b[i].ptr == P_OK && b[i].data) memcpy(slot[i], b[i].data, b[i].len);
        ubufs[i].uptr = ptr_of(b[i].ptr, slot[i]);
        ubufs[i].size = b[i].size;
    }
    privcmd_dm_op_t op = { .dom = dom, .num = num, .ubufs = ptr_of(ubufs_ptr, (uint8_t *)ubufs) };
    void *arg = arg_ptr == P_OK ? (void *)&op : ptr_of(arg_ptr, NULL);
    errno = 0;
    int rc = ioctl(fd, IOCTL_PRIVCMD_DM_OP, arg);
    int e = rc < 0 ? errno : 0;
    printf("{\"n\":%d,\"layer\":\"%s\",\"what\":\"%s\",\"fd\":\"%s\",\"req\":{\"ioctl\":\"DM_OP\","
           "\"dom\":%u,\"num\":%u,\"ubufs\":\"%s\",\"arg\":\"%s\",\"bufs\":[",
           n++, layer, what, fdname, dom, num, ptr_name[ubufs_ptr], ptr_name[arg_ptr]);
    for (unsigned i = 0; i < num && i < 32; i++) {
        printf("%s{\"ptr\":\"%s\",\"size\":%zu,\"pageOffset\":%u,\"in\":", i ? "," : "",
               ptr_name[b[i].ptr], b[i].size, b[i].off);
        size_t l = b[i].ptr == P_OK ? (b[i].size < 2 * PAGE - b[i].off ? b[i].size : 0) : 0;
        uint8_t tmp[2 * PAGE] = { 0 };
        if (b[i].ptr == P_OK && b[i].data) memcpy(tmp, b[i].data, b[i].len);
        hex(tmp, l);
        putchar('}');
    }
    printf("]},\"rc\":%d,\"errno\":%d,\"out\":[", rc < 0 ? -1 : rc, e);
    for (unsigned i = 0; i < num && i < 32; i++) {
        if (i) putchar(',');
        if (b[i].ptr == P_OK && b[i].size <= PAGE) hex(slot[i], b[i].size);
        else printf("null");
    }
    printf("]}\n");
    return rc < 0 ? -e : rc;
}

/* A well-formed DM_OP: buf0 = the struct xen_dm_op, optional buf1. */
static int dm(int fd, const char *fdname, const char *what, domid_t dom, const struct xen_dm_op *op,
              const void *b1, size_t b1len)
{
    struct bs b[2] = {
        { P_OK, sizeof(*op), 64, op, sizeof(*op) },
        { P_OK, b1len, 64, b1, b1len },
    };
    return dmop_raw(fd, fdname, what, dom, b1 ? 2 : 1, b, P_OK, P_OK);
}

static struct xen_dm_op mk(uint32_t opnr)
{
    struct xen_dm_op op;
    memset(&op, 0, sizeof(op));
    op.op = opnr;
    return op;
}

/* The id a successful create_ioreq_server wrote back (read from the last output). */
static ioservid_t created_id;
static int create_server(int fd, const char *what, domid_t dom, uint8_t handling)
{
    struct xen_dm_op op = mk(XEN_DMOP_create_ioreq_server);
    op.u.create_ioreq_server.handle_bufioreq = handling;
    struct bs b = { P_OK, sizeof(op), 64, &op, sizeof(op) };
    int rc = dmop_raw(fd, "p0", what, dom, 1, &b, P_OK, P_OK);
    struct xen_dm_op *back = (struct xen_dm_op *)(arena + 64);
    created_id = back->u.create_ioreq_server.id;
    return rc;
}

/* ---- other privcmd ioctls ----------------------------------------------------------------- */

static void head(const char *what, const char *fdname)
{
    printf("{\"n\":%d,\"layer\":\"%s\",\"what\":\"%s\",\"fd\":\"%s\",\"req\":", n++, layer, what,
           fdname);
}
static int tail(int rc, int e)
{
    printf(",\"rc\":%d,\"errno\":%d", rc < 0 ? -1 : rc, e);
    return rc < 0 ? -e : rc;
}

static int restrict_fd(int fd, const char *fdname, const char *what, domid_t d, enum ptr argp)
{
    domid_t v = d;
    errno = 0;
    int rc = ioctl(fd, IOCTL_PRIVCMD_RESTRICT, argp == P_OK ? (void *)&v : ptr_of(argp, NULL));
    int e = rc < 0 ? errno : 0;
    head(what, fdname);
    printf("{\"ioctl\":\"RESTRICT\",\"domid\":%u,\"arg\":\"%s\"}", d, ptr_name[argp]);
    rc = tail(rc, e);
    printf("}\n");
    return rc;
}

/*
 * IOCTL_PRIVCMD_HYPERCALL. mem: bytes a pointer argument points to (in the arena), placed at
 * argument index memarg; memptr says whether that pointer is good.
 */
static int hypercall(int fd, const char *fdname, const char *what, uint64_t hop, uint64_t a0,
                     int memarg, const void *mem, size_t memlen, enum ptr memptr)
{
    privcmd_hypercall_t h = { .op = hop, .arg = { a0, 0, 0, 0, 0 } };
    uint8_t *slot = arena + 40 * PAGE + 128;
    memset(arena + 40 * PAGE, 0, 2 * PAGE);
    if (mem) memcpy(slot, mem, memlen);
    if (memarg >= 0) h.arg[memarg] = (uint64_t)(uintptr_t)ptr_of(memptr, slot);
    errno = 0;
    int rc = ioctl(fd, IOCTL_PRIVCMD_HYPERCALL, &h);
    int e = rc < 0 ? errno : 0;
    head(what, fdname);
    printf("{\"ioctl\":\"HYPERCALL\",\"op\":%" PRIu64 ",\"arg0\":%" PRIu64
           ",\"memArg\":%d,\"ptr\":\"%s\",\"memAddr\":%" PRIu64 ",\"mem\":",
           hop, a0, memarg, ptr_name[memptr], (uint64_t)(uintptr_t)slot);
    hex(mem ? mem : "", mem ? memlen : 0);
    printf("}");
    rc = tail(rc, e);
    printf(",\"out\":");
    if (memptr == P_OK && mem) hex(slot, memlen);
    else printf("null");
    printf("}\n");
    return rc;
}

static int hvm_get_param(int fd, const char *what, domid_t dom, uint32_t index, enum ptr p)
{
    xen_hvm_param_t prm = { .domid = dom, .index = index, .value = 0 };
    return hypercall(fd, "p0", what, __HYPERVISOR_hvm_op, HVMOP_get_param, 1, &prm, sizeof(prm), p);
}

/* MMAPBATCH_V2 over a fresh privcmd mapping of num pages (vma=0: an address with no mapping). */
static int mmapbatch_v2(int fd, const char *fdname, const char *what, domid_t dom, unsigned num,
                        const uint64_t *gfns, unsigned ngfns, int vma, enum ptr arrp, enum ptr errp)
{
    void *addr = NULL;
    size_t len = (size_t)(num ? num : 1) * PAGE;
    if (vma) {
        addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (addr == MAP_FAILED) { perror("mmap privcmd"); exit(1); }
    } else {
        addr = arena + 48 * PAGE; /* anonymous memory: not a privcmd vma */
    }
    xen_pfn_t *arr = (xen_pfn_t *)(arena + 44 * PAGE);
    int *err = (int *)(arena + 46 * PAGE);
    memset(arena + 44 * PAGE, 0, 4 * PAGE);
    for (unsigned i = 0; i < ngfns; i++) arr[i] = gfns[i];
    for (unsigned i = 0; i < ngfns; i++) err[i] = 0x5a5a5a5a;
    privcmd_mmapbatch_v2_t m = { .num = num, .dom = dom, .addr = (uint64_t)(uintptr_t)addr,
                                 .arr = ptr_of(arrp, (uint8_t *)arr), .err = ptr_of(errp, (uint8_t *)err) };
    errno = 0;
    int rc = ioctl(fd, IOCTL_PRIVCMD_MMAPBATCH_V2, &m);
    int e = rc < 0 ? errno : 0;
    head(what, fdname);
    printf("{\"ioctl\":\"MMAPBATCH_V2\",\"dom\":%u,\"num\":%u,\"vma\":%s,\"arr\":\"%s\",\"err\":\"%s\",\"gfns\":[",
           dom, num, vma ? "true" : "false", ptr_name[arrp], ptr_name[errp]);
    for (unsigned i = 0; i < ngfns; i++) printf("%s%" PRIu64, i ? "," : "", gfns[i]);
    printf("]}");
    rc = tail(rc, e);
    printf(",\"frameErrors\":");
    if (errp == P_OK) {
        printf("[");
        for (unsigned i = 0; i < ngfns; i++) printf("%s%d", i ? "," : "", err[i]);
        printf("]");
    } else {
        printf("null");
    }
    printf("}\n");
    if (vma) munmap(addr, len);
    return rc;
}

static int mmap_resource(int fd, const char *fdname, const char *what, domid_t dom, uint32_t type,
                         uint32_t id, uint32_t idx, uint64_t num, int vma)
{
    void *addr = NULL;
    if (vma) {
        addr = mmap(NULL, (size_t)num * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (addr == MAP_FAILED) { perror("mmap privcmd"); exit(1); }
    }
    privcmd_mmap_resource_t r = { .dom = dom, .type = type, .id = id, .idx = idx, .num = num,
                                  .addr = (uint64_t)(uintptr_t)addr };
    errno = 0;
    int rc = ioctl(fd, IOCTL_PRIVCMD_MMAP_RESOURCE, &r);
    int e = rc < 0 ? errno : 0;
    head(what, fdname);
    printf("{\"ioctl\":\"MMAP_RESOURCE\",\"dom\":%u,\"type\":%u,\"id\":%u,\"idx\":%u,\"num\":%" PRIu64
           ",\"vma\":%s}",
           dom, type, id, idx, num, vma ? "true" : "false");
    rc = tail(rc, e);
    printf(",\"numOut\":%" PRIu64 "}\n", (uint64_t)r.num);
    if (vma) munmap(addr, (size_t)num * PAGE);
    return rc;
}

static int simple_ioctl(int fd, const char *fdname, const char *what, const char *name,
                        unsigned long req, const char *fields, void *arg, enum ptr argp)
{
    errno = 0;
    int rc = ioctl(fd, req, argp == P_OK ? arg : ptr_of(argp, NULL));
    int e = rc < 0 ? errno : 0;
    head(what, fdname);
    printf("{\"ioctl\":\"%s\",\"request\":%lu,\"arg\":\"%s\"%s%s}", name, req, ptr_name[argp],
           fields[0] ? "," : "", fields);
    rc = tail(rc, e);
    printf("}\n");
    return rc;
}

/* ---- evtchn -------------------------------------------------------------------------------- */

static int ev(int fd, const char *fdname, const char *what, const char *name, unsigned long req,
              unsigned v1, unsigned v2, enum ptr argp)
{
    char fields[96];
    unsigned arg[2] = { v1, v2 };
    domid_t dom16 = (domid_t)v1;
    void *a = req == IOCTL_EVTCHN_RESTRICT_DOMID ? (void *)&dom16 : (void *)arg;
    if (req == IOCTL_EVTCHN_BIND_INTERDOMAIN)
        snprintf(fields, sizeof(fields), "\"remoteDomain\":%u,\"remotePort\":%u", v1, v2);
    else if (req == IOCTL_EVTCHN_BIND_VIRQ)
        snprintf(fields, sizeof(fields), "\"virq\":%u", v1);
    else if (req == IOCTL_EVTCHN_BIND_UNBOUND_PORT)
        snprintf(fields, sizeof(fields), "\"remoteDomain\":%u", v1);
    else if (req == IOCTL_EVTCHN_RESTRICT_DOMID)
        snprintf(fields, sizeof(fields), "\"domid\":%u", v1);
    else if (req == IOCTL_EVTCHN_UNBIND || req == IOCTL_EVTCHN_NOTIFY)
        snprintf(fields, sizeof(fields), "\"port\":%u", v1);
    else
        fields[0] = 0;
    return simple_ioctl(fd, fdname, what, name, req, fields, a, argp);
}

/* ---- setup --------------------------------------------------------------------------------- */

static domid_t mkhvm(xc_interface *xch, unsigned vcpus, unsigned maxmem_kb, unsigned pages)
{
    struct xen_domctl_createdomain cfg = {
        .flags = XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap,
        .max_vcpus = vcpus,
        .max_evtchn_port = 1023,
        .max_grant_frames = 32,
        .max_maptrack_frames = 1024,
        .grant_opts = XEN_DOMCTL_GRANT_version(1),
        .arch = { .emulation_flags = XEN_X86_EMU_ALL & ~XEN_X86_EMU_VPCI },
    };
    uint32_t domid = 0;
    if (xc_domain_create(xch, &domid, &cfg)) { perror("xc_domain_create"); exit(1); }
    if (xc_domain_max_vcpus(xch, domid, vcpus)) { perror("max_vcpus"); exit(1); }
    if (xc_domain_setmaxmem(xch, domid, maxmem_kb)) { perror("setmaxmem"); exit(1); }
    xen_pfn_t *pfns = calloc(pages, sizeof(*pfns));
    for (unsigned i = 0; i < pages; i++) pfns[i] = i;
    if (xc_domain_populate_physmap_exact(xch, domid, pages, 0, 0, pfns)) {
        perror("populate");
        exit(1);
    }
    free(pfns);
    return domid;
}

/* dom0's event-channel ports 0..N: 1 where the port is in use (EVTCHNOP_status != ECS_FREE). */
static void dom0_ports(xc_interface *xch, int pfd)
{
    (void)xch;
    printf(",\"dom0PortsInUse\":[");
    int first = 1;
    for (unsigned p = 0; p < 256; p++) {
        evtchn_status_t *st = (evtchn_status_t *)(arena + 50 * PAGE);
        memset(st, 0, sizeof(*st));
        st->dom = DOMID_SELF;
        st->port = p;
        privcmd_hypercall_t h = { .op = __HYPERVISOR_event_channel_op,
                                  .arg = { EVTCHNOP_status, (uint64_t)(uintptr_t)st } };
        int rc = ioctl(pfd, IOCTL_PRIVCMD_HYPERCALL, &h);
        if (rc < 0) break; /* past the last valid port */
        if (st->status != EVTCHNSTAT_closed) {
            printf("%s%u", first ? "" : ",", p);
            first = 0;
        }
    }
    printf("]");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    arena = mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ro_page = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED || ro_page == MAP_FAILED || mlock(arena, 64 * PAGE)) {
        perror("arena");
        return 1;
    }
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    if (!xch) { perror("xc_interface_open"); return 1; }

    /* A: 2 vCPUs, 0x100 pages of RAM and 8 ioreq server pages from gfn 0x100, as a toolstack
     * sets them up; B: 1 vCPU, 0x100 pages of RAM, max 1 MiB (full), no ioreq server pages. */
    A = mkhvm(xch, 2, 4096, 0x108);
    if (xc_hvm_param_set(xch, A, HVM_PARAM_IOREQ_SERVER_PFN, 0x100) ||
        xc_hvm_param_set(xch, A, HVM_PARAM_NR_IOREQ_SERVER_PAGES, 8)) {
        perror("hvm_param_set");
        return 1;
    }
    B = mkhvm(xch, 1, 1024, 0x100);
    MISSING = B + 100;

    int p0 = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC);
    int p1 = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC);
    int p2 = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC);
    int p3 = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC);
    int e0 = open("/dev/xen/evtchn", O_RDWR | O_CLOEXEC);
    int e1 = open("/dev/xen/evtchn", O_RDWR | O_CLOEXEC);
    int e2 = open("/dev/xen/evtchn", O_RDWR | O_CLOEXEC);
    if (p0 < 0 || p1 < 0 || p2 < 0 || p3 < 0 || e0 < 0 || e1 < 0 || e2 < 0) {
        perror("open /dev/xen");
        return 1;
    }
    printf("{\"setup\":{\"xen\":\"%d.%d\",\"domains\":[{\"domid\":%u,\"vcpus\":2,\"ramPages\":256,"
           "\"maxPages\":1024,\"ioreqServerPfn\":256,\"nrIoreqServerPages\":8},"
           "{\"domid\":%u,\"vcpus\":1,\"ramPages\":256,\"maxPages\":256}],\"missingDomid\":%u",
           xc_version(xch, XENVER_version, NULL) >> 16, xc_version(xch, XENVER_version, NULL) & 0xffff,
           A, B, MISSING);
    dom0_ports(xch, p0);
    printf("}}\n");

    struct xen_dm_op op;
    uint8_t zero[8192] = { 0 };

    /* ================= layer dmop: the hypervisor through an unrestricted fd ================= */
    layer = "dmop";
    op = mk(XEN_DMOP_nr_vcpus);
    dm(p0, "p0", "nr_vcpus A", A, &op, NULL, 0);
    dm(p0, "p0", "nr_vcpus B", B, &op, NULL, 0);
    op.u.nr_vcpus.vcpus = 77; /* an output field: its input is ignored */
    dm(p0, "p0", "nr_vcpus A with garbage in the output", A, &op, NULL, 0);
    op = mk(XEN_DMOP_nr_vcpus);
    dm(p0, "p0", "nr_vcpus dom0 (own domid)", 0, &op, NULL, 0);
    dm(p0, "p0", "nr_vcpus missing domid", MISSING, &op, NULL, 0);
    dm(p0, "p0", "nr_vcpus DOMID_SELF", DOMID_SELF, &op, NULL, 0);
    dm(p0, "p0", "nr_vcpus DOMID_IO", DOMID_IO, &op, NULL, 0);
    dm(p0, "p0", "nr_vcpus DOMID_XEN", DOMID_XEN, &op, NULL, 0);
    dm(p0, "p0", "nr_vcpus DOMID_INVALID", DOMID_INVALID, &op, NULL, 0);
    dm(p0, "p0", "nr_vcpus DOMID_IDLE", DOMID_IDLE, &op, NULL, 0);
    dm(p0, "p0", "nr_vcpus 0xffff", 0xffff, &op, NULL, 0);
    op.pad = 1;
    dm(p0, "p0", "nr_vcpus pad=1", A, &op, NULL, 0);
    op = mk(0);
    dm(p0, "p0", "op 0", A, &op, NULL, 0);
    op.pad = 1;
    dm(p0, "p0", "op 0 pad=1", A, &op, NULL, 0);
    op = mk(XEN_DMOP_set_irq_level);
    dm(p0, "p0", "set_irq_level (Arm only)", A, &op, NULL, 0);
    op = mk(21);
    dm(p0, "p0", "op 21", A, &op, NULL, 0);
    op = mk(0xffffffff);
    dm(p0, "p0", "op 0xffffffff", A, &op, NULL, 0);
    op = mk(21);
    op.pad = 1;
    dm(p0, "p0", "op 21 pad=1", A, &op, NULL, 0);

    /* buffer counts and sizes */
    {
        struct xen_dm_op v = mk(XEN_DMOP_nr_vcpus);
        struct bs b[17];
        for (int i = 0; i < 17; i++) b[i] = (struct bs){ P_OK, sizeof(v), 64, &v, sizeof(v) };
        dmop_raw(p0, "p0", "num 0", A, 0, b, P_OK, P_OK);
        dmop_raw(p0, "p0", "num 2 (nr_vcpus ignores buf1)", A, 2, b, P_OK, P_OK);
        dmop_raw(p0, "p0", "num 3 (Xen has 2 buffers)", A, 3, b, P_OK, P_OK);
        dmop_raw(p0, "p0", "num 16", A, 16, b, P_OK, P_OK);
        dmop_raw(p0, "p0", "num 17 (dm_op_max_nr_bufs)", A, 17, b, P_OK, P_OK);
        dmop_raw(p0, "p0", "num 17 to a missing domid", MISSING, 17, b, P_OK, P_OK);
        dmop_raw(p0, "p0", "num 3 to a missing domid", MISSING, 3, b, P_OK, P_OK);
        dmop_raw(p0, "p0", "ubufs bad pointer", A, 1, b, P_BAD, P_OK);
        dmop_raw(p0, "p0", "ubufs NULL", A, 1, b, P_NULL, P_OK);
        dmop_raw(p0, "p0", "ubufs NULL with num 0", A, 0, b, P_NULL, P_OK);
        dmop_raw(p0, "p0", "argument bad pointer", A, 1, b, P_OK, P_BAD);
        struct bs s[2] = { { P_OK, 7, 64, &v, 7 } };
        dmop_raw(p0, "p0", "buf0 7 bytes (short header)", A, 1, s, P_OK, P_OK);
        s[0].size = 8;
        dmop_raw(p0, "p0", "buf0 8 bytes (header only)", A, 1, s, P_OK, P_OK);
        s[0].size = 11;
        dmop_raw(p0, "p0", "buf0 11 bytes (nr_vcpus needs 12)", A, 1, s, P_OK, P_OK);
        s[0].size = 12;
        dmop_raw(p0, "p0", "buf0 12 bytes (exact)", A, 1, s, P_OK, P_OK);
        s[0].size = 0;
        dmop_raw(p0, "p0", "buf0 0 bytes, page offset 64", A, 1, s, P_OK, P_OK);
        /* Not asked: a zero-length buffer at a page-aligned mapped address as the only buffer.
         * Linux 6.1.192 oopses on it (kcalloc(0) is ZERO_SIZE_PTR, and gup's do/while pins one
         * page for an empty range and writes it there); see README.md. */
        s[0] = (struct bs){ P_OK, 4096, 0, &v, sizeof(v) };
        dmop_raw(p0, "p0", "buf0 4096 bytes", A, 1, s, P_OK, P_OK);
        s[0].size = 4097;
        dmop_raw(p0, "p0", "buf0 4097 bytes (dm_op_buf_max_size)", A, 1, s, P_OK, P_OK);
        s[0] = (struct bs){ P_OK, 32, 4080, &v, sizeof(v) };
        dmop_raw(p0, "p0", "buf0 across a page boundary", A, 1, s, P_OK, P_OK);
        s[0] = (struct bs){ P_NULL, 32, 0, NULL, 0 };
        dmop_raw(p0, "p0", "buf0 NULL", A, 1, s, P_OK, P_OK);
        s[0].ptr = P_BAD;
        dmop_raw(p0, "p0", "buf0 unmapped", A, 1, s, P_OK, P_OK);
        s[0].ptr = P_KERNEL;
        dmop_raw(p0, "p0", "buf0 kernel address", A, 1, s, P_OK, P_OK);
        s[0].ptr = P_RO;
        dmop_raw(p0, "p0", "buf0 read-only page", A, 1, s, P_OK, P_OK);
        s[0] = (struct bs){ P_OK, 32, 64, &v, sizeof(v) };
        s[1] = (struct bs){ P_BAD, 32, 0, NULL, 0 };
        dmop_raw(p0, "p0", "buf1 unmapped (unused by nr_vcpus)", A, 2, s, P_OK, P_OK);
        s[1] = (struct bs){ P_OK, 4097, 0, NULL, 0 };
        dmop_raw(p0, "p0", "buf1 4097 bytes", A, 2, s, P_OK, P_OK);
        s[0].ptr = P_NULL;
        s[0].size = 0;
        s[1] = (struct bs){ P_OK, 32, 64, &v, sizeof(v) };
        dmop_raw(p0, "p0", "buf0 NULL size 0, buf1 good", A, 2, s, P_OK, P_OK);
    }

    /* ioreq servers on A */
    create_server(p0, "create_ioreq_server A bufioreq off", A, HVM_IOREQSRV_BUFIOREQ_OFF);
    ioservid_t s0 = created_id;
    create_server(p0, "create_ioreq_server A bufioreq legacy", A, HVM_IOREQSRV_BUFIOREQ_LEGACY);
    ioservid_t s1 = created_id;
    create_server(p0, "create_ioreq_server A bufioreq atomic", A, HVM_IOREQSRV_BUFIOREQ_ATOMIC);
    ioservid_t s2 = created_id;
    create_server(p0, "create_ioreq_server A bufioreq 3", A, 3);
    create_server(p0, "create_ioreq_server A bufioreq 255", A, 255);
    op = mk(XEN_DMOP_create_ioreq_server);
    op.u.create_ioreq_server.pad[0] = 1;
    dm(p0, "p0", "create_ioreq_server pad[0]=1", A, &op, NULL, 0);
    op = mk(XEN_DMOP_create_ioreq_server);
    op.u.create_ioreq_server.id = 5; /* output field */
    dm(p0, "p0", "create_ioreq_server with garbage in id", A, &op, NULL, 0);
    ioservid_t s3 = ((struct xen_dm_op *)(arena + 64))->u.create_ioreq_server.id;

#define INFO(_p0, _p1, _p2, _p3)                                    \
    do {                                                              \
        op = mk(XEN_DMOP_get_ioreq_server_info);                      \
        op.u.get_ioreq_server_info.id = (_p2);                         \
        op.u.get_ioreq_server_info.flags = (_p3);                   \
        dm(p0, "p0", _p0, _p1, &op, NULL, 0);                         \
    } while (0)
    INFO("get_ioreq_server_info s0 no_gfns", A, s0, XEN_DMOP_no_gfns);
    INFO("get_ioreq_server_info s1 no_gfns", A, s1, XEN_DMOP_no_gfns);
    INFO("get_ioreq_server_info s1", A, s1, 0);
    INFO("get_ioreq_server_info s1 again", A, s1, 0);
    INFO("get_ioreq_server_info s0", A, s0, 0);
    INFO("get_ioreq_server_info s2", A, s2, 0);
    INFO("get_ioreq_server_info s3", A, s3, 0);
    INFO("get_ioreq_server_info flags 2", A, s0, 2);
    INFO("get_ioreq_server_info missing id 7", A, 7, 0);
    INFO("get_ioreq_server_info id 0xffff", A, 0xffff, 0);
    op = mk(XEN_DMOP_get_ioreq_server_info);
    op.u.get_ioreq_server_info.id = s1;
    op.u.get_ioreq_server_info.flags = XEN_DMOP_no_gfns;
    op.u.get_ioreq_server_info.ioreq_gfn = 0x1234;
    op.u.get_ioreq_server_info.bufioreq_gfn = 0x5678;
    dm(p0, "p0", "get_ioreq_server_info no_gfns keeps gfn inputs", A, &op, NULL, 0);

#define RANGE(_p0, _p1, _p2, _p3, _p4, _p5)                             \
    do {                                                              \
        op = mk(_p1);                                                \
        op.u.map_io_range_to_ioreq_server.id = (_p2);                  \
        op.u.map_io_range_to_ioreq_server.type = (_p3);              \
        op.u.map_io_range_to_ioreq_server.start = (_p4);                \
        op.u.map_io_range_to_ioreq_server.end = (_p5);                  \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
#define MAP XEN_DMOP_map_io_range_to_ioreq_server
#define UNMAP XEN_DMOP_unmap_io_range_from_ioreq_server
    RANGE("map port 0x3f8-0x3ff", MAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x3f8, 0x3ff);
    RANGE("map port 0x3f8-0x3ff again", MAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x3f8, 0x3ff);
    RANGE("map port 0x3fc-0x400 overlapping", MAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x3fc, 0x400);
    RANGE("map port 0x3f8-0x3ff on s1", MAP, s1, XEN_DMOP_IO_RANGE_PORT, 0x3f8, 0x3ff);
    RANGE("map port 0x400-0x40f adjacent", MAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x400, 0x40f);
    RANGE("map memory 0xfe000000-0xfeffffff", MAP, s0, XEN_DMOP_IO_RANGE_MEMORY, 0xfe000000, 0xfeffffff);
    RANGE("map pci sbdf 0:0:3.0", MAP, s0, XEN_DMOP_IO_RANGE_PCI, XEN_DMOP_PCI_SBDF(0, 0, 3, 0),
          XEN_DMOP_PCI_SBDF(0, 0, 3, 0));
    RANGE("map type 3", MAP, s0, 3, 0, 1);
    RANGE("map start > end", MAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x10, 0xf);
    RANGE("map missing server", MAP, 7, XEN_DMOP_IO_RANGE_PORT, 0x10, 0x1f);
    RANGE("map port 0-0xffffffffffffffff", MAP, s2, XEN_DMOP_IO_RANGE_PORT, 0, ~0ull);
    RANGE("unmap port 0x3f8-0x3ff", UNMAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x3f8, 0x3ff);
    RANGE("unmap port 0x3f8-0x3ff again", UNMAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x3f8, 0x3ff);
    RANGE("unmap port 0x404-0x407 (split)", UNMAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x404, 0x407);
    RANGE("unmap port 0x400-0x40f (not wholly mapped)", UNMAP, s0, XEN_DMOP_IO_RANGE_PORT, 0x400, 0x40f);
    RANGE("unmap type 3", UNMAP, s0, 3, 0, 1);
    RANGE("unmap start > end", UNMAP, s0, XEN_DMOP_IO_RANGE_PORT, 2, 1);
    op = mk(MAP);
    op.u.map_io_range_to_ioreq_server.id = s0;
    op.u.map_io_range_to_ioreq_server.pad = 1;
    op.u.map_io_range_to_ioreq_server.start = 0x500;
    op.u.map_io_range_to_ioreq_server.end = 0x500;
    dm(p0, "p0", "map with pad=1", A, &op, NULL, 0);
    /* the rangeset limit: s3 takes disjoint single ports until Xen refuses */
    {
        int i;
        char what[64];
        for (i = 0; i < 258; i++) {
            snprintf(what, sizeof(what), "map port %#x on s3 (range %d)", 0x1000 + 2 * i, i + 1);
            op = mk(MAP);
            op.u.map_io_range_to_ioreq_server.id = s3;
            op.u.map_io_range_to_ioreq_server.start = 0x1000 + 2 * i;
            op.u.map_io_range_to_ioreq_server.end = 0x1000 + 2 * i;
            if (dm(p0, "p0", what, A, &op, NULL, 0) < 0) break;
        }
        op = mk(MAP);
        op.u.map_io_range_to_ioreq_server.id = s3;
        op.u.map_io_range_to_ioreq_server.start = 0x1001;
        op.u.map_io_range_to_ioreq_server.end = 0x1001; /* merges two ranges into one */
        dm(p0, "p0", "map port 0x1001 on a full s3 (merges)", A, &op, NULL, 0);
        RANGE("unmap 0x1000 from s3 (split of a merged range on a full set)", UNMAP, s3,
              XEN_DMOP_IO_RANGE_PORT, 0x1001, 0x1001);
    }

#define STATE(_p0, _p1, _p2)                                           \
    do {                                                              \
        op = mk(XEN_DMOP_set_ioreq_server_state);                     \
        op.u.set_ioreq_server_state.id = (_p1);                        \
        op.u.set_ioreq_server_state.enabled = (_p2);                   \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    STATE("set_ioreq_server_state s0 enabled", s0, 1);
    STATE("set_ioreq_server_state s0 enabled again", s0, 1);
    STATE("set_ioreq_server_state s0 enabled=2", s0, 2);
    STATE("set_ioreq_server_state s0 disabled", s0, 0);
    STATE("set_ioreq_server_state missing", 7, 1);
    op = mk(XEN_DMOP_set_ioreq_server_state);
    op.u.set_ioreq_server_state.id = s0;
    op.u.set_ioreq_server_state.pad = 1;
    dm(p0, "p0", "set_ioreq_server_state pad=1", A, &op, NULL, 0);

    /* eight servers at most */
    for (int i = 0; i < 5; i++) create_server(p0, "create_ioreq_server A toward the limit", A, 0);

#define DESTROY(_p0, _p1, _p2)                                        \
    do {                                                              \
        op = mk(XEN_DMOP_destroy_ioreq_server);                       \
        op.u.destroy_ioreq_server.id = (_p2);                          \
        dm(p0, "p0", _p0, _p1, &op, NULL, 0);                         \
    } while (0)
    DESTROY("destroy_ioreq_server s2", A, s2);
    DESTROY("destroy_ioreq_server s2 again", A, s2);
    create_server(p0, "create_ioreq_server A reuses the freed slot", A, 1);
    INFO("get_ioreq_server_info of the reused slot", A, created_id, 0);
    op = mk(XEN_DMOP_destroy_ioreq_server);
    op.u.destroy_ioreq_server.id = s0;
    op.u.destroy_ioreq_server.pad = 1;
    dm(p0, "p0", "destroy_ioreq_server pad=1", A, &op, NULL, 0);

    /* B: no ioreq server pages */
    create_server(p0, "create_ioreq_server B legacy", B, 1);
    ioservid_t b0 = created_id;
    INFO("get_ioreq_server_info B (no ioreq pages)", B, b0, 0);
    INFO("get_ioreq_server_info B no_gfns", B, b0, XEN_DMOP_no_gfns);

    /* interrupts */
#define INTX(_p0, _p1, _p2, _p3, _p4, _p5)                       \
    do {                                                              \
        op = mk(XEN_DMOP_set_pci_intx_level);                         \
        op.u.set_pci_intx_level.domain = (_p1);                      \
        op.u.set_pci_intx_level.bus = (_p2);                         \
        op.u.set_pci_intx_level.device = (_p3);                       \
        op.u.set_pci_intx_level.intx = (_p4);                       \
        op.u.set_pci_intx_level.level = (_p5);                        \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    INTX("set_pci_intx_level 0:3 INTA high", 0, 0, 3, 0, 1);
    INTX("set_pci_intx_level 0:3 INTA low", 0, 0, 3, 0, 0);
    INTX("set_pci_intx_level device 31 INTD", 0, 0, 31, 3, 1);
    INTX("set_pci_intx_level device 32", 0, 0, 32, 0, 1);
    INTX("set_pci_intx_level intx 4", 0, 0, 3, 4, 1);
    INTX("set_pci_intx_level level 2", 0, 0, 3, 0, 2);
    INTX("set_pci_intx_level bus 1", 0, 1, 3, 0, 1);
    INTX("set_pci_intx_level segment 1", 1, 0, 3, 0, 1);
#define ISA(_p0, _p1, _p2)                                           \
    do {                                                              \
        op = mk(XEN_DMOP_set_isa_irq_level);                          \
        op.u.set_isa_irq_level.isa_irq = (_p1);                       \
        op.u.set_isa_irq_level.level = (_p2);                         \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    ISA("set_isa_irq_level 4 high", 4, 1);
    ISA("set_isa_irq_level 4 low", 4, 0);
    ISA("set_isa_irq_level 15", 15, 1);
    ISA("set_isa_irq_level 16", 16, 1);
    ISA("set_isa_irq_level level 2", 4, 2);
#define LINK(_p0, _p1, _p2)                                            \
    do {                                                              \
        op = mk(XEN_DMOP_set_pci_link_route);                         \
        op.u.set_pci_link_route.link = (_p1);                           \
        op.u.set_pci_link_route.isa_irq = (_p2);                      \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    LINK("set_pci_link_route link 0 irq 5", 0, 5);
    LINK("set_pci_link_route link 3 irq 0 (disable)", 3, 0);
    LINK("set_pci_link_route link 4", 4, 5);
    LINK("set_pci_link_route irq 16", 0, 16);
    op = mk(XEN_DMOP_inject_msi);
    op.u.inject_msi.addr = 0xfee00000;
    op.u.inject_msi.data = 0x4041;
    dm(p0, "p0", "inject_msi", A, &op, NULL, 0);
    op.u.inject_msi.pad = 1;
    dm(p0, "p0", "inject_msi pad=1", A, &op, NULL, 0);
    op = mk(XEN_DMOP_inject_msi);
    op.u.inject_msi.addr = 0x1000;
    dm(p0, "p0", "inject_msi outside the MSI window", A, &op, NULL, 0);
#define EVENT(_p0, _p1, _p2, _p3, _p4, _p5, _p6)                  \
    do {                                                              \
        op = mk(XEN_DMOP_inject_event);                               \
        op.u.inject_event.vcpuid = (_p1);                            \
        op.u.inject_event.vector = (_p2);                             \
        op.u.inject_event.type = (_p3);                             \
        op.u.inject_event.insn_len = (_p4);                           \
        op.u.inject_event.error_code = (_p5);                          \
        op.u.inject_event.cr2 = (_p6);                               \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    EVENT("inject_event #UD on vcpu 0", 0, 6, XEN_DMOP_EVENT_hw_exc, 0, ~0u, 0);
    EVENT("inject_event again while pending", 0, 6, XEN_DMOP_EVENT_hw_exc, 0, ~0u, 0);
    EVENT("inject_event #PF on vcpu 1", 1, 14, XEN_DMOP_EVENT_hw_exc, 0, 2, 0x1000);
    EVENT("inject_event vcpu 2", 2, 6, XEN_DMOP_EVENT_hw_exc, 0, ~0u, 0);
    EVENT("inject_event vcpu 0xffffffff", 0xffffffff, 6, XEN_DMOP_EVENT_hw_exc, 0, ~0u, 0);
    op = mk(XEN_DMOP_inject_event);
    op.u.inject_event.vcpuid = 1;
    op.u.inject_event.pad0 = 1;
    dm(p0, "p0", "inject_event pad0=1", A, &op, NULL, 0);

    /* memory */
    {
        struct xen_dm_op_modified_memory_extent ext[4] = {
            { .first_pfn = 0x10, .nr = 4 },
            { .first_pfn = 0xff, .nr = 1 },
        };
        op = mk(XEN_DMOP_modified_memory);
        op.u.modified_memory.nr_extents = 2;
        dm(p0, "p0", "modified_memory 2 extents (not log-dirty)", A, &op, ext, 2 * sizeof(ext[0]));
        dm(p0, "p0", "modified_memory 2 extents, buf1 one extent long", A, &op, ext, sizeof(ext[0]));
        dm(p0, "p0", "modified_memory without buf1", A, &op, NULL, 0);
        op.u.modified_memory.nr_extents = 0;
        dm(p0, "p0", "modified_memory 0 extents", A, &op, ext, sizeof(ext[0]));
        op.u.modified_memory.nr_extents = 1;
        op.u.modified_memory.opaque = 1;
        dm(p0, "p0", "modified_memory opaque=1", A, &op, ext, sizeof(ext[0]));
        op.u.modified_memory.opaque = 0;
        ext[2] = (struct xen_dm_op_modified_memory_extent){ .first_pfn = 0x10, .nr = 1, .pad = 1 };
        dm(p0, "p0", "modified_memory extent pad=1", A, &op, &ext[2], sizeof(ext[0]));
        ext[2] = (struct xen_dm_op_modified_memory_extent){ .first_pfn = 0x100000, .nr = 1 };
        dm(p0, "p0", "modified_memory extent above max gpfn", A, &op, &ext[2], sizeof(ext[0]));
        ext[2] = (struct xen_dm_op_modified_memory_extent){ .first_pfn = ~0ull, .nr = 2 };
        dm(p0, "p0", "modified_memory extent wrapping", A, &op, &ext[2], sizeof(ext[0]));
    }
#define MEMTYPE(_p0, _p1, _p2, _p3)                                  \
    do {                                                              \
        op = mk(XEN_DMOP_set_mem_type);                               \
        op.u.set_mem_type.mem_type = (_p1);                             \
        op.u.set_mem_type.first_pfn = (_p2);                        \
        op.u.set_mem_type.nr = (_p3);                                 \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    MEMTYPE("set_mem_type ram_ro 0x20+2", HVMMEM_ram_ro, 0x20, 2);
    MEMTYPE("set_mem_type ram_rw 0x20+2", HVMMEM_ram_rw, 0x20, 2);
    MEMTYPE("set_mem_type ram_rw 0x20+0", HVMMEM_ram_rw, 0x20, 0);
    MEMTYPE("set_mem_type mmio_dm (not allowed)", HVMMEM_mmio_dm, 0x20, 1);
    MEMTYPE("set_mem_type type 5", 5, 0x20, 1);
    MEMTYPE("set_mem_type ioreq_server without a mapped server", HVMMEM_ioreq_server, 0x20, 1);
    MEMTYPE("set_mem_type above max gpfn", HVMMEM_ram_ro, 0x100000, 1);
    MEMTYPE("set_mem_type wrapping", HVMMEM_ram_ro, ~0ull, 2);
    op = mk(XEN_DMOP_set_mem_type);
    op.u.set_mem_type.mem_type = HVMMEM_ram_rw;
    op.u.set_mem_type.pad = 1;
    op.u.set_mem_type.first_pfn = 0x20;
    op.u.set_mem_type.nr = 1;
    dm(p0, "p0", "set_mem_type pad=1", A, &op, NULL, 0);
#define MEMMAP(_p0, _p1, _p2, _p3)                                       \
    do {                                                              \
        op = mk(XEN_DMOP_map_mem_type_to_ioreq_server);               \
        op.u.map_mem_type_to_ioreq_server.id = (_p1);                  \
        op.u.map_mem_type_to_ioreq_server.type = (_p2);                 \
        op.u.map_mem_type_to_ioreq_server.flags = (_p3);               \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    MEMMAP("map_mem_type_to_ioreq_server ram_rw", s0, HVMMEM_ram_rw, XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);
    MEMMAP("map_mem_type_to_ioreq_server s0 claims it (flags 2 = WRITE)", s0, HVMMEM_ioreq_server, 2);
    MEMMAP("map_mem_type_to_ioreq_server server 7 while s0 holds the type", 7, HVMMEM_ioreq_server, XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);
    MEMMAP("map_mem_type_to_ioreq_server s0 again while it holds the type", s0, HVMMEM_ioreq_server, XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);
    MEMMAP("map_mem_type_to_ioreq_server s1 while s0 has it", s1, HVMMEM_ioreq_server, XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);
    MEMTYPE("set_mem_type ioreq_server 0x30+1", HVMMEM_ioreq_server, 0x30, 1);
    MEMTYPE("set_mem_type ioreq_server 0x30+1 again", HVMMEM_ioreq_server, 0x30, 1);
    MEMTYPE("set_mem_type ram_rw 0x30+1 back", HVMMEM_ram_rw, 0x30, 1);
    MEMMAP("map_mem_type_to_ioreq_server s0 unmap (flags 0)", s0, HVMMEM_ioreq_server, 0);
#define PIN(_p0, _p1, _p2, _p3)                                            \
    do {                                                              \
        op = mk(XEN_DMOP_pin_memory_cacheattr);                       \
        op.u.pin_memory_cacheattr.start = (_p1);                        \
        op.u.pin_memory_cacheattr.end = (_p2);                          \
        op.u.pin_memory_cacheattr.type = (_p3);                         \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    PIN("pin_memory_cacheattr 0x40-0x4f WB", 0x40, 0x4f, XEN_DMOP_MEM_CACHEATTR_WB);
    PIN("pin_memory_cacheattr 0x40-0x4f UC (same range)", 0x40, 0x4f, XEN_DMOP_MEM_CACHEATTR_UC);
    PIN("pin_memory_cacheattr 0x48-0x50 overlapping", 0x48, 0x50, XEN_DMOP_MEM_CACHEATTR_WB);
    PIN("pin_memory_cacheattr type 2", 0x60, 0x60, 2);
    PIN("pin_memory_cacheattr end < start", 0x60, 0x5f, XEN_DMOP_MEM_CACHEATTR_WB);
    PIN("pin_memory_cacheattr delete 0x40-0x4f", 0x40, 0x4f, XEN_DMOP_DELETE_MEM_CACHEATTR);
    PIN("pin_memory_cacheattr delete again", 0x40, 0x4f, XEN_DMOP_DELETE_MEM_CACHEATTR);
    PIN("pin_memory_cacheattr beyond paddr bits", 1ull << 52, 1ull << 52, XEN_DMOP_MEM_CACHEATTR_WB);
    op = mk(XEN_DMOP_pin_memory_cacheattr);
    op.u.pin_memory_cacheattr.start = 0x70;
    op.u.pin_memory_cacheattr.end = 0x70;
    op.u.pin_memory_cacheattr.pad = 1;
    dm(p0, "p0", "pin_memory_cacheattr pad=1", A, &op, NULL, 0);
#define RELOC(_p0, _p1, _p2, _p3)                                     \
    do {                                                              \
        op = mk(XEN_DMOP_relocate_memory);                            \
        op.u.relocate_memory.size = (_p1);                             \
        op.u.relocate_memory.src_gfn = (_p2);                         \
        op.u.relocate_memory.dst_gfn = (_p3);                         \
        dm(p0, "p0", _p0, A, &op, NULL, 0);                          \
    } while (0)
    RELOC("relocate_memory size 0", 0, 0x80, 0x1000);
    RELOC("relocate_memory 0x80 -> 0x1000", 1, 0x80, 0x1000);
    RELOC("relocate_memory 2 frames 0x81 -> 0x1001", 2, 0x81, 0x1001);
    RELOC("relocate_memory from a hole", 1, 0x5000, 0x6000);
    op = mk(XEN_DMOP_relocate_memory);
    op.u.relocate_memory.size = 1;
    op.u.relocate_memory.pad = 1;
    dm(p0, "p0", "relocate_memory pad=1", A, &op, NULL, 0);
    {
        uint8_t bm[16];
#define VRAM(_p0, _p1, _p2, _p3)                                 \
    do {                                                              \
        op = mk(XEN_DMOP_track_dirty_vram);                           \
        op.u.track_dirty_vram.first_pfn = (_p1);                    \
        op.u.track_dirty_vram.nr = (_p2);                             \
        memset(bm, 0xa5, sizeof(bm));                                 \
        dm(p0, "p0", _p0, A, &op, (_p3) ? bm : NULL, _p3);       \
    } while (0)
        VRAM("track_dirty_vram without buf1", 0xa0, 16, 0);
        VRAM("track_dirty_vram 16 frames at 0xa0", 0xa0, 16, 2);
        VRAM("track_dirty_vram 16 frames at 0xa0 again", 0xa0, 16, 2);
        VRAM("track_dirty_vram bitmap too small", 0xa0, 17, 2);
        VRAM("track_dirty_vram nr 0", 0xa0, 0, 2);
        VRAM("track_dirty_vram 1 GiB + 1 frame", 0xa0, (1u << 18) + 1, 16);
        op = mk(XEN_DMOP_track_dirty_vram);
        op.u.track_dirty_vram.first_pfn = 0xa0;
        op.u.track_dirty_vram.nr = 8;
        op.u.track_dirty_vram.pad = 1;
        dm(p0, "p0", "track_dirty_vram pad=1", A, &op, bm, 1);
    }
    (void)zero;

    /* ================= layer privcmd: the Linux driver ================= */
    layer = "privcmd";
    {
        struct xen_dm_op v = mk(XEN_DMOP_nr_vcpus);
        struct bs b[17];
        for (int i = 0; i < 17; i++) b[i] = (struct bs){ P_OK, sizeof(v), 64, &v, sizeof(v) };
        uint8_t ver[16] = { 0 };
        hypercall(p1, "p1", "HYPERCALL xen_version(XENVER_version)", __HYPERVISOR_xen_version,
                  XENVER_version, -1, NULL, 0, P_OK);
        hypercall(p1, "p1", "HYPERCALL xen_version(XENVER_extraversion) to an unmapped buffer",
                  __HYPERVISOR_xen_version, XENVER_extraversion, 1, ver, sizeof(ver), P_BAD);
        hypercall(p1, "p1", "HYPERCALL xen_version(cmd 0x7fff)", __HYPERVISOR_xen_version, 0x7fff,
                  -1, NULL, 0, P_OK);
        hvm_get_param(p1, "HYPERCALL hvm_op get_param STORE_PFN of A", A,
                      HVM_PARAM_STORE_PFN, P_OK);
        hvm_get_param(p1, "HYPERCALL hvm_op get_param IOREQ_SERVER_PFN of A", A,
                      HVM_PARAM_IOREQ_SERVER_PFN, P_OK);
        hvm_get_param(p1, "HYPERCALL hvm_op get_param NR_IOREQ_SERVER_PAGES of B", B,
                      HVM_PARAM_NR_IOREQ_SERVER_PAGES, P_OK);
        hvm_get_param(p1, "HYPERCALL hvm_op get_param index HVM_NR_PARAMS", A, HVM_NR_PARAMS, P_OK);
        hvm_get_param(p1, "HYPERCALL hvm_op get_param of a missing domid", MISSING,
                      HVM_PARAM_STORE_PFN, P_OK);
        hvm_get_param(p1, "HYPERCALL hvm_op get_param of dom0 (PV)", 0, HVM_PARAM_STORE_PFN,
                      P_OK);
        hvm_get_param(p1, "HYPERCALL hvm_op get_param, argument unmapped", A,
                      HVM_PARAM_STORE_PFN, P_BAD);
        {
            /* XENMEM_populate_physmap of 4 frames at 0x200 of A (QEMU's VRAM), then of B (full). */
            uint8_t mem[64 + 32];
            struct xen_memory_reservation *r = (struct xen_memory_reservation *)mem;
            memset(mem, 0, sizeof(mem));
            r->nr_extents = 4;
            r->domid = A;
            /* the frame list sits right after the reservation in the same buffer */
            set_xen_guest_handle_raw(r->extent_start,
                                     (xen_pfn_t *)(arena + 40 * PAGE + 128 + sizeof(*r)));
            xen_pfn_t *list = (xen_pfn_t *)(mem + sizeof(*r));
            for (int i = 0; i < 4; i++) list[i] = 0x200 + i;
            hypercall(p1, "p1", "HYPERCALL memory_op populate_physmap 4 frames of A", __HYPERVISOR_memory_op,
                      XENMEM_populate_physmap, 1, mem, sizeof(*r) + 32, P_OK);
            r->domid = B;
            hypercall(p1, "p1", "HYPERCALL memory_op populate_physmap 4 frames of B (at max_pages)",
                      __HYPERVISOR_memory_op, XENMEM_populate_physmap, 1, mem, sizeof(*r) + 32, P_OK);
            r->domid = MISSING;
            hypercall(p1, "p1", "HYPERCALL memory_op populate_physmap of a missing domid",
                      __HYPERVISOR_memory_op, XENMEM_populate_physmap, 1, mem, sizeof(*r) + 32, P_OK);
            r->domid = A;
            set_xen_guest_handle_raw(r->extent_start, (xen_pfn_t *)0x1000);
            hypercall(p1, "p1", "HYPERCALL memory_op populate_physmap, frame list unmapped",
                      __HYPERVISOR_memory_op, XENMEM_populate_physmap, 1, mem, sizeof(*r), P_OK);
        }

        /* foreign mappings, unrestricted fd */
        uint64_t g[4] = { 0x10, 0x11, 0x5000, 0x12 };
        mmapbatch_v2(p1, "p1", "MMAPBATCH_V2 A gfns 0x10,0x11,0x5000(hole),0x12", A, 4, g, 4, 1, P_OK, P_OK);
        uint64_t gr[2] = { 0x200, 0x203 };
        mmapbatch_v2(p1, "p1", "MMAPBATCH_V2 A the frames populated above", A, 2, gr, 2, 1, P_OK, P_OK);
        mmapbatch_v2(p1, "p1", "MMAPBATCH_V2 num 0", A, 0, g, 0, 1, P_OK, P_OK);
        mmapbatch_v2(p1, "p1", "MMAPBATCH_V2 without a privcmd mapping", A, 1, g, 1, 0, P_OK, P_OK);
        mmapbatch_v2(p1, "p1", "MMAPBATCH_V2 arr unmapped", A, 1, g, 1, 1, P_BAD, P_OK);
        mmapbatch_v2(p1, "p1", "MMAPBATCH_V2 of a missing domid", MISSING, 1, g, 1, 1, P_OK, P_OK);
        mmap_resource(p1, "p1", "MMAP_RESOURCE ioreq server s1 size query", A, 0, s1, 0, 0, 0);
        mmap_resource(p1, "p1", "MMAP_RESOURCE ioreq server s1 frames 0-1", A, 0, s1, 0, 2, 1);
        mmap_resource(p1, "p1", "MMAP_RESOURCE server 7 (no buffered ring) frame 0", A, 0, 7, 0, 1, 1);
        mmap_resource(p1, "p1", "MMAP_RESOURCE grant table size query", A, 1, 0, 0, 0, 0);
        mmap_resource(p1, "p1", "MMAP_RESOURCE type 99 size query", A, 99, 0, 0, 0, 0);
        mmap_resource(p1, "p1", "MMAP_RESOURCE num set, no address", A, 0, s1, 0, 1, 0);
        {
            privcmd_mmap_t m = { .num = 0, .dom = A, .entry = NULL };
            char f[64];
            snprintf(f, sizeof(f), "\"dom\":%u,\"num\":0,\"entry\":\"null\"", A);
            simple_ioctl(p1, "p1", "MMAP num 0", "MMAP", IOCTL_PRIVCMD_MMAP, f, &m, P_OK);
            m.num = 1;
            m.entry = (privcmd_mmap_entry_t *)0x1000;
            snprintf(f, sizeof(f), "\"dom\":%u,\"num\":1,\"entry\":\"bad\"", A);
            simple_ioctl(p1, "p1", "MMAP num 1, entry unmapped", "MMAP", IOCTL_PRIVCMD_MMAP, f, &m, P_OK);
        }
        {
            uint8_t irq[64] = { 0 };
            simple_ioctl(p1, "p1", "IRQFD (Linux 6.7+)", "IRQFD", IOCTL_PRIVCMD_IRQFD_, "", irq, P_OK);
            simple_ioctl(p1, "p1", "IOEVENTFD (Linux 6.7+)", "IOEVENTFD", IOCTL_PRIVCMD_IOEVENTFD_, "", irq, P_OK);
            simple_ioctl(p1, "p1", "unknown privcmd ioctl 0xff", "UNKNOWN", IOCTL_PRIVCMD_UNIMPLEMENTED, "", irq, P_OK);
        }

        /* restriction order on p2 */
        restrict_fd(p2, "p2", "RESTRICT argument unmapped", A, P_BAD);
        dmop_raw(p2, "p2", "DM_OP B before restricting", B, 1, b, P_OK, P_OK);
        restrict_fd(p2, "p2", "RESTRICT to A", A, P_OK);
        restrict_fd(p2, "p2", "RESTRICT to A again", A, P_OK);
        restrict_fd(p2, "p2", "RESTRICT to B after A", B, P_OK);
        restrict_fd(p2, "p2", "RESTRICT argument unmapped after A", A, P_BAD);
        dmop_raw(p2, "p2", "DM_OP A restricted to A", A, 1, b, P_OK, P_OK);
        dmop_raw(p2, "p2", "DM_OP B restricted to A", B, 1, b, P_OK, P_OK);
        dmop_raw(p2, "p2", "DM_OP dom0 restricted to A", 0, 1, b, P_OK, P_OK);
        dmop_raw(p2, "p2", "DM_OP B num 0 restricted to A", B, 0, b, P_OK, P_OK);
        dmop_raw(p2, "p2", "DM_OP B num 17 restricted to A", B, 17, b, P_OK, P_OK);
        dmop_raw(p2, "p2", "DM_OP argument unmapped restricted", A, 1, b, P_OK, P_BAD);
        hypercall(p2, "p2", "HYPERCALL xen_version restricted", __HYPERVISOR_xen_version,
                  XENVER_version, -1, NULL, 0, P_OK);
        mmapbatch_v2(p2, "p2", "MMAPBATCH_V2 A restricted to A", A, 1, g, 1, 1, P_OK, P_OK);
        mmapbatch_v2(p2, "p2", "MMAPBATCH_V2 B restricted to A", B, 1, g, 1, 1, P_OK, P_OK);
        mmapbatch_v2(p2, "p2", "MMAPBATCH_V2 B num 0 restricted to A", B, 0, g, 0, 1, P_OK, P_OK);
        mmap_resource(p2, "p2", "MMAP_RESOURCE A restricted to A, size query", A, 0, s1, 0, 0, 0);
        mmap_resource(p2, "p2", "MMAP_RESOURCE B restricted to A", B, 0, b0, 0, 0, 0);
        {
            privcmd_mmap_t m = { .num = 0, .dom = B, .entry = NULL };
            char f[64];
            snprintf(f, sizeof(f), "\"dom\":%u,\"num\":0,\"entry\":\"null\"", B);
            simple_ioctl(p2, "p2", "MMAP B restricted to A", "MMAP", IOCTL_PRIVCMD_MMAP, f, &m, P_OK);
            m.dom = A;
            snprintf(f, sizeof(f), "\"dom\":%u,\"num\":0,\"entry\":\"null\"", A);
            simple_ioctl(p2, "p2", "MMAP A restricted to A", "MMAP", IOCTL_PRIVCMD_MMAP, f, &m, P_OK);
            uint8_t irq[64] = { 0 };
            simple_ioctl(p2, "p2", "IRQFD restricted", "IRQFD", IOCTL_PRIVCMD_IRQFD_, "", irq, P_OK);
        }
        /* a fd restricted to a missing and to a reserved domid */
        restrict_fd(p3, "p3", "RESTRICT to DOMID_SELF", DOMID_SELF, P_OK);
        dmop_raw(p3, "p3", "DM_OP A restricted to DOMID_SELF", A, 1, b, P_OK, P_OK);
        dmop_raw(p3, "p3", "DM_OP DOMID_SELF restricted to DOMID_SELF", DOMID_SELF, 1, b, P_OK, P_OK);
        restrict_fd(p3, "p3", "RESTRICT DOMID_SELF again", DOMID_SELF, P_OK);
        restrict_fd(p3, "p3", "RESTRICT DOMID_INVALID after DOMID_SELF", DOMID_INVALID, P_OK);
    }

    /* ================= layer evtchn: the Linux driver and Xen's event channels ================= */
    layer = "evtchn";
    {
        /* the ports Xen allocated in A for s1 (per-vCPU, then buffered) */
        op = mk(XEN_DMOP_get_ioreq_server_info);
        op.u.get_ioreq_server_info.id = s1;
        op.u.get_ioreq_server_info.flags = XEN_DMOP_no_gfns;
        struct bs b = { P_OK, sizeof(op), 64, &op, sizeof(op) };
        layer = "dmop";
        dmop_raw(p0, "p0", "get_ioreq_server_info s1 no_gfns (bufioreq port)", A, 1, &b, P_OK, P_OK);
        layer = "evtchn";
        unsigned bufport = ((struct xen_dm_op *)(arena + 64))->u.get_ioreq_server_info.bufioreq_port;
        int l1 = ev(e0, "e0", "BIND_INTERDOMAIN A bufioreq port", "BIND_INTERDOMAIN",
                    IOCTL_EVTCHN_BIND_INTERDOMAIN, A, bufport, P_OK);
        ev(e0, "e0", "BIND_INTERDOMAIN A bufioreq port again", "BIND_INTERDOMAIN",
           IOCTL_EVTCHN_BIND_INTERDOMAIN, A, bufport, P_OK);
        ev(e0, "e0", "BIND_INTERDOMAIN A port 0", "BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, A, 0, P_OK);
        ev(e0, "e0", "BIND_INTERDOMAIN A port 1023 (free)", "BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, A, 1023, P_OK);
        ev(e0, "e0", "BIND_INTERDOMAIN A port 5000 (invalid)", "BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, A, 5000, P_OK);
        ev(e0, "e0", "BIND_INTERDOMAIN missing domid", "BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, MISSING, 1, P_OK);
        ev(e0, "e0", "BIND_INTERDOMAIN argument unmapped", "BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, A, 1, P_BAD);
        int u1 = ev(e0, "e0", "BIND_UNBOUND_PORT remote A", "BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT, A, 0, P_OK);
        int u2 = ev(e0, "e0", "BIND_UNBOUND_PORT remote dom0", "BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0, 0, P_OK);
        ev(e0, "e0", "BIND_UNBOUND_PORT remote missing domid", "BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT, MISSING, 0, P_OK);
        ev(e0, "e0", "BIND_INTERDOMAIN dom0 loopback to the unbound port", "BIND_INTERDOMAIN",
           IOCTL_EVTCHN_BIND_INTERDOMAIN, 0, u2 > 0 ? u2 : 0, P_OK);
        ev(e0, "e0", "NOTIFY the bound bufioreq port", "NOTIFY", IOCTL_EVTCHN_NOTIFY, l1 > 0 ? l1 : 0, 0, P_OK);
        ev(e0, "e0", "NOTIFY a port this fd does not own", "NOTIFY", IOCTL_EVTCHN_NOTIFY, 1, 0, P_OK);
        ev(e1, "e1", "NOTIFY another fd's port", "NOTIFY", IOCTL_EVTCHN_NOTIFY, l1 > 0 ? l1 : 0, 0, P_OK);
        ev(e1, "e1", "UNBIND another fd's port", "UNBIND", IOCTL_EVTCHN_UNBIND, l1 > 0 ? l1 : 0, 0, P_OK);
        ev(e0, "e0", "UNBIND port 4096 (nr_channels)", "UNBIND", IOCTL_EVTCHN_UNBIND, 4096, 0, P_OK);
        ev(e0, "e0", "UNBIND the unbound port remote A", "UNBIND", IOCTL_EVTCHN_UNBIND, u1 > 0 ? u1 : 0, 0, P_OK);
        ev(e0, "e0", "UNBIND it again", "UNBIND", IOCTL_EVTCHN_UNBIND, u1 > 0 ? u1 : 0, 0, P_OK);
        ev(e0, "e0", "BIND_UNBOUND_PORT reuses the freed port", "BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT, A, 0, P_OK);
        ev(e0, "e0", "RESET", "RESET", IOCTL_EVTCHN_RESET, 0, 0, P_OK);
        ev(e0, "e0", "unknown evtchn ioctl 7", "UNKNOWN", _IOC(_IOC_NONE, 'E', 7, 0), 0, 0, P_OK);
        /* restriction */
        ev(e1, "e1", "RESTRICT_DOMID 0", "RESTRICT_DOMID", IOCTL_EVTCHN_RESTRICT_DOMID, 0, 0, P_OK);
        ev(e1, "e1", "RESTRICT_DOMID DOMID_FIRST_RESERVED", "RESTRICT_DOMID", IOCTL_EVTCHN_RESTRICT_DOMID, DOMID_FIRST_RESERVED, 0, P_OK);
        ev(e1, "e1", "RESTRICT_DOMID argument unmapped", "RESTRICT_DOMID", IOCTL_EVTCHN_RESTRICT_DOMID, A, 0, P_BAD);
        ev(e1, "e1", "RESTRICT_DOMID A", "RESTRICT_DOMID", IOCTL_EVTCHN_RESTRICT_DOMID, A, 0, P_OK);
        ev(e1, "e1", "RESTRICT_DOMID A again", "RESTRICT_DOMID", IOCTL_EVTCHN_RESTRICT_DOMID, A, 0, P_OK);
        ev(e1, "e1", "RESTRICT_DOMID argument unmapped, restricted", "RESTRICT_DOMID", IOCTL_EVTCHN_RESTRICT_DOMID, A, 0, P_BAD);
        ev(e1, "e1", "BIND_VIRQ restricted", "BIND_VIRQ", IOCTL_EVTCHN_BIND_VIRQ, 11 /* VIRQ_ARGO: Linux binds no handler to it */, 0, P_OK);
        ev(e1, "e1", "BIND_UNBOUND_PORT restricted", "BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT, A, 0, P_OK);
        ev(e1, "e1", "BIND_INTERDOMAIN B restricted to A", "BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, B, 1, P_OK);
        ev(e1, "e1", "BIND_INTERDOMAIN A port 1 restricted to A", "BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, A, 1, P_OK);
        ev(e1, "e1", "BIND_INTERDOMAIN argument unmapped, restricted", "BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, B, 1, P_BAD);
        ev(e2, "e2", "BIND_VIRQ 11 (VIRQ_ARGO) unrestricted", "BIND_VIRQ", IOCTL_EVTCHN_BIND_VIRQ, 11 /* VIRQ_ARGO: Linux binds no handler to it */, 0, P_OK);
        ev(e2, "e2", "BIND_VIRQ 99", "BIND_VIRQ", IOCTL_EVTCHN_BIND_VIRQ, 99, 0, P_OK);
        ev(e2, "e2", "BIND_VIRQ argument unmapped", "BIND_VIRQ", IOCTL_EVTCHN_BIND_VIRQ, 1, 0, P_BAD);
    }

    /* ================= end: shut B down, then ask again ================= */
    layer = "dmop";
    op = mk(XEN_DMOP_remote_shutdown);
    op.u.remote_shutdown.reason = SHUTDOWN_poweroff;
    dm(p0, "p0", "remote_shutdown B poweroff", B, &op, NULL, 0);
    op = mk(XEN_DMOP_nr_vcpus);
    dm(p0, "p0", "nr_vcpus B after shutdown", B, &op, NULL, 0);
    DESTROY("destroy_ioreq_server on B after shutdown", B, b0);

    close(e0); close(e1); close(e2);
    close(p0); close(p1); close(p2); close(p3);
    xc_domain_destroy(xch, A);
    xc_domain_destroy(xch, B);
    xc_interface_close(xch);
    fprintf(stderr, "xen-matrix: %d requests\n", n);
    return 0;
}
