/*
 * xen-depriv-dm: the libxl shim. libxl execs it as `device_model_override` (as root) with QEMU's
 * full command line; it hands that command line to the resident service xen-deprivd and stays,
 * as the pid libxl knows, until the device model is gone.
 *
 * Protocol (JSON-RPC 2.0, one JSON text per line, unix stream socket):
 *   -> {"jsonrpc":"2.0","id":1,"method":"launch","params":{"libxlArgv":[...],"shimPid":P}}
 *      The service takes its own copies of libxl's pre-opened descriptors (the QMP listener
 *      named by `-chardev socket,...,fd=K`) from this process with pidfd_getfd(2) while it
 *      handles the call, so they stay open here, untouched, until the reply arrives.
 *   <- {"id":1,"result":{"domid":N,...}}   keep running, silently; close the inherited fds >= 3
 *   <- {"id":1,"error":{"message":M}}      "xen-depriv-dm: M" on stderr, exit 1
 *   <- {"method":"exited","params":{"domid":N}}                   exit 0
 *   SIGHUP/SIGTERM/SIGINT -> {"id":2,"method":"destroy","params":{"domid":N}}, then exit 0 on
 *      `exited` or on the id-2 reply (result or error).
 *   Connection lost after the launch succeeded (the service restarted): reconnect every second,
 *   then {"id":3,"method":"watch","params":{"domid":N}}: a result keeps waiting for `exited`,
 *   an error means the DM is gone (exit 0). A signal that came while disconnected is sent as
 *   `destroy` (instead of `watch`) right after reconnecting.
 *
 * stdout/stderr are libxl's qemu-dm log: nothing is ever written there except one line on a
 * failure (exit 1). Plain libc, no heap: the line buffer is BSS, touched only as far as replies
 * reach.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/xen-depriv/xen-deprivd.sock"
#define LINE_CAP (1u << 20) /* bytes per reply line, without its newline */
#define MSG_CAP 500         /* bytes of an error message copied to stderr */
#define RETRY_MS 1000       /* reconnect period after the service went away */
#define MAX_DEPTH 64        /* JSON nesting accepted in a reply */
#define DOMID_MAX 0x7fef    /* DOMID_FIRST_RESERVED - 1 */

enum { ID_LAUNCH = 1, ID_DESTROY = 2, ID_WATCH = 3 };

static const char *sock_path;
static int conn = -1;      /* connection to the service, -1 while disconnected */
static int sigfd = -1;     /* signalfd for SIGHUP, SIGTERM, SIGINT */
static long domid = -1;    /* from -xen-domid, then from the launch result */
static int launched;       /* the launch result arrived: the DM exists (or existed) */
static int destroy_wanted; /* a signal arrived */
static int destroy_sent;   /* destroy was sent on the current connection */
static int watch_sent;     /* watch was sent on the current connection */

static char line[LINE_CAP + 1];
static size_t line_len;

/* --- failure: one line on stderr, exit 1 ------------------------------------------------- */

