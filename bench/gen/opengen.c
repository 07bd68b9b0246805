// Open-loop load generator in C (epoll): the hot loop of bench/workers/devices.mjs for TCP
// devices, for the open-loop scenario, so that the generator costs little of the machine's two
// cores. Driven by bench/workers/cgen.mjs over stdin/stdout, one line per command and answer.
//
// Usage: opengen CONFIG_FILE
// CONFIG_FILE lines: "target sockpit|relay|mqtt", "port N", "tag T", then one "dev ID TOKEN ADDR"
// per device (ADDR: the local address to connect from, or "-").
//
// Commands (stdin)                     Answers (stdout)
//   connect CONCURRENCY TIMEOUT_MS       connected READY ELAPSED_MS P99_MS FAILURES (why=n,… or -)
//   rate R COUNT                         ok          (COUNT -1: every device)
//   stats RESET                          stats sent=… dropped=… … errors=code:n,… (or -)
//   close                                ok, then exit
//
// What a device does is what the Node generator does (bench/README.md, "Load at a fixed rate"):
// sockpit devices say hello and wait for their welcome, write one base64 line per reading, count
// `stored` answers, ack every command at once and ping after 30 s of silence; relay devices say
// hello and are ready; MQTT devices send CONNECT, are ready at CONNACK and publish QoS 0.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { T_SOCKPIT, T_RELAY, T_MQTT };
enum { S_IDLE, S_CONNECTING, S_HELLO, S_READY, S_CLOSED };

#define HIGH_WATER (64 * 1024)
#define MAX_CATCHUP_MS 100.0
#define KEEPALIVE_MS 30000.0
#define IN_MAX (64 * 1024)
#define STDIN_TAG UINT64_MAX

typedef struct {
  int fd;
  int state;
  char id[72];
  char token[300];
  char laddr[48];
  uint64_t seq;
  char *out;
  size_t outlen, outcap;
  char *in;
  size_t inlen;
  double t0, lastWrite;
  int wantOut;
} Dev;

static int target = T_SOCKPIT;
static int port = 0;
static char tag[64] = "b";
static Dev *devs = NULL;
static int ndev = 0;
static int ep = -1;

static struct {
  uint64_t sent, dropped, lagged, stored, commands, closed;
} ctr;
static uint64_t totalSent = 0, totalStored = 0;
static double countingSince = 0;
// A few names with counts: server error codes, and why connections failed.
#define TALLY_MAX 16
typedef struct {
  char name[TALLY_MAX][40];
  uint64_t n[TALLY_MAX];
  int len;
} Tally;
static Tally errors, whys;

static void tally(Tally *t, const char *name) {
  for (int i = 0; i < t->len; i++)
    if (!strcmp(t->name[i], name)) {
      t->n[i]++;
      return;
    }
  if (t->len < TALLY_MAX) {
    snprintf(t->name[t->len], sizeof t->name[0], "%s", name);
    t->n[t->len++] = 1;
  }
}

/** Prints "name<sep>n,name<sep>n" or "-". */
static void printTally(const Tally *t, char sep) {
  if (!t->len) printf("-");
  for (int i = 0; i < t->len; i++) printf("%s%s%c%llu", i ? "," : "", t->name[i], sep, (unsigned long long)t->n[i]);
}

/* The monotonic clock, as the Node side reads it (bench/lib/stats.mjs nowMs): immune to wall-clock steps. */
static double nowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "opengen: %s: %s\n", what, strerror(errno));
  exit(1);
}

// ---- base64 ----
static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static size_t b64enc(const unsigned char *in, size_t n, char *out) {
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
    out[o++] = B64[v >> 18];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = B64[(v >> 6) & 63];
    out[o++] = B64[v & 63];
  }
  if (i < n) {
    uint32_t v = in[i] << 16;
    if (i + 1 < n) v |= in[i + 1] << 8;
    out[o++] = B64[v >> 18];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  return o;
}
static int b64val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
static size_t b64dec(const char *in, size_t n, char *out) {
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64val(in[i]);
    if (v < 0) continue;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  out[o] = 0;
  return o;
}

