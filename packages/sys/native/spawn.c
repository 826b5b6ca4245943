/*
 * spawnConfined and reaperKill, and their thread-pool twins spawnConfinedAsync and
 * reaperKillAsync (the same code: see "One spawnConfined or reaperKill call" below).
 *
 * Both clone a child with CLONE_VM | CLONE_VFORK onto a stack the parent mapped, the way
 * glibc's posix_spawn does: the parent thread is suspended until the child execs or exits,
 * and no page tables are copied. Because the child shares the parent's memory it must not
 * allocate, take locks, or go through glibc wrappers that touch process-wide state (the
 * set*id wrappers broadcast to every thread glibc knows of, which would be the parent's),
 * so those calls are raw syscalls. Everything the child reads is prepared in the parent.
 * A failed step is written to a close-on-exec pipe as { step, errno, index }; a successful
 * execve closes the pipe and the parent reads end-of-file.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "common.h"

enum step {
  STEP_SETSID,
  STEP_FDS,
  STEP_ENV,
  STEP_CHDIR,
  STEP_UNSHARE,
  STEP_MOUNT,
  STEP_MKNOD,
  STEP_PIVOT_ROOT,
  STEP_CHROOT,
  STEP_SETRLIMIT,
  STEP_SETGROUPS,
  STEP_SETRESGID,
  STEP_SETRESUID,
  STEP_NO_NEW_PRIVS,
  STEP_SECCOMP,
  STEP_EXECVE,
  STEP_SIGNALS,
  STEP_CHECK_EUID,
  STEP_CHECK_CAPS,
  STEP_KILL,
  STEP_CAPBSET,
  STEP_LOOPBACK,
  STEP_COUNT
};

static const char *const step_names[STEP_COUNT] = {
    "setsid",   "fds",       "env",       "chdir",         "unshare", "mount",
    "mknod",    "pivot_root", "chroot",   "setrlimit",     "setgroups", "setresgid",
    "setresuid", "no_new_privs", "seccomp", "execve",      "signals", "check_euid",
    "check_caps", "kill",      "capbset",  "loopback",
};

enum mount_kind { MOUNT_TMPFS = 0, MOUNT_BIND = 1, MOUNT_MKNOD = 2 };

typedef struct {
  int kind;
  char *source;
  char *target;
  char *data;
  unsigned long flags;
  unsigned long remount_flags; /* read-only binds: a second, remounting call */
  uint32_t mode;
  uint64_t dev;
  int64_t uid, gid;
} mount_op;

typedef struct {
  int resource;
  struct rlimit lim;
} rlimit_op;

typedef struct {
  char *file;
  char **argv;
  char **envp;
  char *cwd;
  int nfds;
  int *fd_target, *fd_source, *fd_tmp;
  int *keep; /* sorted targets */
  int nkeep;
  int fd_max;
  int unshare_flags;
  int nmounts;
  mount_op *mounts;
  char *root;
  int root_mode; /* 0 none, 1 pivot_root, 2 chroot */
  int nrlimits;
  rlimit_op *rlimits;
  int64_t uid, gid;
  bool set_groups;
  int ngroups;
  gid_t *groups;
  bool no_new_privs;
  bool loopback_up; /* bring `lo` up in the new network namespace */
  int cap_last; /* >= 0: drop capabilities 0..cap_last from the bounding set */
  bool has_seccomp;
  struct sock_fprog prog;
  int errfd;
  /* reaperKill */
  uid_t reaper_uid, target_uid;
} plan;

typedef struct {
  int32_t step, err, index;
} report;

static void report_and_exit(plan *p, int step, int err, int index) {
  report r = {step, err, index};
  ssize_t w;
  do w = write(p->errfd, &r, sizeof r);
  while (w < 0 && errno == EINTR);
  _exit(127);
}

#define FAIL(p, step, index) report_and_exit((p), (step), errno, (index))

