/*
 * dmop-capture shim: an LD_PRELOAD stand-in for /dev/xen/privcmd.
 *
 * Opening /dev/xen/privcmd returns a descriptor of /dev/zero (so libxenforeignmemory's
 * MAP_SHARED mmap of the privcmd fd succeeds); /dev/xen/hypercall reports ENOENT, as on a
 * kernel without the hypercall buffer device. Every ioctl on such a descriptor is recorded:
 * the bytes of its argument and of the buffers the argument points to, before the call, and
 * the same buffers after the fake reply the driver queued with capture_reply(). Pointer
 * fields and padding are recorded as zero: they are addresses in this process, or bytes the
 * library leaves uninitialised, not part of the ABI.
 *
 * The driver (drive.c) reads the records with capture_take(), found through dlsym.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xenctrl.h>
#define __user
#include <xen/sys/privcmd.h>

#define MAX_FD 1024
static unsigned char fake_fd[MAX_FD];

static char *out;
static size_t out_len, out_cap;

static void put(const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(out ? out + out_len : NULL, out ? out_cap - out_len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) abort();
    if (out && out_len + (size_t)n < out_cap) {
      out_len += (size_t)n;
      return;
    }
    out_cap = out_cap * 2 + (size_t)n + 4096;
    out = realloc(out, out_cap);
    if (out == NULL) abort();
  }
}

static void put_hex(const void *data, size_t size) {
  const unsigned char *d = data;
  put("\"");
  for (size_t i = 0; i < size; i++) put("%02x", d[i]);
  put("\"");
}

/* Queued reply for the next recorded ioctl. */
static int reply_ret, reply_errno, reply_nbufs;
static const void *reply_bufs[8];
static size_t reply_sizes[8];
static int reply_set;

void capture_reply(int ret, int err, int nbufs, const void **bufs, const size_t *sizes) {
  reply_ret = ret;
  reply_errno = err;
  reply_nbufs = nbufs > 8 ? 8 : nbufs;
  for (int i = 0; i < reply_nbufs; i++) {
    reply_bufs[i] = bufs[i];
    reply_sizes[i] = sizes[i];
  }
  reply_set = 1;
}

/* Returns the JSON array of the ioctls recorded since the last call; the caller frees it. */
char *capture_take(void) {
  char *s = malloc(out_len + 3);
  if (s == NULL) abort();
  s[0] = '[';
  if (out_len) memcpy(s + 1, out, out_len);
  s[out_len + 1] = ']';
  s[out_len + 2] = '\0';
  out_len = 0;
  return s;
}

static void apply_reply_buf(int i, void *dst, size_t size) {
  if (!reply_set || i >= reply_nbufs || reply_bufs[i] == NULL || dst == NULL) return;
  memcpy(dst, reply_bufs[i], reply_sizes[i] < size ? reply_sizes[i] : size);
}

static const char *name_of(unsigned long req) {
  switch (req) {
  case IOCTL_PRIVCMD_HYPERCALL: return "IOCTL_PRIVCMD_HYPERCALL";
  case IOCTL_PRIVCMD_MMAP: return "IOCTL_PRIVCMD_MMAP";
  case IOCTL_PRIVCMD_MMAPBATCH: return "IOCTL_PRIVCMD_MMAPBATCH";
  case IOCTL_PRIVCMD_MMAPBATCH_V2: return "IOCTL_PRIVCMD_MMAPBATCH_V2";
  case IOCTL_PRIVCMD_DM_OP: return "IOCTL_PRIVCMD_DM_OP";
  case IOCTL_PRIVCMD_RESTRICT: return "IOCTL_PRIVCMD_RESTRICT";
  case IOCTL_PRIVCMD_MMAP_RESOURCE: return "IOCTL_PRIVCMD_MMAP_RESOURCE";
  case IOCTL_PRIVCMD_UNIMPLEMENTED: return "IOCTL_PRIVCMD_UNIMPLEMENTED";
  default: return "unknown";
  }
}

