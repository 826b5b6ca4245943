/*
 * privcmd-trace: an LD_PRELOAD recorder of every ioctl a process makes on /dev/xen/privcmd,
 * /dev/xen/evtchn and /dev/xen/gntdev, one JSON object a line, with the request's input fields
 * read before the call and its result after.
 *
 *   PRIVCMD_TRACE=/path/to/trace.jsonl   where to append (default: stderr, or the build's
 *                                        PRIVCMD_TRACE_DEFAULT)
 *   PRIVCMD_TRACE=unix:/path/to/socket   send the lines over one stream connection to a listener
 *                                        there instead: no file is written, so RLIMIT_FSIZE does
 *                                        not apply (a launcher's DM may write 256 KiB at most)
 *   PRIVCMD_TRACE_FAKE=1                 stand in for the devices on a machine without Xen: opening
 *                                        one of them opens /dev/null, and its ioctls return 0
 *                                        without reaching the kernel.
 *
 * `auditTrace` in @xen-depriv/privcmd-filter reads the output.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <xenctrl.h>
#define __user
#include <xen/sys/evtchn.h>
#include <xen/sys/gntdev.h>
#include <xen/sys/privcmd.h>

enum dev { DEV_NONE = 0, DEV_PRIVCMD, DEV_EVTCHN, DEV_GNTDEV };
static const char *const dev_names[] = { "none", "privcmd", "evtchn", "gntdev" };

#define MAX_FD 4096
static unsigned char tracked[MAX_FD];
static unsigned long seq;

static int fake(void) {
  const char *f = getenv("PRIVCMD_TRACE_FAKE");
  return f != NULL && f[0] == '1';
}

static enum dev dev_of(const char *path) {
  if (path == NULL) return DEV_NONE;
  if (strcmp(path, "/dev/xen/privcmd") == 0) return DEV_PRIVCMD;
  if (strcmp(path, "/dev/xen/evtchn") == 0) return DEV_EVTCHN;
  if (strcmp(path, "/dev/xen/gntdev") == 0) return DEV_GNTDEV;
  return DEV_NONE;
}

/*
 * A launcher that clears the environment (env -i) leaves no PRIVCMD_TRACE: a build for such a
 * launcher names its destination at compile time (make lab).
 */
#ifndef PRIVCMD_TRACE_DEFAULT
#define PRIVCMD_TRACE_DEFAULT ""
#endif

static const char *destination(void) {
  const char *path = getenv("PRIVCMD_TRACE");
  return path != NULL && path[0] != '\0' ? path : PRIVCMD_TRACE_DEFAULT;
}

static pthread_mutex_t sock_lock = PTHREAD_MUTEX_INITIALIZER;
static int sock_fd = -1;
static unsigned long lost;

static int send_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    /* MSG_NOSIGNAL: a listener gone away costs the trace, never the traced process (SIGPIPE). */
    ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/*
 * The stream to a unix socket, connected at the first line (again at a later line if the
 * listener was not there yet; the lines in between are counted and reported as "lost").
 */
static void emit_unix(const char *path, const char *line, size_t len) {
  pthread_mutex_lock(&sock_lock);
  if (sock_fd < 0) {
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = strlen(path) < sizeof a.sun_path ? socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
    if (fd >= 0) {
      memcpy(a.sun_path, path, strlen(path) + 1);
      if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        sock_fd = fd;
      } else {
        syscall(SYS_close, fd);
      }
    }
    if (sock_fd >= 0 && lost > 0) {
      char note[64];
      int n = snprintf(note, sizeof note, "{\"lost\":%lu}\n", lost);
      if (send_all(sock_fd, note, (size_t)n) == 0) lost = 0;
    }
  }
  if (sock_fd < 0 || send_all(sock_fd, line, len) < 0) lost++;
  pthread_mutex_unlock(&sock_lock);
}

/* One line, one write(2): lines of concurrent threads do not interleave. */
static void emit(const char *line, size_t len) {
  const char *path = destination();
  int fd = 2, opened = 0;
  if (strncmp(path, "unix:", 5) == 0) {
    emit_unix(path + 5, line, len);
    return;
  }
  if (path[0] != '\0') {
    fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    opened = 1;
  }
  ssize_t w = write(fd, line, len);
  (void)w;
  if (opened) syscall(SYS_close, fd);
}

struct buf {
  char *p;
  size_t len, cap;
};

static void put(struct buf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->len + (size_t)n < b->cap) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 + (size_t)n + 64;
    char *p = realloc(b->p, cap);
    if (p == NULL) return;
    b->p = p;
    b->cap = cap;
  }
}