static void reset_signals(plan *p) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  /* Node ignores SIGPIPE and installs handlers; the exec'd program starts from defaults,
   * as libuv's own spawn does. Signals are still blocked here (the parent blocked them
   * before clone), so no parent handler can run on the shared memory. */
  for (int sig = 1; sig < _NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &sa, NULL);
  }
  uint64_t empty = 0;
  if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, sizeof empty) < 0)
    FAIL(p, STEP_SIGNALS, -1);
}

static void apply_fds(plan *p) {
  int e = fcntl(p->errfd, F_DUPFD_CLOEXEC, p->fd_max + 1);
  if (e < 0) FAIL(p, STEP_FDS, -1);
  p->errfd = e;
  /* Copy every source above all targets first, so that moving one fd never clobbers
   * another's source. */
  for (int i = 0; i < p->nfds; i++) {
    p->fd_tmp[i] = fcntl(p->fd_source[i], F_DUPFD_CLOEXEC, e + 1);
    if (p->fd_tmp[i] < 0) FAIL(p, STEP_FDS, i);
  }
  for (int i = 0; i < p->nfds; i++)
    if (dup2(p->fd_tmp[i], p->fd_target[i]) < 0) FAIL(p, STEP_FDS, i);
  unsigned int lo = 0;
  for (int i = 0; i <= p->nkeep; i++) {
    unsigned int keep = i < p->nkeep ? (unsigned int)p->keep[i] : (unsigned int)e;
    if (keep > lo && syscall(SYS_close_range, lo, keep - 1, 0) < 0) FAIL(p, STEP_FDS, -1);
    lo = keep + 1;
  }
  if (syscall(SYS_close_range, lo, ~0U, 0) < 0) FAIL(p, STEP_FDS, -1);
}

static void apply_mounts(plan *p) {
  /* Nothing done below may propagate back to the parent's namespace. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) FAIL(p, STEP_MOUNT, -1);
  for (int i = 0; i < p->nmounts; i++) {
    mount_op *m = &p->mounts[i];
    switch (m->kind) {
    case MOUNT_TMPFS:
      if (mount("tmpfs", m->target, "tmpfs", m->flags, m->data) < 0) FAIL(p, STEP_MOUNT, i);
      break;
    case MOUNT_BIND:
      if (mount(m->source, m->target, NULL, m->flags, NULL) < 0) FAIL(p, STEP_MOUNT, i);
      /* MS_RDONLY is ignored on the initial bind: it takes a remount of the new mount. */
      if (m->remount_flags && mount(NULL, m->target, NULL, m->remount_flags, NULL) < 0)
        FAIL(p, STEP_MOUNT, i);
      break;
    case MOUNT_MKNOD:
      if (mknod(m->target, m->mode, (dev_t)m->dev) < 0) FAIL(p, STEP_MKNOD, i);
      /* mknod applies the umask; chmod states the declared mode exactly. */
      if (chmod(m->target, m->mode & 07777) < 0) FAIL(p, STEP_MKNOD, i);
      if (syscall(SYS_fchownat, AT_FDCWD, m->target, (uid_t)m->uid, (gid_t)m->gid,
                  AT_SYMLINK_NOFOLLOW) < 0)
        FAIL(p, STEP_MKNOD, i);
      break;
    }
  }
}

static void apply_root(plan *p) {
  if (p->root_mode == 1) {
    /* pivot_root needs the new root to be a mount point: bind it onto itself (with the
     * mounts made below it), then stack the old root under it and detach it. */
    if (mount(p->root, p->root, NULL, MS_BIND | MS_REC, NULL) < 0) FAIL(p, STEP_PIVOT_ROOT, -1);
    if (chdir(p->root) < 0) FAIL(p, STEP_PIVOT_ROOT, -1);
    if (syscall(SYS_pivot_root, ".", ".") < 0) FAIL(p, STEP_PIVOT_ROOT, -1);
    if (umount2(".", MNT_DETACH) < 0) FAIL(p, STEP_PIVOT_ROOT, -1);
    if (chdir("/") < 0) FAIL(p, STEP_PIVOT_ROOT, -1);
  } else if (p->root_mode == 2) {
    if (chdir(p->root) < 0) FAIL(p, STEP_CHROOT, -1);
    if (chroot(".") < 0) FAIL(p, STEP_CHROOT, -1);
    if (chdir("/") < 0) FAIL(p, STEP_CHROOT, -1);
  }
}

