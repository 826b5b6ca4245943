/*
 * Records what Debian's libxenforeignmemory does for xenforeignmemory_map(): the mmap of the
 * privcmd fd and each IOCTL_PRIVCMD_MMAPBATCH_V2 (struct bytes with the pointer slots and the
 * padding cleared, the gfn array, where `addr` points in the mapping), one JSON object a line.
 * open/mmap/ioctl are defined here and exported (-Wl,--export-dynamic), so the library's calls
 * bind to them: /dev/xen/privcmd becomes /dev/zero, and the MMAPBATCH_V2 replies follow the
 * scenario given as argv[1]:
 *   plain: one call, per-frame errors {0, -EFAULT, -ENOENT}, ioctl returns 0 (no retry);
 *   paged: the first call fails with ENOENT leaving frames 1 and 2 paged out, the library's
 *          retry_paged asks again for runs of paged frames until none is left.
 * Build: gcc -o fm-capture fm-capture.c -Wl,--export-dynamic -lxenforeignmemory
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xenforeignmemory.h>
#include <xen/sys/privcmd.h>

static int fake_fd = -1;
static char *last_map;
static const char *scenario = "plain";
static int batch_calls;

static void put_hex(const void *p, size_t n) {
  const unsigned char *b = p;
  putchar('"');
  for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
  putchar('"');
}

static int open_common(const char *path, int flags, mode_t mode) {
  if (path != NULL && strcmp(path, "/dev/xen/privcmd") == 0) {
    fake_fd = (int)syscall(SYS_openat, AT_FDCWD, "/dev/zero", O_RDWR | (flags & O_CLOEXEC));
    return fake_fd;
  }
  return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

int open(const char *path, int flags, ...) {
  mode_t mode = 0;
  if (flags & O_CREAT) {
    va_list ap;
    va_start(ap, flags);
    mode = (mode_t)va_arg(ap, int);
    va_end(ap);
  }
  return open_common(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
  mode_t mode = 0;
  if (flags & O_CREAT) {
    va_list ap;
    va_start(ap, flags);
    mode = (mode_t)va_arg(ap, int);
    va_end(ap);
  }
  return open_common(path, flags, mode);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  void *r = (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  if (fd >= 0 && fd == fake_fd) {
    last_map = r;
    printf("{\"call\":\"mmap\",\"addrNull\":%s,\"length\":%zu,\"prot\":%d,\"flags\":%d,\"offset\":%lld}\n",
           addr == NULL ? "true" : "false", len, prot, flags, (long long)off);
  }
  return r;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return mmap(addr, len, prot, flags, fd, off);
}

static int reply(privcmd_mmapbatch_v2_t *m) {
  batch_calls++;
  if (strcmp(scenario, "plain") == 0) {
    const int e[3] = { 0, -EFAULT, -ENOENT };
    memcpy(m->err, e, sizeof(e));
    return 0;
  }
  /* paged: call 1 leaves frames 1 and 2 paged out; call 2 (both) maps 1, leaves 2; call 3 maps 2. */
  if (batch_calls == 1) {
    const int e[4] = { 0, -ENOENT, -ENOENT, 0 };
    memcpy(m->err, e, sizeof(e));
    errno = ENOENT;
    return -1;
  }
  if (batch_calls == 2) {
    m->err[0] = 0;
    m->err[1] = -ENOENT;
    errno = ENOENT;
    return -1;
  }
  m->err[0] = 0;
  return 0;
}

int ioctl(int fd, unsigned long request, ...) {
  va_list ap;
  va_start(ap, request);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  if (fd < 0 || fd != fake_fd) return (int)syscall(SYS_ioctl, fd, request, arg);
  if (request != IOCTL_PRIVCMD_MMAPBATCH_V2) {
    /* The IOCTL_PRIVCMD_UNIMPLEMENTED probe of xenforeignmemory_open, as Linux answers it. */
    errno = ENOTTY;
    return -1;
  }
  privcmd_mmapbatch_v2_t *m = arg, copy;
  memset(&copy, 0, sizeof(copy));
  copy.num = m->num;
  copy.dom = m->dom;
  printf("{\"call\":\"ioctl\",\"request\":%lu,\"arg\":", request);
  put_hex(&copy, sizeof(copy));
  printf(",\"addrOffset\":%lld,\"arr\":", (long long)((char *)(uintptr_t)m->addr - last_map));
  put_hex(m->arr, m->num * sizeof(*m->arr));
  int rc = reply(m);
  int saved = errno;
  printf(",\"ret\":%d,\"errno\":%d}\n", rc, rc < 0 ? saved : 0);
  errno = saved;
  return rc;
}

int main(int argc, char **argv) {
  if (argc > 1) scenario = argv[1];
  setvbuf(stdout, NULL, _IOLBF, 0);
  xenforeignmemory_handle *fm = xenforeignmemory_open(NULL, 0);
  if (!fm) {
    perror("xenforeignmemory_open");
    return 1;
  }
  const int paged = strcmp(scenario, "paged") == 0;
  const xen_pfn_t arr[4] = { 0x123456789ull, 0x12345, 0xfffffffffull, 0x1000 };
  int err[4] = { 0x11111111, 0x22222222, 0x33333333, 0x44444444 };
  size_t num = paged ? 4 : 3;
  void *p = xenforeignmemory_map(fm, 32751, PROT_READ | PROT_WRITE, num, arr, err);
  printf("{\"call\":\"result\",\"mapped\":%s,\"errno\":%d,\"err\":[", p ? "true" : "false", p ? 0 : errno);
  for (size_t i = 0; i < num; i++) printf("%s%d", i ? "," : "", err[i]);
  printf("]}\n");
  if (p) xenforeignmemory_unmap(fm, p, num);
  xenforeignmemory_close(fm);
  return 0;
}
