/* A xenstore load generator in C: write+read pairs over the wire protocol (xs_wire.h's header:
 * type, req_id, tx_id, len, host order), N connections in one thread and one poll loop, DEPTH
 * pairs in flight on each (1: one at a time), for SECONDS; prints the pairs per second.
 * bench/xenstore/run.mjs builds it with cc -O2 if it can. Where the daemon is cheaper than the
 * Node client (XenstoreClient), the client bounds a pipelined run; this one costs a fraction of
 * either daemon's CPU per request, so the daemon is what it measures.
 *   load SOCKET CLIENTS DEPTH SECONDS */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { XS_READ = 2, XS_WRITE = 11, XS_RM = 13, XS_ERROR = 16 };
enum { MAX_CONNS = 16, MAX_DEPTH = 64, BUF = 1 << 16 };

struct hdr {
  uint32_t type, req_id, tx_id, len;
};

struct conn {
  int fd;
  char in[BUF];
  size_t have;
  char out[BUF];
  size_t queued;
  /* Per slot: the number of its next key, and whether its write is answered (a read is out). */
  unsigned next[MAX_DEPTH];
  int reading[MAX_DEPTH];
  int live;
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void put(struct conn *c, uint32_t type, uint32_t id, const char *payload, size_t len) {
  struct hdr h = {type, id, 0, (uint32_t)len};
  if (c->queued + sizeof(h) + len > BUF) exit(3);
  memcpy(c->out + c->queued, &h, sizeof(h));
  memcpy(c->out + c->queued + sizeof(h), payload, len);
  c->queued += sizeof(h) + len;
}

/* Slot s of connection ci: its key's WRITE (value after the nul) or READ. */
static void request(struct conn *c, int ci, int s, int read) {
  char p[96];
  int n = snprintf(p, sizeof(p), "/bench/c%d/k%u", ci * MAX_DEPTH + s, c->next[s] % 64) + 1;
  if (!read) {
    memcpy(p + n, "value-0123456789", 16);
    n += 16;
  }
  put(c, read ? XS_READ : XS_WRITE, (uint32_t)s, p, (size_t)n);
}

static void flush(struct conn *c) {
  size_t off = 0;
  while (off < c->queued) {
    ssize_t w = write(c->fd, c->out + off, c->queued - off);
    if (w <= 0) exit(4);
    off += (size_t)w;
  }
  c->queued = 0;
}

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  int nconn = atoi(argv[2]), depth = atoi(argv[3]);
  double secs = atof(argv[4]);
  if (nconn < 1 || nconn > MAX_CONNS || depth < 1 || depth > MAX_DEPTH) return 2;
  static struct conn conns[MAX_CONNS];
  struct pollfd fds[MAX_CONNS];
  for (int i = 0; i < nconn; i++) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof(a.sun_path) - 1);
    conns[i].fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (conns[i].fd < 0 || connect(conns[i].fd, (struct sockaddr *)&a, sizeof(a)) < 0) return 1;
    fds[i] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
  }
  double t0 = now(), end = t0 + secs;
  long pairs = 0;
  int live = 0;
  for (int i = 0; i < nconn; i++) {
    for (int s = 0; s < depth; s++) request(&conns[i], i, s, 0);
    conns[i].live = depth;
    live += depth;
    flush(&conns[i]);
  }
  int over = 0;
  while (live > 0) {
    if (poll(fds, (nfds_t)nconn, -1) < 0) return 1;
    if (!over && now() >= end) over = 1;
    for (int i = 0; i < nconn; i++) {
      struct conn *c = &conns[i];
      if (!fds[i].revents) continue;
      ssize_t got = read(c->fd, c->in + c->have, BUF - c->have);
      if (got <= 0) return 5;
      c->have += (size_t)got;
      size_t off = 0;
      while (c->have - off >= sizeof(struct hdr)) {
        struct hdr h;
        memcpy(&h, c->in + off, sizeof(h));
        if (c->have - off < sizeof(h) + h.len) break;
        off += sizeof(h) + h.len;
        int s = (int)h.req_id;
        if (h.type == XS_ERROR || s < 0 || s >= depth) return 6;
        if (!c->reading[s]) {
          c->reading[s] = 1;
          request(c, i, s, 1);
          continue;
        }
        c->reading[s] = 0;
        c->next[s]++;
        pairs++;
        if (over) {
          c->live--;
          live--;
        } else
          request(c, i, s, 0);
      }
      memmove(c->in, c->in + off, c->have - off);
      c->have -= off;
      flush(c);
    }
  }
  double t = now() - t0;
  /* Leave the tree as it was: one RM of /bench, answered before the exit. */
  put(&conns[0], XS_RM, 0, "/bench", 7);
  flush(&conns[0]);
  struct hdr h;
  if (read(conns[0].fd, &h, sizeof(h)) != (ssize_t)sizeof(h)) return 7;
  printf("%.0f\n", (double)pairs / t);
  return 0;
}