/* `lo` up in the child's own network namespace (it starts down): a loopback listener there
 * (QEMU's VNC) is then reachable from a socket made in that namespace, and from nowhere else. */
static void loopback_up(plan *p) {
  struct ifreq ifr;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) FAIL(p, STEP_LOOPBACK, -1);
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) FAIL(p, STEP_LOOPBACK, -1);
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) FAIL(p, STEP_LOOPBACK, -1);
  close(s);
}

static int spawn_child(void *arg) {
  plan *p = arg;
  reset_signals(p);
  if (setsid() < 0) FAIL(p, STEP_SETSID, -1);
  apply_fds(p);
  /* STEP_ENV: the environment is exactly spec.env, passed to execve; the child's copy of
   * environ is the parent's memory and is left alone. */
  if (p->cwd && !p->root && chdir(p->cwd) < 0) FAIL(p, STEP_CHDIR, -1);
  if (p->unshare_flags && unshare(p->unshare_flags) < 0) FAIL(p, STEP_UNSHARE, -1);
  if (p->loopback_up) loopback_up(p);
  if (p->unshare_flags & CLONE_NEWNS) apply_mounts(p);
  apply_root(p);
  /* With a new root, cwd names a directory inside it. */
  if (p->cwd && p->root && chdir(p->cwd) < 0) FAIL(p, STEP_CHDIR, -1);
  for (int i = 0; i < p->nrlimits; i++)
    if (syscall(SYS_prlimit64, 0, p->rlimits[i].resource, &p->rlimits[i].lim, NULL) < 0)
      FAIL(p, STEP_SETRLIMIT, i);
  /* PR_CAPBSET_DROP needs CAP_SETPCAP, so it comes before the uid drop. */
  for (int cap = 0; cap <= p->cap_last; cap++)
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) FAIL(p, STEP_CAPBSET, cap);
  if (p->set_groups && syscall(SYS_setgroups, p->ngroups, p->groups) < 0)
    FAIL(p, STEP_SETGROUPS, -1);
  if (p->gid >= 0 && syscall(SYS_setresgid, p->gid, p->gid, p->gid) < 0)
    FAIL(p, STEP_SETRESGID, -1);
  if (p->uid >= 0 && syscall(SYS_setresuid, p->uid, p->uid, p->uid) < 0)
    FAIL(p, STEP_SETRESUID, -1);
  if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    FAIL(p, STEP_NO_NEW_PRIVS, -1);
  if (p->has_seccomp && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p->prog, 0, 0) < 0)
    FAIL(p, STEP_SECCOMP, -1);
  execve(p->file, p->argv, p->envp);
  FAIL(p, STEP_EXECVE, -1);
  return 127;
}

static int reaper_child(void *arg) {
  plan *p = arg;
  reset_signals(p);
  if (syscall(SYS_setgroups, 0, NULL) < 0) FAIL(p, STEP_SETGROUPS, -1);
  if (syscall(SYS_setresgid, p->reaper_uid, p->target_uid, 0) < 0) FAIL(p, STEP_SETRESGID, -1);
  /* libxl's reaper: real uid = reaper, effective = target, saved = 0. kill() permits a
   * signal when the sender's real or effective uid equals the target's real or saved uid,
   * so only processes of the target (and of the unused reaper uid) can be hit. */
  if (syscall(SYS_setresuid, p->reaper_uid, p->target_uid, 0) < 0) FAIL(p, STEP_SETRESUID, -1);
  /* With euid 0 or CAP_KILL, kill(-1) kills every process on the machine. */
  if ((uid_t)syscall(SYS_geteuid) != p->target_uid) {
    errno = EPERM;
    FAIL(p, STEP_CHECK_EUID, -1);
  }
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &hdr, data) < 0) FAIL(p, STEP_CHECK_CAPS, -1);
  if (data[0].effective != 0 || data[1].effective != 0) {
    errno = EPERM;
    FAIL(p, STEP_CHECK_CAPS, -1);
  }
  if (syscall(SYS_kill, -1, SIGKILL) < 0 && errno != ESRCH) FAIL(p, STEP_KILL, -1);
  _exit(0);
  return 0;
}