// ---- output ----
static void arm(Dev *d, int wantOut) {
  if (d->wantOut == wantOut) return;
  d->wantOut = wantOut;
  struct epoll_event ev = {.events = EPOLLIN | (wantOut ? EPOLLOUT : 0), .data.u64 = (uint64_t)(d - devs)};
  epoll_ctl(ep, EPOLL_CTL_MOD, d->fd, &ev);
}

static void closeDev(Dev *d, int count) {
  if (d->fd >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, d->fd, NULL);
    close(d->fd);
  }
  if (count && d->state == S_READY) ctr.closed++;
  d->fd = -1;
  d->state = S_CLOSED;
  d->outlen = 0;
  d->inlen = 0;
}

static void devWrite(Dev *d, const char *buf, size_t len) {
  if (d->fd < 0) return;
  d->lastWrite = nowMs();
  if (d->outlen == 0) {
    ssize_t w = write(d->fd, buf, len);
    if (w < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        closeDev(d, 1);
        return;
      }
      w = 0;
    }
    if ((size_t)w == len) return;
    buf += w;
    len -= (size_t)w;
  }
  if (d->outlen + len > d->outcap) {
    d->outcap = (d->outlen + len) * 2;
    d->out = realloc(d->out, d->outcap);
  }
  memcpy(d->out + d->outlen, buf, len);
  d->outlen += len;
  arm(d, 1);
}

static void flushOut(Dev *d) {
  while (d->outlen > 0) {
    ssize_t w = write(d->fd, d->out, d->outlen);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      closeDev(d, 1);
      return;
    }
    memmove(d->out, d->out + w, d->outlen - (size_t)w);
    d->outlen -= (size_t)w;
  }
  arm(d, 0);
}

static void sendJsonLine(Dev *d, const char *json) {
  char line[2048];
  size_t n = b64enc((const unsigned char *)json, strlen(json), line);
  line[n++] = '\n';
  devWrite(d, line, n);
}

static size_t mqttLen(unsigned char *p, size_t len) {
  size_t o = 0;
  do {
    unsigned char b = len % 128;
    len /= 128;
    if (len) b |= 128;
    p[o++] = b;
  } while (len);
  return o;
}

static void sendMqttConnect(Dev *d) {
  char cid[128];
  int cl = snprintf(cid, sizeof cid, "%s-%s", tag, d->id);
  unsigned char p[256];
  size_t body = 10 + 2 + cl, o = 0;
  p[o++] = 0x10;
  o += mqttLen(p + o, body);
  const unsigned char vh[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 0};  // clean session, keepalive 0
  memcpy(p + o, vh, 10);
  o += 10;
  p[o++] = cl >> 8;
  p[o++] = cl & 0xff;
  memcpy(p + o, cid, cl);
  o += cl;
  devWrite(d, (char *)p, o);
}

static int reading(Dev *d, char *json, size_t cap) {
  uint64_t seq = ++d->seq;
  return snprintf(json, cap, "{\"type\":\"telemetry\",\"id\":\"%s-%llu\",\"data\":{\"t\":%.3f,\"seq\":%llu,\"temp\":21.5,\"hum\":40.25}}", tag,
                  (unsigned long long)seq, nowMs(), (unsigned long long)seq);
}

static void sendOne(Dev *d) {
  char json[512];
  int n = reading(d, json, sizeof json);
  if (target == T_MQTT) {
    char topic[96];
    int tl = snprintf(topic, sizeof topic, "d/%s/t", d->id);
    unsigned char p[700];
    size_t o = 0;
    p[o++] = 0x30;
    o += mqttLen(p + o, 2 + tl + n);
    p[o++] = tl >> 8;
    p[o++] = tl & 0xff;
    memcpy(p + o, topic, tl);
    o += tl;
    memcpy(p + o, json, n);
    o += n;
    devWrite(d, (char *)p, o);
  } else {
    char line[800];
    size_t m = b64enc((const unsigned char *)json, n, line);
    line[m++] = '\n';
    devWrite(d, line, m);
  }
}

