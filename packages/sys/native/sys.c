/*
 * The Node-API surface of @xen-depriv/sys. Argument shapes are validated in TypeScript first
 * (src/native.ts); every function here re-checks types so that a direct call with bad input
 * throws instead of crashing the process.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

/* ---- errors and argument helpers ---- */

/* Builds (does not throw) an instance of the registered class, or a plain Error before
 * setErrorClasses ran. NULL only when even that failed. */
static napi_value make_with_class(napi_env env, napi_ref cls_ref, const char *first, int err,
                                  const char *detail) {
  napi_value cls = NULL, obj = NULL;
  if (cls_ref == NULL || napi_get_reference_value(env, cls_ref, &cls) != napi_ok || cls == NULL) {
    char msg[512];
    napi_value text;
    snprintf(msg, sizeof msg, "%s: %s%s%s", first, strerror(err), detail ? ": " : "",
             detail ? detail : "");
    if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text) != napi_ok ||
        napi_create_error(env, NULL, text, &obj) != napi_ok)
      return NULL;
    return obj;
  }
  napi_value args[3];
  napi_create_string_utf8(env, first, NAPI_AUTO_LENGTH, &args[0]);
  napi_create_int32(env, err, &args[1]);
  if (detail)
    napi_create_string_utf8(env, detail, NAPI_AUTO_LENGTH, &args[2]);
  else
    napi_get_undefined(env, &args[2]);
  if (napi_new_instance(env, cls, 3, args, &obj) != napi_ok) return NULL;
  return obj;
}

static napi_value throw_with_class(napi_env env, napi_ref cls_ref, const char *first, int err,
                                   const char *detail) {
  napi_value obj = make_with_class(env, cls_ref, first, err, detail);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (obj && !pending) napi_throw(env, obj);
  return NULL;
}

static addon_state *state(napi_env env) {
  addon_state *st = NULL;
  napi_get_instance_data(env, (void **)&st);
  return st;
}

napi_value throw_sys_error(napi_env env, const char *syscall, int err, const char *detail) {
  addon_state *st = state(env);
  return throw_with_class(env, st ? st->sys_error : NULL, syscall, err, detail);
}

napi_value make_sys_error(napi_env env, const char *syscall, int err, const char *detail) {
  addon_state *st = state(env);
  return make_with_class(env, st ? st->sys_error : NULL, syscall, err, detail);
}

napi_value throw_spawn_error(napi_env env, const char *step, int err, const char *detail) {
  addon_state *st = state(env);
  return throw_with_class(env, st ? st->spawn_error : NULL, step, err, detail);
}

napi_value throw_type_error(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static bool type_is(napi_env env, napi_value v, napi_valuetype want) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && t == want;
}

bool get_int64(napi_env env, napi_value v, const char *what, int64_t *out) {
  double d;
  /* napi_get_value_double fails with napi_number_expected for a non-number. */
  if (napi_get_value_double(env, v, &d) != napi_ok ||
      d != d || d < -9007199254740991.0 || d > 9007199254740991.0 || (double)(int64_t)d != d) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be an integer", what);
    throw_type_error(env, msg);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

bool get_int32(napi_env env, napi_value v, const char *what, int32_t *out) {
  int64_t n;
  if (!get_int64(env, v, what, &n)) return false;
  if (n < INT32_MIN || n > INT32_MAX) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must fit in int32, got %lld", what, (long long)n);
    throw_type_error(env, msg);
    return false;
  }
  *out = (int32_t)n;
  return true;
}

bool get_uint32(napi_env env, napi_value v, const char *what, uint32_t *out) {
  int64_t n;
  if (!get_int64(env, v, what, &n)) return false;
  if (n < 0 || n > UINT32_MAX) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must fit in uint32, got %lld", what, (long long)n);
    throw_type_error(env, msg);
    return false;
  }
  *out = (uint32_t)n;
  return true;
}

bool get_fd(napi_env env, napi_value v, const char *what, int *fd) {
  int32_t n;
  if (!get_int32(env, v, what, &n)) return false;
  if (n < 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a non-negative file descriptor, got %d", what, n);
    throw_type_error(env, msg);
    return false;
  }
  *fd = n;
  return true;
}