/* ---- parent side ---- */

static void free_plan(plan *p) {
  if (p->argv)
    for (char **a = p->argv; *a; a++) free(*a);
  if (p->envp)
    for (char **a = p->envp; *a; a++) free(*a);
  free(p->argv);
  free(p->envp);
  free(p->file);
  free(p->cwd);
  free(p->root);
  free(p->fd_target);
  free(p->fd_source);
  free(p->fd_tmp);
  free(p->keep);
  for (int i = 0; i < p->nmounts; i++) {
    free(p->mounts[i].source);
    free(p->mounts[i].target);
    free(p->mounts[i].data);
  }
  free(p->mounts);
  free(p->rlimits);
  free(p->groups);
  free(p->prog.filter);
}

static bool prop(napi_env env, napi_value obj, const char *key, napi_value *out) {
  return napi_get_named_property(env, obj, key, out) == napi_ok;
}

static bool is_undef(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_undefined || t == napi_null);
}

static bool get_array(napi_env env, napi_value obj, const char *key, napi_value *arr,
                      uint32_t *len) {
  bool is_array = false;
  if (!prop(env, obj, key, arr) || napi_is_array(env, *arr, &is_array) != napi_ok || !is_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "spec.%s must be an array", key);
    throw_type_error(env, msg);
    return false;
  }
  napi_get_array_length(env, *arr, len);
  return true;
}

static char **get_string_array(napi_env env, napi_value obj, const char *key) {
  napi_value arr;
  uint32_t n;
  if (!get_array(env, obj, key, &arr, &n)) return NULL;
  char **out = calloc(n + 1, sizeof *out);
  if (!out) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_get_element(env, arr, i, &v);
    out[i] = get_string(env, v, key);
    if (!out[i]) {
      for (uint32_t j = 0; j < i; j++) free(out[j]);
      free(out);
      return NULL;
    }
  }
  return out;
}

static bool get_opt_string(napi_env env, napi_value obj, const char *key, char **out) {
  napi_value v;
  *out = NULL;
  if (!prop(env, obj, key, &v)) return false;
  if (is_undef(env, v)) return true;
  *out = get_string(env, v, key);
  return *out != NULL;
}