// ---- connecting ----
static int connecting = 0, connectNext = 0, connectReady = 0, connectDone = 0;
static double connectStart = 0, connectDeadline = 0;
static int connectConcurrency = 200, connectActive = 0;
static double *connectMs = NULL;
static int nConnectMs = 0;

static void finishConnect(Dev *d, int ok, const char *why) {
  if (d->t0 == 0) return;  // not part of a connect call (or already finished)
  connectMs[nConnectMs++] = nowMs() - d->t0;
  d->t0 = 0;
  connectActive--;
  connectDone++;
  if (ok)
    connectReady++;
  else {
    tally(&whys, why);
    closeDev(d, 0);
  }
}

static void startConnect(Dev *d) {
  d->t0 = nowMs();
  connectActive++;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  d->fd = fd;
  if (strcmp(d->laddr, "-")) {
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, d->laddr, &la.sin_addr);
    if (bind(fd, (struct sockaddr *)&la, sizeof la) < 0) {
      finishConnect(d, 0, "bind");
      return;
    }
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  d->state = S_CONNECTING;
  d->wantOut = 1;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)(d - devs)};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) finishConnect(d, 0, "connect");
}

static void pumpConnects(void) {
  while (connecting && connectActive < connectConcurrency && connectNext < ndev && nowMs() < connectDeadline) startConnect(&devs[connectNext++]);
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void checkConnectDone(void) {
  if (!connecting) return;
  int timedOut = nowMs() >= connectDeadline;
  if (connectDone < ndev && !timedOut) return;
  if (timedOut)
    for (int i = 0; i < ndev; i++)
      if (devs[i].t0 != 0) finishConnect(&devs[i], 0, "timeout");
  connecting = 0;
  qsort(connectMs, nConnectMs, sizeof(double), cmpd);
  double p99 = nConnectMs ? connectMs[(int)(nConnectMs * 0.99) < nConnectMs ? (int)(nConnectMs * 0.99) : nConnectMs - 1] : 0;
  printf("connected %d %.1f %.1f ", connectReady, nowMs() - connectStart, p99);
  printTally(&whys, '=');
  printf("\n");
  fflush(stdout);
}

// ---- input from the server ----
static void onLine(Dev *d, char *line, size_t len) {
  char json[IN_MAX];
  if (len >= sizeof json) return;
  b64dec(line, len, json);
  if (strstr(json, "\"type\":\"stored\"")) {
    ctr.stored++;
    totalStored++;
  } else if (strstr(json, "\"type\":\"welcome\"")) {
    if (d->state == S_HELLO) {
      d->state = S_READY;
      finishConnect(d, 1, NULL);
    }
  } else if (strstr(json, "\"type\":\"fromservertonode\"")) {
    char *p = strstr(json, "\"id\":\"");
    if (!p) return;
    p += 6;
    char *e = strchr(p, '"');
    if (!e || e - p > 64) return;
    *e = 0;
    ctr.commands++;
    char ack[256];
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"id\":\"%s\",\"ok\":true,\"result\":{\"relay\":true}}", p);
    sendJsonLine(d, ack);
  } else if (strstr(json, "\"type\":\"error\"")) {
    char *p = strstr(json, "\"error\":\"");
    char code[32] = "unknown";
    if (p) {
      p += 9;
      char *e = strchr(p, '"');
      if (e && e - p < 31) {
        memcpy(code, p, e - p);
        code[e - p] = 0;
      }
    }
    tally(&errors, code);
    if (d->state == S_HELLO) {
      char why[48];
      snprintf(why, sizeof why, "error %s", code);
      finishConnect(d, 0, why);
    }
  }
}