static void put_hex(struct buf *b, const void *data, size_t size) {
  const unsigned char *d = data;
  put(b, "\"");
  for (size_t i = 0; i < size; i++) put(b, "%02x", d[i]);
  put(b, "\"");
}

/* The fields each handler in drivers/xen/{privcmd,evtchn,gntdev}.c reads from the argument. */
static void describe(struct buf *b, enum dev dev, unsigned long req, void *arg) {
  if (arg == NULL) return;
  switch (dev) {
  case DEV_PRIVCMD:
    if (req == IOCTL_PRIVCMD_DM_OP) {
      privcmd_dm_op_t *op = arg;
      put(b, ",\"dom\":%u,\"num\":%u,\"bufs\":[", op->dom, op->num);
      for (unsigned i = 0; i < op->num && op->ubufs != NULL; i++) {
        if (i) put(b, ",");
        /* 1 MiB: far over dm_op_buf_max_size; a larger size is logged without its bytes. */
        if (op->ubufs[i].size <= (1u << 20)) put_hex(b, op->ubufs[i].uptr, op->ubufs[i].size);
        else put(b, "{\"size\":%zu}", op->ubufs[i].size);
      }
      put(b, "]");
    } else if (req == IOCTL_PRIVCMD_RESTRICT) {
      put(b, ",\"domid\":%u", *(domid_t *)arg);
    } else if (req == IOCTL_PRIVCMD_HYPERCALL) {
      privcmd_hypercall_t *h = arg;
      put(b, ",\"op\":%llu,\"args\":[%llu,%llu,%llu,%llu,%llu]", (unsigned long long)h->op,
          (unsigned long long)h->arg[0], (unsigned long long)h->arg[1], (unsigned long long)h->arg[2],
          (unsigned long long)h->arg[3], (unsigned long long)h->arg[4]);
    } else if (req == IOCTL_PRIVCMD_MMAP) {
      privcmd_mmap_t *m = arg;
      put(b, ",\"dom\":%u,\"num\":%d", m->dom, m->num);
    } else if (req == IOCTL_PRIVCMD_MMAPBATCH) {
      privcmd_mmapbatch_t *m = arg;
      put(b, ",\"dom\":%u,\"num\":%d,\"addr\":%llu", m->dom, m->num, (unsigned long long)m->addr);
    } else if (req == IOCTL_PRIVCMD_MMAPBATCH_V2) {
      privcmd_mmapbatch_v2_t *m = arg;
      put(b, ",\"dom\":%u,\"num\":%u,\"addr\":%llu", m->dom, m->num, (unsigned long long)m->addr);
    } else if (req == IOCTL_PRIVCMD_MMAP_RESOURCE) {
      privcmd_mmap_resource_t *m = arg;
      put(b, ",\"dom\":%u,\"type\":%u,\"id\":%u,\"idx\":%u,\"num\":%llu,\"addr\":%llu", m->dom, m->type, m->id,
          m->idx, (unsigned long long)m->num, (unsigned long long)m->addr);
    }
    break;
  case DEV_EVTCHN:
    if (req == IOCTL_EVTCHN_BIND_VIRQ) {
      put(b, ",\"virq\":%u", ((struct ioctl_evtchn_bind_virq *)arg)->virq);
    } else if (req == IOCTL_EVTCHN_BIND_INTERDOMAIN) {
      struct ioctl_evtchn_bind_interdomain *x = arg;
      put(b, ",\"remote_domain\":%u,\"remote_port\":%u", x->remote_domain, x->remote_port);
    } else if (req == IOCTL_EVTCHN_BIND_UNBOUND_PORT) {
      put(b, ",\"remote_domain\":%u", ((struct ioctl_evtchn_bind_unbound_port *)arg)->remote_domain);
    } else if (req == IOCTL_EVTCHN_UNBIND || req == IOCTL_EVTCHN_NOTIFY) {
      put(b, ",\"port\":%u", ((struct ioctl_evtchn_notify *)arg)->port);
    } else if (req == IOCTL_EVTCHN_RESTRICT_DOMID) {
      put(b, ",\"domid\":%u", ((struct ioctl_evtchn_restrict_domid *)arg)->domid);
    }
    break;
  case DEV_GNTDEV:
    if (req == IOCTL_GNTDEV_MAP_GRANT_REF) {
      struct ioctl_gntdev_map_grant_ref *m = arg;
      put(b, ",\"count\":%u,\"domid\":%u", m->count, m->count ? m->refs[0].domid : 0);
    } else if (req == IOCTL_GNTDEV_SET_MAX_GRANTS) {
      put(b, ",\"count\":%u", ((struct ioctl_gntdev_set_max_grants *)arg)->count);
    }
    break;
  default:
    break;
  }
}