char *get_string(napi_env env, napi_value v, const char *what) {
  char msg[160];
  size_t len = 0;
  if (!type_is(env, v, napi_string) ||
      napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    snprintf(msg, sizeof msg, "%s must be a string", what);
    throw_type_error(env, msg);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) {
    throw_sys_error(env, "malloc", ENOMEM, what);
    return NULL;
  }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    snprintf(msg, sizeof msg, "%s must not contain NUL characters", what);
    throw_type_error(env, msg);
    return NULL;
  }
  return s;
}

bool get_bytes(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len) {
  napi_typedarray_type type;
  size_t length;
  void *ptr;
  /* napi_get_typedarray_info fails with napi_invalid_arg for anything but a typed array. */
  if (napi_get_typedarray_info(env, v, &type, &length, &ptr, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a Uint8Array", what);
    throw_type_error(env, msg);
    return false;
  }
  *data = ptr;
  *len = length;
  return true;
}

napi_value make_int(napi_env env, int64_t n) {
  napi_value v;
  napi_create_int64(env, n, &v);
  return v;
}

napi_value get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_value undef = NULL;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  /* napi_get_cb_info already fills missing arguments with undefined. */
  return argv[0] ? argv[0] : (napi_get_undefined(env, &undef), undef);
}

/* ---- ioctl ---- */

#define MAX_POINTERS 64

static napi_value js_ioctl(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = 4;
  /* The hot path: kept to as few Node-API calls as possible (see bench/sys/ioctl.mjs). */
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  uint32_t request;
  uint8_t *arg;
  size_t arg_len;
  if (!get_fd(env, argv[0], "fd", &fd) || !get_uint32(env, argv[1], "request", &request) ||
      !get_bytes(env, argv[2], "arg", &arg, &arg_len))
    return NULL;

  /* Pointer slots are patched in place and restored after the call, so the caller's bytes
   * come back as they were apart from what the kernel itself wrote. */
  size_t offsets[MAX_POINTERS];
  uint64_t saved[MAX_POINTERS];
  uint64_t addrs[MAX_POINTERS];
  uint32_t n = 0;
  if (argc >= 4 && !type_is(env, argv[3], napi_undefined)) {
    bool is_array = false;
    if (napi_is_array(env, argv[3], &is_array) != napi_ok || !is_array)
      return throw_type_error(env, "pointers must be an array of { offset, buffer }");
    NAPI_CALL(env, napi_get_array_length(env, argv[3], &n));
    if (n > MAX_POINTERS) return throw_type_error(env, "pointers: at most 64 entries");
    for (uint32_t i = 0; i < n; i++) {
      napi_value entry, off_v, buf_v;
      int64_t off;
      uint8_t *data;
      size_t len;
      NAPI_CALL(env, napi_get_element(env, argv[3], i, &entry));
      if (!type_is(env, entry, napi_object))
        return throw_type_error(env, "pointers[i] must be { offset, buffer }");
      NAPI_CALL(env, napi_get_named_property(env, entry, "offset", &off_v));
      NAPI_CALL(env, napi_get_named_property(env, entry, "buffer", &buf_v));
      if (!get_int64(env, off_v, "pointers[i].offset", &off) ||
          !get_bytes(env, buf_v, "pointers[i].buffer", &data, &len))
        return NULL;
      if (off < 0 || (uint64_t)off + 8 > arg_len) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "pointers[%u].offset %lld: an 8-byte pointer must lie inside arg (%zu bytes)", i,
                 (long long)off, arg_len);
        throw_type_error(env, msg);
        return NULL;
      }
      for (uint32_t j = 0; j < i; j++) {
        if ((size_t)off < offsets[j] + 8 && offsets[j] < (size_t)off + 8) {
          char msg[200];
          snprintf(msg, sizeof msg, "pointers[%u].offset %lld overlaps pointers[%u].offset %zu", i,
                   (long long)off, j, offsets[j]);
          throw_type_error(env, msg);
          return NULL;
        }
      }
      offsets[i] = (size_t)off;
      addrs[i] = (uint64_t)(uintptr_t)data;
    }
  }
  for (uint32_t i = 0; i < n; i++) {
    memcpy(&saved[i], arg + offsets[i], 8);
    memcpy(arg + offsets[i], &addrs[i], 8);
  }
  /* An empty Uint8Array may have no backing store; the kernel then sees NULL, as in C. */
  int r = ioctl(fd, (unsigned long)request, arg_len ? (void *)arg : NULL);
  int err = errno;
  for (uint32_t i = 0; i < n; i++) memcpy(arg + offsets[i], &saved[i], 8);
  if (r < 0) {
    char detail[64];
    snprintf(detail, sizeof detail, "request 0x%08x on fd %d", request, fd);
    return throw_sys_error(env, "ioctl", err, detail);
  }
  /* Almost every ioctl returns 0: returning undefined for it saves a Node-API call on the
   * hot path; src/io.ts maps undefined back to 0. */
  if (r == 0) return NULL;
  napi_value result;
  NAPI_CALL(env, napi_create_int32(env, r, &result));
  return result;
}

