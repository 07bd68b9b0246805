/* A TCP port on 127.0.0.1 that never accepts, for the connect-timeout test
 * (tests/esp32/): it listens with a backlog of 0, fills that backlog with
 * one connection of its own, and then the kernel drops every further SYN, so
 * a client's connect() times out. Prints the port, then waits to be killed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (s < 0 || bind(s, (struct sockaddr*)&a, sizeof a) != 0 || listen(s, 0) != 0 ||
      getsockname(s, (struct sockaddr*)&a, &len) != 0) {
    perror("tcp-blackhole");
    return 1;
  }
  int filler = socket(AF_INET, SOCK_STREAM, 0);
  if (filler < 0 || connect(filler, (struct sockaddr*)&a, sizeof a) != 0) {
    perror("tcp-blackhole: filling the backlog");
    return 1;
  }
  printf("%u\n", (unsigned)ntohs(a.sin_port));
  fflush(stdout);
  for (;;) pause();
}