static void onReadable(Dev *d) {
  for (;;) {
    if (d->inlen >= IN_MAX) d->inlen = 0;  // a line this long is not one of ours: drop it
    ssize_t r = read(d->fd, d->in + d->inlen, IN_MAX - d->inlen);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      int wasConnecting = d->t0 != 0;
      if (wasConnecting) finishConnect(d, 0, "closed");
      closeDev(d, 1);
      return;
    }
    if (r < 0) return;
    if (target == T_RELAY) {
      d->inlen = 0;
      continue;
    }
    d->inlen += (size_t)r;
    if (target == T_MQTT) {
      // CONNACK: 0x20 0x02 flags rc.
      if (d->state == S_HELLO && d->inlen >= 4 && (unsigned char)d->in[0] == 0x20) {
        if (d->in[3] == 0) {
          d->state = S_READY;
          finishConnect(d, 1, NULL);
        } else
          finishConnect(d, 0, "connack");
      }
      d->inlen = 0;  // nothing else comes to a QoS 0 publisher
      continue;
    }
    size_t start = 0;
    for (size_t i = 0; i < d->inlen; i++) {
      if (d->in[i] != '\n') continue;
      size_t end = i;
      if (end > start && d->in[end - 1] == '\r') end--;
      if (end > start) onLine(d, d->in + start, end - start);
      if (d->fd < 0) return;
      start = i + 1;
    }
    memmove(d->in, d->in + start, d->inlen - start);
    d->inlen -= start;
  }
}

static void onWritable(Dev *d) {
  if (d->state == S_CONNECTING) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
      finishConnect(d, 0, err == ECONNREFUSED ? "ECONNREFUSED" : "connect");
      return;
    }
    d->state = S_HELLO;
    arm(d, 0);
    if (target == T_MQTT)
      sendMqttConnect(d);
    else {
      char hello[512];
      snprintf(hello, sizeof hello, "{\"type\":\"hello\",\"device\":\"%s\",\"token\":\"%s\",\"firmware\":\"bench\"}", d->id, d->token);
      sendJsonLine(d, hello);
      if (target == T_RELAY) {
        d->state = S_READY;
        finishConnect(d, 1, NULL);
      }
    }
    return;
  }
  flushOut(d);
}

// ---- load ----
static int mode = 0;  // 0 idle, 1 rate
static double rate = 0, phaseStart = 0;
static uint64_t issued = 0;
static int cursor = 0, active = 0;

static void openTick(void) {
  if (!mode) return;
  uint64_t tgt = (uint64_t)(rate * (nowMs() - phaseStart) / 1000.0);
  if (tgt <= issued) return;
  uint64_t due = tgt - issued;
  uint64_t cap = (uint64_t)(rate * MAX_CATCHUP_MS / 1000.0 + 0.999);
  if (cap < 1) cap = 1;
  if (due > cap) {
    ctr.lagged += due - cap;
    issued += due - cap;
    due = cap;
  }
  for (uint64_t k = 0; k < due; k++) {
    Dev *d = &devs[cursor];
    cursor = cursor + 1 == active ? 0 : cursor + 1;
    issued++;
    if (d->state != S_READY || d->outlen > HIGH_WATER) {
      ctr.dropped++;
      continue;
    }
    sendOne(d);
    ctr.sent++;
    totalSent++;
  }
}

static void keepalive(void) {
  if (target != T_SOCKPIT) return;
  double now = nowMs();
  for (int i = 0; i < ndev; i++)
    if (devs[i].state == S_READY && now - devs[i].lastWrite > KEEPALIVE_MS) sendJsonLine(&devs[i], "{\"type\":\"ping\"}");
}

// ---- commands ----
static char cmdBuf[4096];
static size_t cmdLen = 0;