static void put_err(char *b, size_t *n, size_t cap, const char *s, int *cut) {
  for (; *s; s++) {
    if (*n == cap) {
      *cut = 1;
      return;
    }
    unsigned char c = (unsigned char)*s;
    b[(*n)++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c; /* keep it one line */
  }
}

/* Writes "xen-depriv-dm: " and the NULL-terminated parts, then a newline, to stderr (at most
 * MSG_CAP bytes of message, cut before a partial UTF-8 sequence) and exits 1. */
static void __attribute__((noreturn, sentinel)) fail_parts(const char *first, ...) {
  static const char prefix[] = "xen-depriv-dm: ";
  char buf[sizeof prefix + MSG_CAP + 1];
  size_t head = sizeof prefix - 1, n = head;
  int cut = 0;
  memcpy(buf, prefix, head);
  va_list ap;
  va_start(ap, first);
  for (const char *s = first; s && !cut; s = va_arg(ap, const char *))
    put_err(buf, &n, head + MSG_CAP, s, &cut);
  va_end(ap);
  if (cut) {
    size_t i = n; /* drop a multi-byte sequence the cap went through */
    while (i > head && ((unsigned char)buf[i - 1] & 0xc0) == 0x80) i--;
    if (i > head) {
      unsigned char l = (unsigned char)buf[i - 1];
      size_t want = l >= 0xf0 ? 4 : l >= 0xe0 ? 3 : l >= 0xc0 ? 2 : 1;
      if (n - (i - 1) < want) n = i - 1;
    }
  }
  buf[n++] = '\n';
  for (size_t off = 0; off < n;) {
    ssize_t w = write(2, buf + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += (size_t)w;
  }
  _exit(1);
}

#define fail(...) fail_parts(__VA_ARGS__, (const char *)NULL)

/* --- output: a small buffered writer onto the socket -------------------------------------- */

struct out {
  int fd;
  int err; /* a send failed: the connection is gone */
  size_t n;
  char b[4096];
};

static void out_flush(struct out *o) {
  size_t off = 0;
  while (!o->err && off < o->n) {
    ssize_t w = send(o->fd, o->b + off, o->n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) o->err = 1;
    else off += (size_t)w;
  }
  o->n = 0;
}

static void out_bytes(struct out *o, const char *s, size_t len) {
  while (len) {
    if (o->n == sizeof o->b) out_flush(o);
    size_t k = sizeof o->b - o->n;
    if (k > len) k = len;
    memcpy(o->b + o->n, s, k);
    o->n += k;
    s += k;
    len -= k;
  }
}

static void out_str(struct out *o, const char *s) { out_bytes(o, s, strlen(s)); }

static void out_long(struct out *o, long v) {
  char b[24];
  size_t i = sizeof b;
  unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
  do b[--i] = (char)('0' + u % 10); while (u /= 10);
  if (v < 0) b[--i] = '-';
  out_bytes(o, b + i, sizeof b - i);
}

/* A JSON string: quote and backslash escaped, control characters (and DEL) as \u00XX, every
 * other byte (valid UTF-8, checked up front) as is. */
static void out_json_string(struct out *o, const char *s) {
  static const char hex[] = "0123456789abcdef";
  out_bytes(o, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      char e[2] = {'\\', (char)*p};
      out_bytes(o, e, 2);
    } else if (*p < 0x20 || *p == 0x7f) {
      char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
      out_bytes(o, e, 6);
    } else {
      out_bytes(o, (const char *)p, 1);
    }
  }
  out_bytes(o, "\"", 1);
}

/* Sends {"jsonrpc":"2.0","id":ID,"method":"METHOD","params":{"domid":N}}. 0, or -1 if the
 * connection is gone. */
static int send_domid_call(int id, const char *method) {
  struct out o = {.fd = conn};
  out_str(&o, "{\"jsonrpc\":\"2.0\",\"id\":");
  out_long(&o, id);
  out_str(&o, ",\"method\":\"");
  out_str(&o, method);
  out_str(&o, "\",\"params\":{\"domid\":");
  out_long(&o, domid);
  out_str(&o, "}}\n");
  out_flush(&o);
  return o.err ? -1 : 0;
}

static int send_launch(char **args) {
  struct out o = {.fd = conn};
  out_str(&o, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"launch\",\"params\":{\"libxlArgv\":[");
  for (char **a = args; *a; a++) {
    if (a != args) out_bytes(&o, ",", 1);
    out_json_string(&o, *a);
  }
  out_str(&o, "],\"shimPid\":");
  out_long(&o, (long)getpid());
  out_str(&o, "}}\n");
  out_flush(&o);
  return o.err ? -1 : 0;
}

/* --- input: a minimal JSON reader for one reply line --------------------------------------- */

struct cur {
  const char *p, *e;
};

static void ws(struct cur *c) {
  while (c->p < c->e && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int hex4(const char *p, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char h = p[i];
    unsigned d = h >= '0' && h <= '9'   ? (unsigned)(h - '0')
                 : h >= 'a' && h <= 'f' ? (unsigned)(h - 'a' + 10)
                 : h >= 'A' && h <= 'F' ? (unsigned)(h - 'A' + 10)
                                        : 16u;
    if (d > 15) return -1;
    *v = *v << 4 | d;
  }
  return 0;
}

static void put_byte(char *dst, size_t cap, size_t *n, int *trunc, unsigned char b) {
  if (!dst) return;
  if (*n + 1 < cap) dst[(*n)++] = (char)b;
  else *trunc = 1;
}

/* At '"': decodes the string into dst (NUL-terminated, cut at cap - 1 bytes, *trunc set then);
 * dst may be NULL to skip. 0, or -1 if it is not a JSON string. */
static int get_string(struct cur *c, char *dst, size_t cap, int *trunc) {
  size_t n = 0;
  int t = 0;
  if (c->p >= c->e || *c->p != '"') return -1;
  c->p++;
  for (;;) {
    if (c->p >= c->e) return -1;
    unsigned char ch = (unsigned char)*c->p++;
    if (ch == '"') break;
    if (ch < 0x20) return -1;
    if (ch != '\\') {
      put_byte(dst, cap, &n, &t, ch);
      continue;
    }
    if (c->p >= c->e) return -1;
    char esc = *c->p++;
    unsigned cp;
    switch (esc) {
    case '"': cp = '"'; break;
    case '\\': cp = '\\'; break;
    case '/': cp = '/'; break;
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'u':
      if (c->e - c->p < 4 || hex4(c->p, &cp)) return -1;
      c->p += 4;
      if (cp >= 0xd800 && cp < 0xdc00) {
        unsigned lo;
        if (c->e - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u' && !hex4(c->p + 2, &lo) &&
            lo >= 0xdc00 && lo < 0xe000) {
          c->p += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else {
          cp = 0xfffd;
        }
      } else if (cp >= 0xdc00 && cp < 0xe000) {
        cp = 0xfffd;
      }
      break;
    default: return -1;
    }
    if (cp < 0x80) {
      put_byte(dst, cap, &n, &t, (unsigned char)cp);
    } else if (cp < 0x800) {
      put_byte(dst, cap, &n, &t, (unsigned char)(0xc0 | cp >> 6));
      put_byte(dst, cap, &n, &t, (unsigned char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      put_byte(dst, cap, &n, &t, (unsigned char)(0xe0 | cp >> 12));
      put_byte(dst, cap, &n, &t, (unsigned char)(0x80 | (cp >> 6 & 0x3f)));
      put_byte(dst, cap, &n, &t, (unsigned char)(0x80 | (cp & 0x3f)));
    } else {
      put_byte(dst, cap, &n, &t, (unsigned char)(0xf0 | cp >> 18));
      put_byte(dst, cap, &n, &t, (unsigned char)(0x80 | (cp >> 12 & 0x3f)));
      put_byte(dst, cap, &n, &t, (unsigned char)(0x80 | (cp >> 6 & 0x3f)));
      put_byte(dst, cap, &n, &t, (unsigned char)(0x80 | (cp & 0x3f)));
    }
  }
  if (dst) dst[n] = 0;
  if (trunc) *trunc = t;
  return 0;
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* A JSON number. *is_int is set when it is an integer without fraction or exponent that fits
 * in a long (its value in *v). */
static int get_number(struct cur *c, long *v, int *is_int) {
  int neg = 0, ok = 1;
  unsigned long u = 0;
  if (c->p < c->e && *c->p == '-') neg = 1, c->p++;
  if (c->p >= c->e || !is_digit(*c->p)) return -1;
  if (*c->p == '0') {
    c->p++;
  } else {
    for (; c->p < c->e && is_digit(*c->p); c->p++) {
      if (u > (unsigned long)(LONG_MAX / 10)) ok = 0;
      else u = u * 10 + (unsigned long)(*c->p - '0');
    }
  }
  if (c->p < c->e && *c->p == '.') {
    ok = 0;
    c->p++;
    if (c->p >= c->e || !is_digit(*c->p)) return -1;
    while (c->p < c->e && is_digit(*c->p)) c->p++;
  }
  if (c->p < c->e && (*c->p == 'e' || *c->p == 'E')) {
    ok = 0;
    c->p++;
    if (c->p < c->e && (*c->p == '+' || *c->p == '-')) c->p++;
    if (c->p >= c->e || !is_digit(*c->p)) return -1;
    while (c->p < c->e && is_digit(*c->p)) c->p++;
  }
  if (ok && u > (unsigned long)LONG_MAX) ok = 0;
  if (v) *v = ok ? (neg ? -(long)u : (long)u) : 0;
  if (is_int) *is_int = ok;
  return 0;
}

static int literal(struct cur *c, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(c->e - c->p) < n || memcmp(c->p, word, n)) return -1;
  c->p += n;
  return 0;
}

/* Object members: call obj_next with *count = 0 after the '{'. 1 with the key in key (""
 * when longer than the buffer) and the cursor on the value; 0 after the '}'; -1 on bad JSON. */
static int obj_next(struct cur *c, int *count, char *key, size_t cap) {
  ws(c);
  if (c->p >= c->e) return -1;
  if (*c->p == '}') {
    c->p++;
    return 0;
  }
  if (*count) {
    if (*c->p != ',') return -1;
    c->p++;
    ws(c);
  }
  int trunc = 0;
  if (get_string(c, key, cap, &trunc)) return -1;
  if (trunc) key[0] = 0;
  ws(c);
  if (c->p >= c->e || *c->p != ':') return -1;
  c->p++;
  ws(c);
  (*count)++;
  return 1;
}

static int skip_value(struct cur *c, int depth) {
  char key[8];
  int count = 0, r;
  if (depth > MAX_DEPTH) return -1;
  ws(c);
  if (c->p >= c->e) return -1;
  switch (*c->p) {
  case '{':
    c->p++;
    while ((r = obj_next(c, &count, key, sizeof key)) == 1)
      if (skip_value(c, depth + 1)) return -1;
    return r;
  case '[':
    c->p++;
    ws(c);
    if (c->p < c->e && *c->p == ']') {
      c->p++;
      return 0;
    }
    for (;;) {
      if (skip_value(c, depth + 1)) return -1;
      ws(c);
      if (c->p >= c->e) return -1;
      if (*c->p == ']') {
        c->p++;
        return 0;
      }
      if (*c->p++ != ',') return -1;
    }
  case '"': return get_string(c, NULL, 0, NULL);
  case 't': return literal(c, "true");
  case 'f': return literal(c, "false");
  case 'n': return literal(c, "null");
  default: return get_number(c, NULL, NULL);
  }
}

/* What this shim needs from one message. */
struct msg {
  int has_id, id_int; /* id_int: the id is an integer (in id) */
  long id;
  int has_method;
  char method[16];
  int has_result, has_error, has_message;
  char message[MSG_CAP + 8];
  long code;
  int has_code;
  int has_domid; /* result.domid or params.domid */
  long domid;
};

/* The value is an object: reads its "domid" (and "message"/"code" when m is for an error). */
static int read_members(struct cur *c, struct msg *m, int is_error) {
  char key[16];
  int count = 0, r;
  ws(c);
  if (c->p >= c->e || *c->p != '{') return skip_value(c, 2);
  c->p++;
  while ((r = obj_next(c, &count, key, sizeof key)) == 1) {
    if (!is_error && !strcmp(key, "domid") && c->p < c->e && (*c->p == '-' || is_digit(*c->p))) {
      int is_int;
      long v;
      if (get_number(c, &v, &is_int)) return -1;
      m->has_domid = is_int && v >= 0 && v <= DOMID_MAX;
      m->domid = v;
    } else if (is_error && !strcmp(key, "message") && c->p < c->e && *c->p == '"') {
      int trunc;
      if (get_string(c, m->message, sizeof m->message, &trunc)) return -1;
      m->has_message = 1;
    } else if (is_error && !strcmp(key, "code") && c->p < c->e && (*c->p == '-' || is_digit(*c->p))) {
      if (get_number(c, &m->code, &m->has_code)) return -1;
    } else if (skip_value(c, 2)) {
      return -1;
    }
  }
  return r;
}

static int parse_msg(const char *s, size_t n, struct msg *m) {
  struct cur c = {s, s + n};
  char key[16];
  int count = 0, r;
  memset(m, 0, sizeof *m);
  ws(&c);
  if (c.p >= c.e || *c.p != '{') return -1;
  c.p++;
  while ((r = obj_next(&c, &count, key, sizeof key)) == 1) {
    if (!strcmp(key, "id")) {
      m->has_id = 1;
      if (c.p < c.e && (*c.p == '-' || is_digit(*c.p))) {
        if (get_number(&c, &m->id, &m->id_int)) return -1;
      } else if (skip_value(&c, 1)) {
        return -1;
      }
    } else if (!strcmp(key, "method") && c.p < c.e && *c.p == '"') {
      int trunc;
      if (get_string(&c, m->method, sizeof m->method, &trunc)) return -1;
      if (trunc) m->method[0] = 0;
      m->has_method = 1;
    } else if (!strcmp(key, "result")) {
      m->has_result = 1;
      if (read_members(&c, m, 0)) return -1;
    } else if (!strcmp(key, "error")) {
      m->has_error = 1;
      if (read_members(&c, m, 1)) return -1;
    } else if (!strcmp(key, "params")) {
      if (read_members(&c, m, 0)) return -1;
    } else if (skip_value(&c, 1)) {
      return -1;
    }
  }
  if (r) return -1;
  ws(&c);
  return c.p == c.e ? 0 : -1;
}

/* --- descriptors and the connection ------------------------------------------------------ */

/* libxl may hand over a closed 0, 1 or 2; make sure our own descriptors never land there (an
 * error line must never go into the socket). */
static void guard_std_fds(void) {
  for (int fd = 0; fd < 3; fd++) {
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
      int n = open("/dev/null", O_RDWR);
      if (n >= 0 && n != fd) close(n); /* cannot happen: the lowest free number is fd */
    }
  }
}

static void close_fds(unsigned from, unsigned to) {
  if (from > to) return;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, from, to, 0) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536) max = 65536;
  if (to > (unsigned)max - 1) to = (unsigned)max - 1;
  for (unsigned fd = from; fd <= to; fd++) close((int)fd);
}

/* After the launch result: the service holds its own copies of libxl's descriptors, so every
 * inherited one above 2 is closed (the QMP listener then lives only in the DM, and a libxl
 * connect fails at once when the DM is gone). */
static void close_inherited(void) {
  unsigned a = (unsigned)sigfd, b = (unsigned)conn;
  if (a > b) {
    unsigned t = a;
    a = b;
    b = t;
  }
  unsigned from = 3;
  if (a >= from) {
    if (a > from) close_fds(from, a - 1);
    from = a + 1;
  }
  if (b >= from) {
    if (b > from) close_fds(from, b - 1);
    from = b + 1;
  }
  close_fds(from, ~0U);
}

static int open_conn(int nonblock_connect) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t len = strlen(sock_path);
  if (len >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(sa.sun_path, sock_path, len + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock_connect ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  /* No EINTR: the only signals with an effect here are blocked. A unix-domain connect never
   * returns EINPROGRESS: non-blocking, a full backlog is EAGAIN (retried a second later). */
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  if (nonblock_connect) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

/* The connection is gone (EOF, error, or a reply this shim cannot read). */
static void drop(const char *why) {
  if (!launched && !destroy_wanted) fail("lost xen-deprivd before it answered launch: ", why);
  close(conn);
  conn = -1;
  line_len = 0;
  destroy_sent = watch_sent = 0;
}

static void send_destroy(void) {
  if (send_domid_call(ID_DESTROY, "destroy")) drop("connection closed");
  else destroy_sent = 1;
}

static void try_reconnect(void) {
  conn = open_conn(1);
  if (conn < 0) return;
  if (destroy_wanted) {
    send_destroy();
  } else if (send_domid_call(ID_WATCH, "watch")) {
    drop("connection closed");
  } else {
    watch_sent = 1;
  }
}

/* One message from the service. */
static void handle(const struct msg *m) {
  if (m->has_method && !m->has_id) {
    if (!strcmp(m->method, "exited") && (!m->has_domid || m->domid == domid)) _exit(0);
    return; /* another notification: not for this shim */
  }
  if (m->has_id && !m->id_int && m->has_error && !launched && !destroy_wanted) {
    /* id null: the service could not read the launch request */
    if (m->has_message) fail(m->message);
    fail("xen-deprivd could not read the launch request");
  }
  if (!m->has_id || !m->id_int || m->has_method) return; /* not a reply to this shim */
  switch (m->id) {
  case ID_LAUNCH:
    if (launched) return;
    if (m->has_result) {
      launched = 1;
      if (m->has_domid) domid = m->domid;
      close_inherited();
    } else if (m->has_error) {
      if (destroy_wanted) return; /* the destroy reply ends it */
      if (m->has_message) fail(m->message);
      fail("xen-deprivd refused the launch");
    }
    return;
  case ID_DESTROY:
    if (destroy_sent && (m->has_result || m->has_error)) _exit(0);
    return;
  case ID_WATCH:
    if (watch_sent && m->has_error) _exit(0); /* not found: the DM is gone */
    return;
  default: return;
  }
}

/* Reads what is there and handles every complete line. */
static void read_conn(void) {
  ssize_t r;
  do r = read(conn, line + line_len, sizeof line - line_len);
  while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (r <= 0) {
    drop(r == 0 ? "connection closed" : strerror(errno));
    return;
  }
  size_t start = 0, scan = line_len;
  line_len += (size_t)r;
  for (;;) {
    char *nl = memchr(line + scan, '\n', line_len - scan);
    if (!nl) break;
    size_t end = (size_t)(nl - line);
    struct cur c = {line + start, line + end};
    ws(&c);
    if (c.p < c.e) {
      struct msg m;
      if (parse_msg(line + start, end - start, &m)) {
        drop("a reply is not JSON");
        return;
      }
      handle(&m);
      if (conn < 0) return;
    }
    start = scan = end + 1;
  }
  if (start) {
    memmove(line, line + start, line_len - start);
    line_len -= start;
  }
  if (line_len > LINE_CAP) drop("a reply line is over 1 MiB");
}

static int parse_domid(const char *s, long *v) {
  long n = 0;
  if (!*s) return -1;
  for (; *s; s++) {
    if (!is_digit(*s) || n > DOMID_MAX) return -1;
    n = n * 10 + (*s - '0');
  }
  if (n > DOMID_MAX) return -1;
  *v = n;
  return 0;
}

/* Whether s is well-formed UTF-8 (what a JSON text must carry). */
static int utf8_ok(const unsigned char *s) {
  while (*s) {
    unsigned c = *s++;
    if (c < 0x80) continue;
    int n = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
    if (n < 0) return 0;
    unsigned lo = 0x80, hi = 0xbf;
    if (c == 0xe0) lo = 0xa0;
    else if (c == 0xed) hi = 0x9f;
    else if (c == 0xf0) lo = 0x90;
    else if (c == 0xf4) hi = 0x8f;
    if (*s < lo || *s > hi) return 0;
    for (s++; --n > 0; s++)
      if ((*s & 0xc0) != 0x80) return 0;
  }
  return 1;
}

/* --- --help and --version: only as the sole argument ------------------------------------ */

#ifndef XEN_DEPRIV_VERSION
#define XEN_DEPRIV_VERSION "unknown" /* shim/build.mjs passes the package's version */
#endif

/* The source of `xen-depriv-dm --help` and of man/xen-depriv-dm.8 (scripts/gen-man.mjs turns
 * the headings ending in ':' into sections). */
static const char usage[] =
    "Usage: xen-depriv-dm QEMU-ARGUMENT...\n"
    "       xen-depriv-dm --help | --version\n"
    "\n"
    "The libxl shim of xen-depriv. libxl runs it (as root) as the device_model_override of a\n"
    "guest, with QEMU's command line. It hands that command line to the service xen-deprivd,\n"
    "which launches the device model deprivileged, and stays, as the pid libxl knows, until the\n"
    "device model is gone. In the guest's xl.cfg:\n"
    "\n"
    "  device_model_override = \"/usr/local/bin/xen-depriv-dm\"\n"
    "\n"
    "--help and --version are options only as the sole argument: any other command line is\n"
    "QEMU's (it has -xen-domid N), sent to xen-deprivd unchanged.\n"
    "\n"
    "Environment:\n"
    "  XEN_DEPRIVD_SOCKET  the service's socket (default " DEFAULT_SOCKET ")\n"
    "\n"
    "Signals:\n"
    "  SIGHUP, SIGTERM and SIGINT ask xen-deprivd to destroy the device model; the shim exits\n"
    "  when it is gone. If the service restarts, the shim reconnects every second.\n"
    "\n"
    "Exit status:\n"
    "  0  the device model is gone\n"
    "  1  a failure, reported as one line \"xen-depriv-dm: MESSAGE\" on stderr (the service is\n"
    "     not reachable, it refused the launch, no -xen-domid in the arguments)\n"
    "\n"
    "Output:\n"
    "  Nothing on stdout or stderr (libxl's qemu-dm log) but that one failure line.\n";

static void write_all_exit(const char *s, size_t n) {
  for (size_t off = 0; off < n;) {
    ssize_t w = write(1, s + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(1);
    off += (size_t)w;
  }
  _exit(0);
}

static void help_or_version(int argc, char **argv) {
  if (argc != 2) return; /* libxl's argv is QEMU's: never a lone --help */
  if (!strcmp(argv[1], "--help")) write_all_exit(usage, sizeof usage - 1);
  if (!strcmp(argv[1], "--version")) {
    static const char v[] = "xen-depriv-dm " XEN_DEPRIV_VERSION "\n";
    write_all_exit(v, sizeof v - 1);
  }
}

int main(int argc, char **argv) {
  guard_std_fds();
  help_or_version(argc, argv);

  for (int i = 1; i < argc; i++) {
    if (!utf8_ok((const unsigned char *)argv[i])) fail("an argument is not valid UTF-8");
    if ((!strcmp(argv[i], "-xen-domid") || !strcmp(argv[i], "--xen-domid")) && i + 1 < argc &&
        parse_domid(argv[i + 1], &domid))
      fail("bad -xen-domid ", argv[i + 1]);
  }
  if (domid < 0) fail("no -xen-domid in the arguments");

  const char *env = getenv("XEN_DEPRIVD_SOCKET");
  sock_path = env && *env ? env : DEFAULT_SOCKET;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  struct sigaction dfl = {.sa_handler = SIG_DFL}, ign = {.sa_handler = SIG_IGN};
  /* Blocked, they queue for the signalfd; an inherited SIG_IGN must not hide libxl's SIGHUP. */
  sigprocmask(SIG_BLOCK, &set, NULL);
  sigaction(SIGHUP, &dfl, NULL);
  sigaction(SIGTERM, &dfl, NULL);
  sigaction(SIGINT, &dfl, NULL);
  sigaction(SIGPIPE, &ign, NULL);
  sigaction(SIGXFSZ, &ign, NULL); /* stderr is a log under libxl's RLIMIT_FSIZE: EFBIG, not death */
  sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) fail("signalfd: ", strerror(errno));

  conn = open_conn(0);
  if (conn < 0) fail("cannot reach xen-deprivd at ", sock_path, ": ", strerror(errno));
  if (send_launch(argv + 1)) drop("connection closed");

  for (;;) {
    struct pollfd p[2] = {{.fd = sigfd, .events = POLLIN}, {.fd = conn, .events = POLLIN}};
    int r = poll(p, conn < 0 ? 1 : 2, conn < 0 ? RETRY_MS : -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail("poll: ", strerror(errno));
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      int got = 0;
      while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) got = 1;
      if (got && !destroy_wanted) {
        destroy_wanted = 1;
        if (conn >= 0) send_destroy();
        else try_reconnect(); /* at once, then every RETRY_MS */
        continue;
      }
    }
    if (conn < 0) {
      if (r == 0) try_reconnect();
      continue;
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) read_conn();
  }
}
