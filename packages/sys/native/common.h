#ifndef XEN_DEPRIV_SYS_COMMON_H
#define XEN_DEPRIV_SYS_COMMON_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per-env state: the JS error classes the TS layer registers through setErrorClasses(). */
typedef struct {
  napi_ref sys_error;
  napi_ref spawn_error;
} addon_state;

#define NAPI_CALL(env, call)                                                                     \
  do {                                                                                           \
    if ((call) != napi_ok) {                                                                     \
      bool pending_ = false;                                                                     \
      napi_is_exception_pending((env), &pending_);                                               \
      if (!pending_) napi_throw_error((env), "ERR_NAPI", "Node-API call failed: " #call);        \
      return NULL;                                                                               \
    }                                                                                            \
  } while (0)

napi_value throw_sys_error(napi_env env, const char *syscall, int err, const char *detail);
napi_value throw_spawn_error(napi_env env, const char *step, int err, const char *detail);
napi_value throw_type_error(napi_env env, const char *msg);
/* A SysError value, not thrown: for callbacks that pass the error on instead. */
napi_value make_sys_error(napi_env env, const char *syscall, int err, const char *detail);

bool get_int32(napi_env env, napi_value v, const char *what, int32_t *out);
bool get_int64(napi_env env, napi_value v, const char *what, int64_t *out);
bool get_uint32(napi_env env, napi_value v, const char *what, uint32_t *out);
bool get_fd(napi_env env, napi_value v, const char *what, int *fd);
/* Fills argv[0..want) (undefined where missing); NULL with an exception on failure. */
napi_value get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
/* Returns a malloc'd NUL-terminated copy, rejecting embedded NULs. */
char *get_string(napi_env env, napi_value v, const char *what);
bool get_bytes(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len);
napi_value make_int(napi_env env, int64_t n);

/* spawn.c */
napi_value js_spawn_confined(napi_env env, napi_callback_info info);
napi_value js_spawn_confined_async(napi_env env, napi_callback_info info);
napi_value js_reaper_kill(napi_env env, napi_callback_info info);
napi_value js_reaper_kill_async(napi_env env, napi_callback_info info);

/* pidfd.c */
napi_value js_pidfd_getfd(napi_env env, napi_callback_info info);
napi_value js_pidfd_watch(napi_env env, napi_callback_info info);
napi_value js_pidfd_watch_close(napi_env env, napi_callback_info info);
napi_value js_pidfd_watch_ref(napi_env env, napi_callback_info info);

/* net.c */
napi_value js_netns_connect(napi_env env, napi_callback_info info);
napi_value js_open_pty(napi_env env, napi_callback_info info);

#endif