/* ---- open / close ---- */

static napi_value js_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  int32_t flags, mode;
  char *path = get_string(env, argv[0], "path");
  if (!path) return NULL;
  if (!get_int32(env, argv[1], "flags", &flags) || !get_int32(env, argv[2], "mode", &mode)) {
    free(path);
    return NULL;
  }
  /* Every fd this addon hands out is close-on-exec, like Node's own; spawnConfined's fds
   * list is the one way a child inherits one. */
  int fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
  int err = errno;
  if (fd < 0) {
    napi_value r = throw_sys_error(env, "open", err, path);
    free(path);
    return r;
  }
  free(path);
  return make_int(env, fd);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !get_fd(env, argv[0], "fd", &fd)) return NULL;
  /* Linux always releases the fd, even when close reports EINTR: never retry. */
  if (close(fd) < 0 && errno != EINTR) {
    char detail[32];
    snprintf(detail, sizeof detail, "fd %d", fd);
    return throw_sys_error(env, "close", errno, detail);
  }
  return NULL;
}

/* ---- mmap ---- */

typedef struct mapping {
  void *addr;
  size_t length;
  bool mapped;
  struct mapping *next, *prev;
} mapping;

static __thread mapping *live_mappings;

static void unlink_mapping(mapping *m) {
  if (m->prev)
    m->prev->next = m->next;
  else
    live_mappings = m->next;
  if (m->next) m->next->prev = m->prev;
}

static void finalize_mapping(napi_env env, void *data, void *hint) {
  mapping *m = hint;
  if (m->mapped) munmap(m->addr, m->length);
  unlink_mapping(m);
  free(m);
}

static napi_value js_mmap(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  int fd;
  int64_t length, offset;
  int32_t prot, flags;
  if (!get_int32(env, argv[0], "fd", &fd) || !get_int64(env, argv[1], "length", &length) ||
      !get_int32(env, argv[2], "prot", &prot) || !get_int32(env, argv[3], "flags", &flags) ||
      !get_int64(env, argv[4], "offset", &offset))
    return NULL;
  if (length <= 0) return throw_type_error(env, "length must be a positive integer");
  if (offset < 0) return throw_type_error(env, "offset must be non-negative");
  mapping *m = calloc(1, sizeof *m);
  if (!m) return throw_sys_error(env, "mmap", ENOMEM, "bookkeeping");
  void *addr = mmap(NULL, (size_t)length, prot, flags, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    int err = errno;
    free(m);
    char detail[96];
    snprintf(detail, sizeof detail, "fd %d, %lld bytes at offset %lld", fd, (long long)length,
             (long long)offset);
    return throw_sys_error(env, "mmap", err, detail);
  }
  m->addr = addr;
  m->length = (size_t)length;
  m->mapped = true;
  m->next = live_mappings;
  if (live_mappings) live_mappings->prev = m;
  live_mappings = m;
  napi_value ab;
  if (napi_create_external_arraybuffer(env, addr, (size_t)length, finalize_mapping, m, &ab) !=
      napi_ok) {
    munmap(addr, (size_t)length);
    unlink_mapping(m);
    free(m);
    return throw_sys_error(env, "mmap", ENOTSUP, "external ArrayBuffers unavailable");
  }
  return ab;
}