static bool get_int_prop(napi_env env, napi_value obj, const char *key, int64_t *out) {
  napi_value v;
  return prop(env, obj, key, &v) && get_int64(env, v, key, out);
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* Reads the normalized spec built by src/native.ts. */
static bool build_plan(napi_env env, napi_value spec, plan *p) {
  int64_t n;
  napi_value arr, v;
  uint32_t len;
  if (!get_opt_string(env, spec, "file", &p->file)) return false;
  if (!p->file) {
    throw_type_error(env, "spec.file must be a string");
    return false;
  }
  if (!(p->argv = get_string_array(env, spec, "argv"))) return false;
  if (!(p->envp = get_string_array(env, spec, "env"))) return false;
  if (!get_opt_string(env, spec, "cwd", &p->cwd)) return false;

  if (!get_array(env, spec, "fds", &arr, &len)) return false;
  p->nfds = (int)(len / 2);
  p->fd_target = calloc(p->nfds + 1, sizeof(int));
  p->fd_source = calloc(p->nfds + 1, sizeof(int));
  p->fd_tmp = calloc(p->nfds + 1, sizeof(int));
  p->keep = calloc(p->nfds + 1, sizeof(int));
  if (!p->fd_target || !p->fd_source || !p->fd_tmp || !p->keep) return false;
  p->fd_max = 2;
  for (int i = 0; i < p->nfds; i++) {
    int32_t t, s;
    napi_get_element(env, arr, 2 * i, &v);
    if (!get_int32(env, v, "fds[i].target", &t)) return false;
    napi_get_element(env, arr, 2 * i + 1, &v);
    if (!get_int32(env, v, "fds[i].source", &s)) return false;
    if (t < 0 || s < 0) {
      throw_type_error(env, "fds: target and source must be non-negative");
      return false;
    }
    p->fd_target[i] = t;
    p->fd_source[i] = s;
    p->keep[i] = t;
    /* Only targets bound the temporaries: a dup above them never lands on a source,
     * since every source is open. */
    if (t > p->fd_max) p->fd_max = t;
  }
  qsort(p->keep, p->nfds, sizeof(int), cmp_int);
  p->nkeep = p->nfds;

  if (!get_int_prop(env, spec, "unshareFlags", &n)) return false;
  p->unshare_flags = (int)n;

  if (!get_array(env, spec, "mounts", &arr, &len)) return false;
  p->mounts = calloc(len + 1, sizeof(mount_op));
  if (!p->mounts) return false;
  for (uint32_t i = 0; i < len; i++) {
    mount_op *m = &p->mounts[i];
    napi_value o;
    int64_t x;
    napi_get_element(env, arr, i, &o);
    p->nmounts = (int)i + 1;
    if (!get_int_prop(env, o, "kind", &x)) return false;
    m->kind = (int)x;
    if (!get_opt_string(env, o, "source", &m->source) ||
        !get_opt_string(env, o, "target", &m->target) ||
        !get_opt_string(env, o, "data", &m->data))
      return false;
    if (!m->target) {
      throw_type_error(env, "mounts[i].target must be a string");
      return false;
    }
    if (!get_int_prop(env, o, "flags", &x)) return false;
    m->flags = (unsigned long)x;
    if (!get_int_prop(env, o, "remountFlags", &x)) return false;
    m->remount_flags = (unsigned long)x;
    if (!get_int_prop(env, o, "mode", &x)) return false;
    m->mode = (uint32_t)x;
    int64_t major, minor;
    if (!get_int_prop(env, o, "major", &major) || !get_int_prop(env, o, "minor", &minor))
      return false;
    m->dev = makedev((unsigned int)major, (unsigned int)minor);
    if (!get_int_prop(env, o, "uid", &m->uid) || !get_int_prop(env, o, "gid", &m->gid))
      return false;
  }

  if (!get_opt_string(env, spec, "root", &p->root)) return false;
  if (!get_int_prop(env, spec, "rootMode", &n)) return false;
  p->root_mode = (int)n;

  if (!get_array(env, spec, "rlimits", &arr, &len)) return false;
  p->rlimits = calloc(len / 3 + 1, sizeof(rlimit_op));
  if (!p->rlimits) return false;
  p->nrlimits = (int)(len / 3);
  for (int i = 0; i < p->nrlimits; i++) {
    int64_t r, soft, hard;
    napi_get_element(env, arr, 3 * i, &v);
    if (!get_int64(env, v, "rlimits[i].resource", &r)) return false;
    napi_get_element(env, arr, 3 * i + 1, &v);
    if (!get_int64(env, v, "rlimits[i].soft", &soft)) return false;
    napi_get_element(env, arr, 3 * i + 2, &v);
    if (!get_int64(env, v, "rlimits[i].hard", &hard)) return false;
    p->rlimits[i].resource = (int)r;
    /* -1 stands for RLIM_INFINITY, which a JS number cannot hold. */
    p->rlimits[i].lim.rlim_cur = soft < 0 ? RLIM_INFINITY : (rlim_t)soft;
    p->rlimits[i].lim.rlim_max = hard < 0 ? RLIM_INFINITY : (rlim_t)hard;
  }

  if (!get_int_prop(env, spec, "uid", &p->uid) || !get_int_prop(env, spec, "gid", &p->gid))
    return false;
  if (!prop(env, spec, "groups", &v)) return false;
  if (!is_undef(env, v)) {
    if (!get_array(env, spec, "groups", &arr, &len)) return false;
    p->set_groups = true;
    p->ngroups = (int)len;
    p->groups = calloc(len + 1, sizeof(gid_t));
    if (!p->groups) return false;
    for (uint32_t i = 0; i < len; i++) {
      uint32_t g;
      napi_get_element(env, arr, i, &v);
      if (!get_uint32(env, v, "groups[i]", &g)) return false;
      p->groups[i] = g;
    }
  }
  if (!prop(env, spec, "loopbackUp", &v) ||
      napi_get_value_bool(env, v, &p->loopback_up) != napi_ok) {
    throw_type_error(env, "spec.loopbackUp must be a boolean");
    return false;
  }
  if (!prop(env, spec, "noNewPrivs", &v) ||
      napi_get_value_bool(env, v, &p->no_new_privs) != napi_ok) {
    throw_type_error(env, "spec.noNewPrivs must be a boolean");
    return false;
  }
  if (!get_int_prop(env, spec, "capLast", &n)) return false;
  p->cap_last = (int)n;
  if (!prop(env, spec, "seccomp", &v)) return false;
  if (!is_undef(env, v)) {
    uint8_t *bytes;
    size_t blen;
    if (!get_bytes(env, v, "seccomp", &bytes, &blen)) return false;
    if (blen == 0 || blen % sizeof(struct sock_filter) != 0 || blen / 8 > BPF_MAXINSNS) {
      throw_type_error(env, "seccomp must hold 1..4096 8-byte sock_filter entries");
      return false;
    }
    p->prog.filter = malloc(blen);
    if (!p->prog.filter) return false;
    memcpy(p->prog.filter, bytes, blen);
    p->prog.len = (unsigned short)(blen / sizeof(struct sock_filter));
    p->has_seccomp = true;
  }
  return true;
}

#define CHILD_STACK (256 * 1024)

/* Runs fn in a CLONE_VM | CLONE_VFORK child; returns the pid (or -1 with errno) and fills the
 * child's report (step -1 when the pipe closed without one). */
static pid_t run_child(int (*fn)(void *), plan *p, int extra_flags, int *pidfd, report *rep) {
  int pipefd[2];
  rep->step = -1;
  if (pipe2(pipefd, O_CLOEXEC) < 0) return -1;
  void *stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    int err = errno;
    close(pipefd[0]);
    close(pipefd[1]);
    errno = err;
    return -1;
  }
  p->errfd = pipefd[1];
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = clone(fn, (char *)stack + CHILD_STACK,
                    CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD | extra_flags, p, pidfd, NULL,
                    NULL);
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  munmap(stack, CHILD_STACK);
  close(pipefd[1]);
  if (pid > 0) {
    ssize_t r;
    do r = read(pipefd[0], rep, sizeof *rep);
    while (r < 0 && errno == EINTR);
    if (r != (ssize_t)sizeof *rep) rep->step = -1;
  }
  close(pipefd[0]);
  errno = err;
  return pid;
}

