/*
 * netnsConnect: a TCP connection made inside another process's network namespace (a thread
 * of ours joins it with setns, makes and connects the socket, and ends; the socket stays in
 * the namespace it was made in). openPty: a pseudo-terminal pair for a console a service
 * relays, the slave in raw mode.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "common.h"

typedef struct {
  int nsfd;
  struct sockaddr_in addr;
  int fd;
  int err;
  const char *syscall;
} netns_job;

static void *netns_thread(void *arg) {
  netns_job *j = arg;
  /* The network namespace is per thread: this one joins it, the others stay where they are. */
  if (setns(j->nsfd, CLONE_NEWNET) < 0) {
    j->err = errno;
    j->syscall = "setns";
    return NULL;
  }
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    j->err = errno;
    j->syscall = "socket";
    return NULL;
  }
  /* Loopback: connect completes (or is refused) at once. */
  int r;
  do r = connect(s, (struct sockaddr *)&j->addr, sizeof j->addr);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    j->err = errno;
    j->syscall = "connect";
    close(s);
    return NULL;
  }
  j->fd = s;
  return NULL;
}

napi_value js_netns_connect(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t pid;
  uint32_t port;
  char *host = NULL;
  if (!get_args(env, info, 3, argv) || !get_int32(env, argv[0], "pid", &pid) ||
      !get_uint32(env, argv[2], "port", &port))
    return NULL;
  if (pid <= 0 || port == 0 || port > 65535) return throw_type_error(env, "pid > 0 and port 1..65535");
  host = get_string(env, argv[1], "host");
  if (!host) return NULL;
  netns_job j = {.nsfd = -1, .fd = -1, .err = 0, .syscall = NULL};
  j.addr.sin_family = AF_INET;
  j.addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &j.addr.sin_addr) != 1) {
    free(host);
    return throw_type_error(env, "host must be an IPv4 address");
  }
  char detail[96];
  snprintf(detail, sizeof detail, "pid %d, %s:%u", pid, host, port);
  free(host);
  char path[40];
  snprintf(path, sizeof path, "/proc/%d/ns/net", pid);
  j.nsfd = open(path, O_RDONLY | O_CLOEXEC);
  if (j.nsfd < 0) return throw_sys_error(env, "open", errno, detail);
  pthread_t t;
  int r = pthread_create(&t, NULL, netns_thread, &j);
  if (r != 0) {
    close(j.nsfd);
    return throw_sys_error(env, "pthread_create", r, detail);
  }
  pthread_join(t, NULL);
  close(j.nsfd);
  if (j.fd < 0) return throw_sys_error(env, j.syscall, j.err, detail);
  return make_int(env, j.fd);
}

napi_value js_open_pty(napi_env env, napi_callback_info info) {
  (void)info;
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return throw_sys_error(env, "posix_openpt", errno, NULL);
  char name[64];
  int slave = -1;
  const char *what = NULL;
  if (grantpt(master) < 0) what = "grantpt";
  else if (unlockpt(master) < 0) what = "unlockpt";
  else if (ptsname_r(master, name, sizeof name) != 0) what = "ptsname_r";
  else if ((slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) what = "open";
  if (what) {
    int e = errno;
    close(master);
    return throw_sys_error(env, what, e, NULL);
  }
  /* Raw: no echo, no line discipline; a console reader (xenconsole) sees the guest's bytes. */
  struct termios t;
  if (tcgetattr(slave, &t) < 0 || (cfmakeraw(&t), tcsetattr(slave, TCSANOW, &t) < 0)) {
    int e = errno;
    close(slave);
    close(master);
    return throw_sys_error(env, "tcsetattr", e, name);
  }
  napi_value out, v;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_set_named_property(env, out, "master", make_int(env, master)));
  NAPI_CALL(env, napi_set_named_property(env, out, "slave", make_int(env, slave)));
  NAPI_CALL(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v));
  NAPI_CALL(env, napi_set_named_property(env, out, "path", v));
  return out;
}