static int fake_ioctl(unsigned long req, void *arg) {
  int ret = reply_set ? reply_ret : 0;
  int err = reply_set ? reply_errno : 0;
  /* libxenforeignmemory probes with an ioctl no kernel implements and expects it to fail. */
  if (req == IOCTL_PRIVCMD_UNIMPLEMENTED && !reply_set) {
    ret = -1;
    err = ENOSYS;
  }
  if (out_len) put(",");
  put("{\"request\":%lu,\"name\":\"%s\"", req & 0xffffffffUL, name_of(req));
  if (req == IOCTL_PRIVCMD_DM_OP) {
    privcmd_dm_op_t *op = arg, copy;
    memset(&copy, 0, sizeof(copy));
    copy.dom = op->dom;
    copy.num = op->num;
    put(",\"arg\":");
    put_hex(&copy, sizeof(copy));
    put(",\"dom\":%u,\"num\":%u,\"ubufs\":[", op->dom, op->num);
    for (unsigned i = 0; i < op->num; i++) {
      privcmd_dm_op_buf_t b;
      memset(&b, 0, sizeof(b));
      b.size = op->ubufs[i].size;
      put(i ? "," : "");
      put_hex(&b, sizeof(b));
    }
    put("],\"bufs\":[");
    for (unsigned i = 0; i < op->num; i++) {
      put(i ? "," : "");
      put_hex(op->ubufs[i].uptr, op->ubufs[i].size);
    }
    put("]");
    for (unsigned i = 0; i < op->num; i++) apply_reply_buf((int)i, op->ubufs[i].uptr, op->ubufs[i].size);
    put(",\"replyBufs\":[");
    for (unsigned i = 0; i < op->num; i++) {
      put(i ? "," : "");
      put_hex(op->ubufs[i].uptr, op->ubufs[i].size);
    }
    put("]");
  } else if (req == IOCTL_PRIVCMD_MMAPBATCH_V2) {
    privcmd_mmapbatch_v2_t *m = arg, copy;
    memset(&copy, 0, sizeof(copy));
    copy.num = m->num;
    copy.dom = m->dom;
    put(",\"arg\":");
    put_hex(&copy, sizeof(copy));
    put(",\"dom\":%u,\"num\":%u,\"arr\":", m->dom, m->num);
    put_hex(m->arr, m->num * sizeof(*m->arr));
    put(",\"err\":");
    put_hex(m->err, m->num * sizeof(*m->err));
    apply_reply_buf(0, m->err, m->num * sizeof(*m->err));
    put(",\"replyErr\":");
    put_hex(m->err, m->num * sizeof(*m->err));
  } else if (req == IOCTL_PRIVCMD_MMAP_RESOURCE) {
    privcmd_mmap_resource_t *m = arg, copy;
    memset(&copy, 0, sizeof(copy));
    copy.dom = m->dom;
    copy.type = m->type;
    copy.id = m->id;
    copy.idx = m->idx;
    copy.num = m->num;
    put(",\"arg\":");
    put_hex(&copy, sizeof(copy));
  } else if (req == IOCTL_PRIVCMD_RESTRICT) {
    put(",\"arg\":");
    put_hex(arg, sizeof(domid_t));
  } else if (req == IOCTL_PRIVCMD_HYPERCALL) {
    put(",\"arg\":");
    put_hex(arg, sizeof(privcmd_hypercall_t));
  }
  put(",\"ret\":%d,\"errno\":%d}", ret, ret < 0 ? err : 0);
  reply_set = 0;
  if (ret < 0) errno = err;
  return ret;
}

int ioctl(int fd, unsigned long request, ...) {
  va_list ap;
  va_start(ap, request);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  if (fd >= 0 && fd < MAX_FD && fake_fd[fd]) return fake_ioctl(request, arg);
  return (int)syscall(SYS_ioctl, fd, request, arg);
}

static int open_common(int dirfd, const char *path, int flags, mode_t mode) {
  if (path != NULL && strcmp(path, "/dev/xen/hypercall") == 0) {
    errno = ENOENT;
    return -1;
  }
  if (path != NULL && strcmp(path, "/dev/xen/privcmd") == 0) {
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/dev/zero", O_RDWR | (flags & O_CLOEXEC));
    if (fd >= 0 && fd < MAX_FD) fake_fd[fd] = 1;
    return fd;
  }
  return (int)syscall(SYS_openat, dirfd, path, flags, mode);
}

#define MODE_ARG(flags)                                                                                                \
  mode_t mode = 0;                                                                                                     \
  if ((flags) & (O_CREAT | O_TMPFILE)) {                                                                               \
    va_list ap;                                                                                                        \
    va_start(ap, flags);                                                                                               \
    mode = va_arg(ap, mode_t);                                                                                         \
    va_end(ap);                                                                                                        \
  }

int open(const char *path, int flags, ...) {
  MODE_ARG(flags);
  return open_common(AT_FDCWD, path, flags, mode);
}
int open64(const char *path, int flags, ...) {
  MODE_ARG(flags);
  return open_common(AT_FDCWD, path, flags, mode);
}
int openat(int dirfd, const char *path, int flags, ...) {
  MODE_ARG(flags);
  return open_common(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) {
  MODE_ARG(flags);
  return open_common(dirfd, path, flags, mode);
}
int __open_2(const char *path, int flags) { return open_common(AT_FDCWD, path, flags, 0); }
int __open64_2(const char *path, int flags) { return open_common(AT_FDCWD, path, flags, 0); }

int close(int fd) {
  if (fd >= 0 && fd < MAX_FD) fake_fd[fd] = 0;
  return (int)syscall(SYS_close, fd);
}