/*
 * One spawnConfined or reaperKill call, in three parts so that the synchronous and the
 * asynchronous exports share every line: *_prepare reads the arguments on the main thread
 * into the job (plain C memory, no napi_value kept), *_execute clones, waits and reaps
 * without any Node-API call (so it may run on the libuv thread pool), and *_settle turns
 * the outcome into the return value or the thrown error on the main thread again.
 */
typedef struct job job;
struct job {
  plan p;
  bool pid_ns;
  /* Async only: F_DUPFD_CLOEXEC copies of the fd sources, owned by the job, so that the
   * caller closing its own fds while the spawn is queued changes nothing; -1 where the
   * source was not open (the child then fails step 'fds' exactly as the sync call does). */
  int *owned;
  pid_t pid;
  int pidfd;
  int clone_err;
  int status;
  report rep;
  void (*execute)(job *);
  napi_value (*settle)(napi_env, job *);
  napi_deferred deferred;
  napi_async_work work;
};

static void free_job(job *j) {
  if (j->pidfd >= 0) close(j->pidfd);
  if (j->owned)
    for (int i = 0; i < j->p.nfds; i++)
      if (j->owned[i] >= 0) close(j->owned[i]);
  free(j->owned);
  free_plan(&j->p);
  free(j);
}

static job *new_job(void) {
  job *j = calloc(1, sizeof *j);
  if (j) j->pidfd = -1;
  return j;
}

