/*
 * pidfdGetfd, and watching a pidfd for the process's exit from the event loop.
 *
 * A pidfd polls readable once its process has exited (Linux 5.3), so one uv_poll_t per
 * process is all a supervisor needs: no thread, no timer, no SIGCHLD handler. The watch
 * fires once, then stops; its handle is closed with uv_close and freed in the close
 * callback, and an async cleanup hook closes it if the environment (a worker thread, say)
 * goes away first, since libuv refuses to close a loop that still has handles.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include "common.h"

/* pidfd_getfd(2), Linux 5.6; x86-64 and every architecture with the unified table use 438. */
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

napi_value js_pidfd_getfd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int pidfd, target;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], "pidfd", &pidfd) ||
      !get_fd(env, argv[1], "targetFd", &target))
    return NULL;
  /* The new descriptor is close-on-exec (the kernel sets it; flags must be 0). */
  int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target, 0);
  if (fd < 0) {
    char detail[48];
    snprintf(detail, sizeof detail, "pidfd %d, fd %d", pidfd, target);
    return throw_sys_error(env, "pidfd_getfd", errno, detail);
  }
  return make_int(env, fd);
}

typedef struct {
  uv_poll_t poll; /* first: the libuv callbacks get this pointer */
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  napi_async_cleanup_hook_handle cleanup;
  int pidfd;
  bool closing;       /* uv_close requested: the callback can no longer run */
  bool closed;        /* the close callback ran: nothing of libuv points here any more */
  bool orphan;        /* no JS handle object wraps this (never did, or it was collected) */
} pidfd_watch;

/* Marks the handle objects this file makes, so that close/ref refuse any other object. */
static const napi_type_tag watch_tag = {0x7069646664776174ULL, 0x78656e2d64657072ULL};

static void on_close(uv_handle_t *h) {
  pidfd_watch *w = (pidfd_watch *)h;
  w->closed = true;
  if (w->callback) napi_delete_reference(w->env, w->callback);
  if (w->context) napi_async_destroy(w->env, w->context);
  if (w->cleanup) napi_remove_async_cleanup_hook(w->cleanup);
  w->callback = NULL;
  w->context = NULL;
  w->cleanup = NULL;
  if (w->orphan) free(w);
}

static void start_close(pidfd_watch *w) {
  if (w->closing) return;
  w->closing = true;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, on_close);
}

static void finalize_watch(napi_env env, void *data, void *hint) {
  pidfd_watch *w = data;
  if (w->closed)
    free(w);
  else
    w->orphan = true;
}

static void on_env_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  pidfd_watch *w = arg;
  /* on_close removes the hook, which tells Node this cleanup is done. */
  if (w->closing) return;
  start_close(w);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  pidfd_watch *w = (pidfd_watch *)h;
  if (w->closing) return;
  napi_env env = w->env;
  napi_value cb, recv, arg, result;
  size_t argc = 0;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) {
    start_close(w);
    return;
  }
  bool have_cb = napi_get_reference_value(env, w->callback, &cb) == napi_ok && cb != NULL;
  if (status < 0) {
    char detail[32];
    snprintf(detail, sizeof detail, "pidfd %d", w->pidfd);
    arg = make_sys_error(env, "uv_poll", -status, detail);
    argc = arg ? 1 : 0;
  }
  /* Stopped before the callback runs: it may close the handle again, or the pidfd. uv_close
   * defers on_close to the loop's closing phase, so w stays valid until we return. */
  napi_async_context context = w->context;
  start_close(w);
  /* napi_make_callback converts recv to an object: undefined would throw. */
  napi_get_global(env, &recv);
  if (have_cb && napi_make_callback(env, context, recv, cb, argc, &arg, &result) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      /* As for an exception in a timer callback: process 'uncaughtException'. */
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

napi_value js_pidfd_watch(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int pidfd;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], "pidfd", &pidfd)) return NULL;
  napi_valuetype t;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function)
    return throw_type_error(env, "onExit must be a function");
  char detail[32];
  snprintf(detail, sizeof detail, "pidfd %d", pidfd);
  int flags = fcntl(pidfd, F_GETFL);
  if (flags < 0) return throw_sys_error(env, "fcntl", errno, detail);
  uv_loop_t *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  pidfd_watch *w = calloc(1, sizeof *w);
  if (!w) return throw_sys_error(env, "watchPidfd", ENOMEM, detail);
  w->env = env;
  w->pidfd = pidfd;
  w->orphan = true;
  int r = uv_poll_init(loop, &w->poll, pidfd);
  /* uv_poll_init sets O_NONBLOCK, which the pidfd's open file description shares with the
   * caller and which makes waitid(P_PIDFD) return EAGAIN; epoll does not need it. */
  if (!(flags & O_NONBLOCK)) fcntl(pidfd, F_SETFL, flags);
  if (r < 0) {
    free(w);
    return throw_sys_error(env, "uv_poll_init", -r, detail);
  }
  /* From here on a failure closes the handle and on_close frees w. */
  napi_value obj, name;
  if (napi_add_async_cleanup_hook(env, on_env_teardown, w, &w->cleanup) != napi_ok) {
    w->cleanup = NULL;
    start_close(w);
    return throw_sys_error(env, "napi_add_async_cleanup_hook", ENOMEM, detail);
  }
  if (napi_create_reference(env, argv[1], 1, &w->callback) != napi_ok ||
      napi_create_string_utf8(env, "pidfdWatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &w->context) != napi_ok ||
      napi_create_object(env, &obj) != napi_ok ||
      napi_type_tag_object(env, obj, &watch_tag) != napi_ok ||
      napi_wrap(env, obj, w, finalize_watch, NULL, NULL) != napi_ok) {
    start_close(w);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    return pending ? NULL : throw_sys_error(env, "watchPidfd", ENOMEM, detail);
  }
  w->orphan = false;
  r = uv_poll_start(&w->poll, UV_READABLE, on_poll);
  if (r < 0) {
    start_close(w);
    return throw_sys_error(env, "uv_poll_start", -r, detail);
  }
  return obj;
}

static pidfd_watch *unwrap_watch(napi_env env, napi_value v) {
  bool tagged = false;
  void *w = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, v, &watch_tag, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, v, &w) != napi_ok || w == NULL) {
    throw_type_error(env, "expected a handle returned by pidfdWatch");
    return NULL;
  }
  return w;
}

napi_value js_pidfd_watch_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  pidfd_watch *w = unwrap_watch(env, argv[0]);
  if (w) start_close(w);
  return NULL;
}

napi_value js_pidfd_watch_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  bool ref;
  if (!get_args(env, info, 2, argv)) return NULL;
  pidfd_watch *w = unwrap_watch(env, argv[0]);
  if (!w) return NULL;
  if (napi_get_value_bool(env, argv[1], &ref) != napi_ok)
    return throw_type_error(env, "ref must be a boolean");
  if (w->closing) return NULL;
  if (ref)
    uv_ref((uv_handle_t *)&w->poll);
  else
    uv_unref((uv_handle_t *)&w->poll);
  return NULL;
}