static napi_value js_munmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  bool is_ab = false;
  if (napi_is_arraybuffer(env, argv[0], &is_ab) != napi_ok || !is_ab)
    return throw_type_error(env, "mapping must be an ArrayBuffer returned by mmap()");
  bool detached = false;
  NAPI_CALL(env, napi_is_detached_arraybuffer(env, argv[0], &detached));
  if (detached) return throw_sys_error(env, "munmap", EINVAL, "mapping is already unmapped");
  void *data;
  size_t len;
  NAPI_CALL(env, napi_get_arraybuffer_info(env, argv[0], &data, &len));
  mapping *m = live_mappings;
  while (m && !(m->mapped && m->addr == data && m->length == len)) m = m->next;
  if (!m) return throw_type_error(env, "mapping must be an ArrayBuffer returned by mmap()");
  /* Detach first so no JS view can reach the pages once they are gone. */
  NAPI_CALL(env, napi_detach_arraybuffer(env, argv[0]));
  if (munmap(m->addr, m->length) < 0) return throw_sys_error(env, "munmap", errno, NULL);
  m->mapped = false;
  return NULL;
}

/* ---- memfd, flock ---- */

static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  uint32_t flags;
  char *name = get_string(env, argv[0], "name");
  if (!name) return NULL;
  if (!get_uint32(env, argv[1], "flags", &flags)) {
    free(name);
    return NULL;
  }
  int fd = (int)syscall(SYS_memfd_create, name, flags | MFD_CLOEXEC);
  int err = errno;
  if (fd < 0) {
    napi_value r = throw_sys_error(env, "memfd_create", err, name);
    free(name);
    return r;
  }
  free(name);
  return make_int(env, fd);
}

static napi_value js_flock(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int32_t op;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], "fd", &fd) ||
      !get_int32(env, argv[1], "operation", &op))
    return NULL;
  int r;
  do r = flock(fd, op);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    char detail[48];
    snprintf(detail, sizeof detail, "fd %d, operation %d", fd, op);
    return throw_sys_error(env, "flock", errno, detail);
  }
  return NULL;
}

/* ---- passwd / group ---- */

static void set_str(napi_env env, napi_value obj, const char *key, const char *val) {
  napi_value v;
  napi_create_string_utf8(env, val ? val : "", NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_num(napi_env env, napi_value obj, const char *key, int64_t val) {
  napi_set_named_property(env, obj, key, make_int(env, val));
}

static napi_value js_getpwnam(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  char *name = get_string(env, argv[0], "name");
  if (!name) return NULL;
  size_t cap = 1024;
  for (;;) {
    char *buf = malloc(cap);
    struct passwd pw, *res = NULL;
    if (!buf) {
      free(name);
      return throw_sys_error(env, "getpwnam_r", ENOMEM, NULL);
    }
    int r = getpwnam_r(name, &pw, buf, cap, &res);
    if (r == ERANGE && cap < (1u << 20)) {
      free(buf);
      cap *= 4;
      continue;
    }
    napi_value out;
    if (r != 0) {
      out = throw_sys_error(env, "getpwnam_r", r, name);
    } else if (!res) {
      napi_get_null(env, &out);
    } else {
      napi_create_object(env, &out);
      set_str(env, out, "name", pw.pw_name);
      set_num(env, out, "uid", pw.pw_uid);
      set_num(env, out, "gid", pw.pw_gid);
      set_str(env, out, "dir", pw.pw_dir);
      set_str(env, out, "shell", pw.pw_shell);
    }
    free(buf);
    free(name);
    return out;
  }
}

static napi_value js_getgrnam(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  char *name = get_string(env, argv[0], "name");
  if (!name) return NULL;
  size_t cap = 1024;
  for (;;) {
    char *buf = malloc(cap);
    struct group gr, *res = NULL;
    if (!buf) {
      free(name);
      return throw_sys_error(env, "getgrnam_r", ENOMEM, NULL);
    }
    int r = getgrnam_r(name, &gr, buf, cap, &res);
    if (r == ERANGE && cap < (1u << 22)) {
      free(buf);
      cap *= 4;
      continue;
    }
    napi_value out;
    if (r != 0) {
      out = throw_sys_error(env, "getgrnam_r", r, name);
    } else if (!res) {
      napi_get_null(env, &out);
    } else {
      napi_value members;
      napi_create_object(env, &out);
      set_str(env, out, "name", gr.gr_name);
      set_num(env, out, "gid", gr.gr_gid);
      napi_create_array(env, &members);
      for (uint32_t i = 0; gr.gr_mem && gr.gr_mem[i]; i++) {
        napi_value m;
        napi_create_string_utf8(env, gr.gr_mem[i], NAPI_AUTO_LENGTH, &m);
        napi_set_element(env, members, i, m);
      }
      napi_set_named_property(env, out, "members", members);
    }
    free(buf);
    free(name);
    return out;
  }
}

/* ---- sockets, pidfds, wait ---- */

static napi_value js_peer_credentials(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !get_fd(env, argv[0], "socketFd", &fd)) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    char detail[48];
    snprintf(detail, sizeof detail, "SO_PEERCRED on fd %d", fd);
    return throw_sys_error(env, "getsockopt", errno, detail);
  }
  napi_value out;
  NAPI_CALL(env, napi_create_object(env, &out));
  set_num(env, out, "pid", cred.pid);
  set_num(env, out, "uid", cred.uid);
  set_num(env, out, "gid", cred.gid);
  return out;
}