static void reap(pid_t pid, int *status) {
  int ignored;
  while (waitpid(pid, status ? status : &ignored, 0) < 0 && errno == EINTR) {
  }
}

static job *spawn_prepare(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    throw_type_error(env, "spawnConfined(spec, pidNamespace)");
    return NULL;
  }
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_object) {
    throw_type_error(env, "spec must be an object");
    return NULL;
  }
  job *j = new_job();
  if (!j) {
    throw_sys_error(env, "spawnConfined", ENOMEM, "preparing the child");
    return NULL;
  }
  napi_get_value_bool(env, argv[1], &j->pid_ns);
  if (!build_plan(env, argv[0], &j->p)) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_sys_error(env, "spawnConfined", ENOMEM, "preparing the child");
    free_job(j);
    return NULL;
  }
  return j;
}

static void spawn_execute(job *j) {
  j->pid = run_child(spawn_child, &j->p, j->pid_ns ? CLONE_NEWPID : 0, &j->pidfd, &j->rep);
  j->clone_err = errno;
  if (j->pid > 0 && j->rep.step >= 0) {
    reap(j->pid, NULL);
    close(j->pidfd);
    j->pidfd = -1;
  }
}

static napi_value spawn_settle(napi_env env, job *j) {
  plan *p = &j->p;
  if (j->pid < 0) return throw_spawn_error(env, "clone", j->clone_err, p->file);
  if (j->rep.step >= 0) {
    char detail[600];
    const char *what = p->file;
    if ((j->rep.step == STEP_MOUNT || j->rep.step == STEP_MKNOD) && j->rep.index >= 0 &&
        j->rep.index < p->nmounts)
      what = p->mounts[j->rep.index].target;
    else if (j->rep.step == STEP_PIVOT_ROOT || j->rep.step == STEP_CHROOT)
      what = p->root;
    else if (j->rep.step == STEP_CHDIR)
      what = p->cwd;
    if (j->rep.index >= 0)
      snprintf(detail, sizeof detail, "entry %d (%s)", j->rep.index, what ? what : "");
    else
      snprintf(detail, sizeof detail, "%s", what ? what : "");
    const char *name = j->rep.step < STEP_COUNT ? step_names[j->rep.step] : "unknown";
    return throw_spawn_error(env, name, j->rep.err, detail);
  }
  napi_value out;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_set_named_property(env, out, "pid", make_int(env, j->pid)));
  NAPI_CALL(env, napi_set_named_property(env, out, "pidfd", make_int(env, j->pidfd)));
  /* From here the caller owns the pidfd. */
  j->pidfd = -1;
  return out;
}

static job *reaper_prepare(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t target, reaper;
  if (argc < 2 || !get_uint32(env, argv[0], "targetUid", &target) ||
      !get_uint32(env, argv[1], "reaperUid", &reaper))
    return NULL;
  /* Re-checked here so that no caller of the raw binding can reach kill(-1) as root. */
  if (target < 1000 || reaper < 1000 || target == reaper || target == (uint32_t)-1 ||
      reaper == (uint32_t)-1) {
    throw_type_error(env, "reaperKill: unsafe uid combination");
    return NULL;
  }
  job *j = new_job();
  if (!j) {
    throw_sys_error(env, "reaperKill", ENOMEM, "preparing the reaper");
    return NULL;
  }
  j->p.target_uid = target;
  j->p.reaper_uid = reaper;
  return j;
}

static void reaper_execute(job *j) {
  j->pid = run_child(reaper_child, &j->p, 0, &j->pidfd, &j->rep);
  j->clone_err = errno;
  if (j->pid > 0) {
    reap(j->pid, &j->status);
    close(j->pidfd);
    j->pidfd = -1;
  }
}