static void command(char *line) {
  if (!strncmp(line, "connect ", 8)) {
    int conc = 200;
    double timeout = 120000;
    sscanf(line + 8, "%d %lf", &conc, &timeout);
    connecting = 1;
    connectConcurrency = conc > 0 ? conc : 1;
    connectStart = nowMs();
    connectDeadline = connectStart + timeout;
    connectNext = connectReady = connectDone = connectActive = nConnectMs = whys.len = 0;
    pumpConnects();
    checkConnectDone();
  } else if (!strncmp(line, "rate ", 5)) {
    double r = 0;
    int count = -1;
    sscanf(line + 5, "%lf %d", &r, &count);
    active = count < 0 || count > ndev ? ndev : count;
    phaseStart = nowMs();
    issued = 0;
    cursor = 0;
    rate = r;
    mode = r > 0 && active > 0;
    printf("ok\n");
    fflush(stdout);
  } else if (!strncmp(line, "stats ", 6)) {
    int reset = atoi(line + 6);
    double now = nowMs();
    int ready = 0;
    for (int i = 0; i < ndev; i++) ready += devs[i].state == S_READY;
    printf("stats sent=%llu dropped=%llu lagged=%llu stored=%llu commands=%llu closed=%llu since_ms=%.3f ready=%d total_sent=%llu total_stored=%llu errors=",
           (unsigned long long)ctr.sent, (unsigned long long)ctr.dropped, (unsigned long long)ctr.lagged, (unsigned long long)ctr.stored,
           (unsigned long long)ctr.commands, (unsigned long long)ctr.closed, now - countingSince, ready, (unsigned long long)totalSent,
           (unsigned long long)totalStored);
    printTally(&errors, ':');
    printf("\n");
    fflush(stdout);
    if (reset) {
      countingSince = now;
      ctr.sent = ctr.dropped = ctr.lagged = ctr.stored = ctr.commands = 0;
    }
  } else if (!strncmp(line, "close", 5)) {
    for (int i = 0; i < ndev; i++) closeDev(&devs[i], 0);
    printf("ok\n");
    fflush(stdout);
    exit(0);
  } else {
    printf("error unknown command\n");
    fflush(stdout);
  }
}

static void onStdin(void) {
  for (;;) {
    ssize_t r = read(0, cmdBuf + cmdLen, sizeof cmdBuf - 1 - cmdLen);
    if (r == 0) exit(0);  // the driver is gone
    if (r < 0) return;
    cmdLen += (size_t)r;
    char *nl;
    while ((nl = memchr(cmdBuf, '\n', cmdLen))) {
      *nl = 0;
      command(cmdBuf);
      size_t used = (size_t)(nl - cmdBuf) + 1;
      memmove(cmdBuf, cmdBuf + used, cmdLen - used);
      cmdLen -= used;
    }
    if (cmdLen == sizeof cmdBuf - 1) cmdLen = 0;
  }
}

static void loadConfig(const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) die(file);
  char line[1024];
  int cap = 0;
  while (fgets(line, sizeof line, f)) {
    char a[64], b[72], c[300], d[48];
    if (sscanf(line, "target %63s", a) == 1) target = !strcmp(a, "mqtt") ? T_MQTT : !strcmp(a, "relay") ? T_RELAY : T_SOCKPIT;
    else if (sscanf(line, "port %d", &port) == 1) {
    } else if (sscanf(line, "tag %63s", tag) == 1) {
    } else if (sscanf(line, "dev %71s %299s %47s", b, c, d) == 3) {
      if (ndev == cap) {
        cap = cap ? cap * 2 : 256;
        devs = realloc(devs, cap * sizeof(Dev));
      }
      Dev *x = &devs[ndev++];
      memset(x, 0, sizeof *x);
      x->fd = -1;
      memcpy(x->id, b, sizeof b);
      memcpy(x->token, c, sizeof c);
      memcpy(x->laddr, d, sizeof d);
      x->in = malloc(IN_MAX + 1);
    }
  }
  fclose(f);
  connectMs = calloc(ndev + 1, sizeof(double));
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: opengen CONFIG_FILE\n");
    return 2;
  }
  loadConfig(argv[1]);
  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  struct epoll_event sev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);
  countingSince = nowMs();
  double lastKeepalive = nowMs();
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, 1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u64 == STDIN_TAG) {
        onStdin();
        continue;
      }
      Dev *d = &devs[evs[i].data.u64];
      if (d->fd < 0) continue;
      if (evs[i].events & (EPOLLOUT | EPOLLERR)) onWritable(d);
      if (d->fd >= 0 && evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) onReadable(d);
    }
    if (connecting) {
      pumpConnects();
      checkConnectDone();
    }
    openTick();
    if (nowMs() - lastKeepalive > 1000) {
      lastKeepalive = nowMs();
      keepalive();
    }
  }
}