static napi_value js_pidfd_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t pid;
  if (!get_args(env, info, 1, argv) || !get_int32(env, argv[0], "pid", &pid)) return NULL;
  if (pid <= 0) return throw_type_error(env, "pid must be a positive integer");
  /* pidfds are always close-on-exec. */
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    char detail[32];
    snprintf(detail, sizeof detail, "pid %d", pid);
    return throw_sys_error(env, "pidfd_open", errno, detail);
  }
  return make_int(env, fd);
}

static napi_value js_pidfd_send_signal(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int32_t sig;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], "pidfd", &fd) ||
      !get_int32(env, argv[1], "signal", &sig))
    return NULL;
  if (syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) < 0) {
    char detail[48];
    snprintf(detail, sizeof detail, "pidfd %d, signal %d", fd, sig);
    return throw_sys_error(env, "pidfd_send_signal", errno, detail);
  }
  return NULL;
}

static napi_value js_wait_pid(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t pid;
  bool no_hang = false;
  if (!get_args(env, info, 2, argv) || !get_int32(env, argv[0], "pid", &pid)) return NULL;
  if (pid <= 0) return throw_type_error(env, "pid must be a positive integer");
  if (type_is(env, argv[1], napi_boolean)) napi_get_value_bool(env, argv[1], &no_hang);
  int status = 0;
  pid_t r;
  do r = waitpid(pid, &status, no_hang ? WNOHANG : 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    char detail[32];
    snprintf(detail, sizeof detail, "pid %d", pid);
    return throw_sys_error(env, "waitpid", errno, detail);
  }
  napi_value out, null_v;
  napi_get_null(env, &null_v);
  if (r == 0) return null_v;
  NAPI_CALL(env, napi_create_object(env, &out));
  set_num(env, out, "pid", r);
  if (WIFEXITED(status)) {
    set_num(env, out, "exitCode", WEXITSTATUS(status));
    napi_set_named_property(env, out, "signal", null_v);
  } else {
    napi_set_named_property(env, out, "exitCode", null_v);
    set_num(env, out, "signal", WTERMSIG(status));
  }
  return out;
}

/* ---- registration ---- */

static napi_value js_set_error_classes(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  if (!type_is(env, argv[0], napi_function) || !type_is(env, argv[1], napi_function))
    return throw_type_error(env, "setErrorClasses(SysError, SpawnError)");
  addon_state *st = state(env);
  if (st->sys_error) napi_delete_reference(env, st->sys_error);
  if (st->spawn_error) napi_delete_reference(env, st->spawn_error);
  NAPI_CALL(env, napi_create_reference(env, argv[0], 1, &st->sys_error));
  NAPI_CALL(env, napi_create_reference(env, argv[1], 1, &st->spawn_error));
  return NULL;
}

static void free_state(napi_env env, void *data, void *hint) {
  addon_state *st = data;
  if (st->sys_error) napi_delete_reference(env, st->sys_error);
  if (st->spawn_error) napi_delete_reference(env, st->spawn_error);
  free(st);
}