static napi_value reaper_settle(napi_env env, job *j) {
  if (j->pid < 0) return throw_sys_error(env, "clone", j->clone_err, "reaper");
  char detail[96];
  snprintf(detail, sizeof detail, "reaper for uid %u (reaper uid %u)", j->p.target_uid,
           j->p.reaper_uid);
  if (j->rep.step >= 0) {
    const char *name = j->rep.step < STEP_COUNT ? step_names[j->rep.step] : "unknown";
    return throw_sys_error(env, name, j->rep.err, detail);
  }
  if (!WIFEXITED(j->status) || WEXITSTATUS(j->status) != 0)
    return throw_sys_error(env, "reaper", ECHILD, detail);
  napi_value undef;
  NAPI_CALL(env, napi_get_undefined(env, &undef));
  return undef;
}

static napi_value run_sync(napi_env env, job *j) {
  if (!j) return NULL;
  j->execute(j);
  napi_value out = j->settle(env, j);
  free_job(j);
  return out;
}

/* ---- the same calls on the libuv thread pool ---- */

/* The clone may come from any thread: CLONE_VFORK suspends only the calling one, and the
 * child touches nothing but the job and its own stack. */
static void async_execute(napi_env env, void *data) {
  job *j = data;
  /* No Node-API here: this runs on a thread-pool thread. */
  j->execute(j);
}

static void async_complete(napi_env env, napi_status status, void *data) {
  job *j = data;
  napi_value value = NULL, error = NULL;
  if (status == napi_ok) {
    value = j->settle(env, j);
    if (!value) napi_get_and_clear_last_exception(env, &error);
  } else {
    napi_value msg;
    napi_create_string_utf8(env, "cancelled before it ran", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &error);
  }
  napi_delete_async_work(env, j->work);
  napi_deferred deferred = j->deferred;
  free_job(j);
  if (value)
    napi_resolve_deferred(env, deferred, value);
  else
    napi_reject_deferred(env, deferred, error);
}

static napi_value queue_job(napi_env env, job *j, const char *name) {
  if (!j) return NULL;
  napi_value promise, resource_name;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_promise(env, &j->deferred, &promise) != napi_ok) {
    free_job(j);
    return throw_sys_error(env, name, ENOMEM, "creating the promise");
  }
  if (napi_create_async_work(env, NULL, resource_name, async_execute, async_complete, j,
                             &j->work) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    /* The deferred is left unsettled and the promise is dropped: the caller gets the throw. */
    if (j->work) napi_delete_async_work(env, j->work);
    free_job(j);
    return throw_sys_error(env, name, ENOMEM, "queueing the work");
  }
  return promise;
}

/* The caller may close its fds as soon as the call returns; the job keeps its own copies. */
static bool own_fd_sources(job *j) {
  plan *p = &j->p;
  j->owned = malloc((p->nfds + 1) * sizeof(int));
  if (!j->owned) return false;
  for (int i = 0; i < p->nfds; i++) {
    j->owned[i] = fcntl(p->fd_source[i], F_DUPFD_CLOEXEC, 3);
    if (j->owned[i] >= 0) p->fd_source[i] = j->owned[i];
  }
  return true;
}

static job *with_kind(job *j, void (*execute)(job *), napi_value (*settle)(napi_env, job *)) {
  if (j) {
    j->execute = execute;
    j->settle = settle;
  }
  return j;
}

napi_value js_spawn_confined(napi_env env, napi_callback_info info) {
  return run_sync(env, with_kind(spawn_prepare(env, info), spawn_execute, spawn_settle));
}

napi_value js_spawn_confined_async(napi_env env, napi_callback_info info) {
  job *j = with_kind(spawn_prepare(env, info), spawn_execute, spawn_settle);
  if (j && !own_fd_sources(j)) {
    free_job(j);
    return throw_sys_error(env, "spawnConfinedAsync", ENOMEM, "copying the fds");
  }
  return queue_job(env, j, "spawnConfinedAsync");
}

napi_value js_reaper_kill(napi_env env, napi_callback_info info) {
  return run_sync(env, with_kind(reaper_prepare(env, info), reaper_execute, reaper_settle));
}

napi_value js_reaper_kill_async(napi_env env, napi_callback_info info) {
  return queue_job(env, with_kind(reaper_prepare(env, info), reaper_execute, reaper_settle),
                   "reaperKillAsync");
}
