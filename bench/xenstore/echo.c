/* The least a server can do per request: a unix socket server that writes back whatever it reads
 * (a poll loop, no parsing). bench/xenstore/run.mjs builds it with cc -O2 if it can; its round
 * trip and pair rates are what no xenstore daemon can beat over the same socket and client. */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 64

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strncpy(a.sun_path, argv[1], sizeof(a.sun_path) - 1);
  unlink(argv[1]);
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 16) < 0) return 1;
  printf("ready\n");
  fflush(stdout);
  struct pollfd fds[MAX_FDS] = {{.fd = ls, .events = POLLIN}};
  int n = 1;
  static char buf[65536];
  for (;;) {
    if (poll(fds, n, -1) < 0) return 1;
    for (int i = n - 1; i >= 1; i--) {
      if (!fds[i].revents) continue;
      ssize_t got = read(fds[i].fd, buf, sizeof(buf));
      ssize_t off = 0;
      while (got > 0 && off < got) {
        ssize_t w = write(fds[i].fd, buf + off, got - off);
        if (w <= 0) break;
        off += w;
      }
      if (got <= 0 || off < got) {
        close(fds[i].fd);
        fds[i] = fds[--n];
      }
    }
    if (fds[0].revents && n < MAX_FDS) {
      int c = accept(ls, NULL, NULL);
      if (c >= 0) fds[n++] = (struct pollfd){.fd = c, .events = POLLIN};
    }
  }
}