#define CONST(name) {#name, (int64_t)(name)}
static const struct {
  const char *name;
  int64_t value;
} constants_table[] = {
    CONST(O_RDONLY),        CONST(O_WRONLY),       CONST(O_RDWR),          CONST(O_CREAT),
    CONST(O_EXCL),          CONST(O_TRUNC),        CONST(O_APPEND),        CONST(O_NONBLOCK),
    CONST(O_CLOEXEC),       CONST(O_NOCTTY),       CONST(O_DIRECTORY),     CONST(O_NOFOLLOW),
    CONST(O_SYNC),          CONST(O_PATH),         CONST(PROT_NONE),       CONST(PROT_READ),
    CONST(PROT_WRITE),      CONST(PROT_EXEC),      CONST(MAP_SHARED),      CONST(MAP_PRIVATE),
    CONST(MAP_ANONYMOUS),   CONST(MAP_FIXED),      CONST(MAP_POPULATE),    CONST(MAP_NORESERVE),
    CONST(LOCK_SH),         CONST(LOCK_EX),        CONST(LOCK_UN),         CONST(LOCK_NB),
    CONST(MFD_CLOEXEC),     CONST(MFD_ALLOW_SEALING), CONST(SIGHUP),       CONST(SIGINT),
    CONST(SIGQUIT),         CONST(SIGKILL),        CONST(SIGUSR1),         CONST(SIGUSR2),
    CONST(SIGTERM),         CONST(SIGCHLD),        CONST(SIGCONT),         CONST(SIGSTOP),
    CONST(SIGSYS),          CONST(CLONE_NEWNS),    CONST(CLONE_NEWIPC),    CONST(CLONE_NEWNET),
    CONST(CLONE_NEWUTS),    CONST(CLONE_NEWPID),   CONST(RLIMIT_AS),       CONST(RLIMIT_CORE),
    CONST(RLIMIT_CPU),      CONST(RLIMIT_DATA),    CONST(RLIMIT_FSIZE),    CONST(RLIMIT_MEMLOCK),
    CONST(RLIMIT_NOFILE),   CONST(RLIMIT_NPROC),   CONST(RLIMIT_STACK),    CONST(RLIMIT_MSGQUEUE),
    CONST(RLIMIT_RTPRIO),   CONST(RLIMIT_SIGPENDING), CONST(WNOHANG),
    CONST(RLIMIT_RSS),      CONST(RLIMIT_LOCKS),   CONST(RLIMIT_NICE),     CONST(RLIMIT_RTTIME),
};

static napi_value init(napi_env env, napi_value exports) {
  addon_state *st = calloc(1, sizeof *st);
  if (!st || napi_set_instance_data(env, st, free_state, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "@xen-depriv/sys: cannot allocate addon state");
    return NULL;
  }
  const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"setErrorClasses", js_set_error_classes},
      {"ioctl", js_ioctl},
      {"open", js_open},
      {"close", js_close},
      {"mmap", js_mmap},
      {"munmap", js_munmap},
      {"memfdCreate", js_memfd_create},
      {"flock", js_flock},
      {"getpwnam", js_getpwnam},
      {"getgrnam", js_getgrnam},
      {"peerCredentials", js_peer_credentials},
      {"pidfdOpen", js_pidfd_open},
      {"pidfdSendSignal", js_pidfd_send_signal},
      {"waitPid", js_wait_pid},
      {"spawnConfined", js_spawn_confined},
      {"spawnConfinedAsync", js_spawn_confined_async},
      {"reaperKill", js_reaper_kill},
      {"reaperKillAsync", js_reaper_kill_async},
      {"pidfdGetfd", js_pidfd_getfd},
      {"pidfdWatch", js_pidfd_watch},
      {"pidfdWatchClose", js_pidfd_watch_close},
      {"pidfdWatchRef", js_pidfd_watch_ref},
      {"netnsConnect", js_netns_connect},
      {"openPty", js_open_pty},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    NAPI_CALL(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn));
    NAPI_CALL(env, napi_set_named_property(env, exports, fns[i].name, fn));
  }
  napi_value consts;
  NAPI_CALL(env, napi_create_object(env, &consts));
  for (size_t i = 0; i < sizeof constants_table / sizeof constants_table[0]; i++)
    set_num(env, consts, constants_table[i].name, constants_table[i].value);
  NAPI_CALL(env, napi_set_named_property(env, exports, "constants", consts));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