static int (*real_ioctl)(int, unsigned long, ...);

int ioctl(int fd, unsigned long request, ...) {
  va_list ap;
  va_start(ap, request);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  if (real_ioctl == NULL) real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
  enum dev dev = fd >= 0 && fd < MAX_FD ? (enum dev)tracked[fd] : DEV_NONE;
  if (dev == DEV_NONE) return real_ioctl(fd, request, arg);

  struct buf b = { malloc(512), 0, 512 };
  if (b.p == NULL) return real_ioctl(fd, request, arg);
  put(&b, "{\"seq\":%lu,\"pid\":%d,\"dev\":\"%s\",\"fd\":%d,\"request\":%lu", __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST),
      (int)getpid(), dev_names[dev], fd, request & 0xffffffffUL);
  describe(&b, dev, request, arg);
  int ret = fake() ? 0 : real_ioctl(fd, request, arg);
  int saved = errno;
  put(&b, ",\"ret\":%d,\"errno\":%d%s}\n", ret, ret < 0 ? saved : 0, fake() ? ",\"fake\":true" : "");
  emit(b.p, b.len);
  free(b.p);
  errno = saved;
  return ret;
}

static int track(int fd, enum dev dev) {
  if (fd >= 0 && fd < MAX_FD) tracked[fd] = (unsigned char)dev;
  return fd;
}

static int open_common(const char *name, int dirfd, const char *path, int flags, mode_t mode) {
  enum dev dev = dev_of(path);
  if (dev != DEV_NONE && fake()) {
    path = "/dev/null";
    flags &= ~(O_CREAT | O_EXCL | O_TRUNC);
  }
  int (*real)(int, const char *, int, ...) = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, name);
  int fd = real != NULL ? real(dirfd, path, flags, mode) : (int)syscall(SYS_openat, dirfd, path, flags, mode);
  if (fd >= 0) track(fd, dev);
  return fd;
}

#define MODE_ARG(flags)                                                                                                \
  mode_t mode = 0;                                                                                                     \
  if ((flags) & (O_CREAT | O_TMPFILE)) {                                                                               \
    va_list ap;                                                                                                        \
    va_start(ap, flags);                                                                                               \
    mode = va_arg(ap, mode_t);                                                                                         \
    va_end(ap);                                                                                                        \
  }

int openat(int dirfd, const char *path, int flags, ...) {
  MODE_ARG(flags);
  return open_common("openat", dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) {
  MODE_ARG(flags);
  return open_common("openat64", dirfd, path, flags, mode);
}
int open(const char *path, int flags, ...) {
  MODE_ARG(flags);
  return open_common("openat", AT_FDCWD, path, flags, mode);
}
int open64(const char *path, int flags, ...) {
  MODE_ARG(flags);
  return open_common("openat64", AT_FDCWD, path, flags, mode);
}
int __open_2(const char *path, int flags) { return open_common("openat", AT_FDCWD, path, flags, 0); }
int __open64_2(const char *path, int flags) { return open_common("openat64", AT_FDCWD, path, flags, 0); }

int close(int fd) {
  track(fd, DEV_NONE);
  if (fd >= 0 && fd == __atomic_load_n(&sock_fd, __ATOMIC_SEQ_CST)) {
    /* Someone else's close of the trace stream: reconnect at the next line. */
    __atomic_store_n(&sock_fd, -1, __ATOMIC_SEQ_CST);
  }
  return (int)syscall(SYS_close, fd);
}

/* xentoolcore_restrict_all dup2s /dev/null over handles it cannot restrict (xencall, gntdev). */
int dup2(int oldfd, int newfd) {
  int r = (int)syscall(SYS_dup2, oldfd, newfd);
  if (r >= 0 && oldfd >= 0 && oldfd < MAX_FD && oldfd != newfd) track(newfd, (enum dev)tracked[oldfd]);
  return r;
}
int dup3(int oldfd, int newfd, int flags) {
  int r = (int)syscall(SYS_dup3, oldfd, newfd, flags);
  if (r >= 0 && oldfd >= 0 && oldfd < MAX_FD) track(newfd, (enum dev)tracked[oldfd]);
  return r;
}
