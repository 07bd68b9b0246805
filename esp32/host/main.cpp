// sockpit-device-host: the firmware's portable core on Linux, over POSIX
// sockets, with a simulated relay. It prints what the ESP32 prints on Serial.
//
//   sockpit-device-host --host 127.0.0.1 --port 7000 --id ID --token TOKEN [--interval-ms N]
//
// Run it with a small stack (`ulimit -s 64`) to get close to the ESP32's
// 8 KiB loop task: the tests in tests/esp32/ do.

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <random>

#include "../sockpit-device/src/core/device_core.h"

namespace {

volatile sig_atomic_t g_stop = 0;
void onSignal(int) { g_stop = 1; }

uint64_t monotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000u + static_cast<uint64_t>(ts.tv_nsec) / 1000000u;
}

// Exit statuses, for scripts and tests.
const int kExitRejected = 2;  // the server refused the id/token (with --on-reject exit)
const int kExitRestart = 3;   // the board would restart here (--reboot-timeout-ms)

class PosixPlatform : public sockpit::Platform {
 public:
  PosixPlatform() : fd_(-1), start_(monotonicMs()), relay_(false), stateFile_(0), rng_(std::random_device()()) {
    error_[0] = '\0';
  }
  ~PosixPlatform() { tcpClose(); }

  int fd() const { return fd_; }
  void setStateFile(const char* path) { stateFile_ = path; }

  uint32_t nowMs() { return static_cast<uint32_t>(monotonicMs() - start_); }
  uint32_t random32() { return static_cast<uint32_t>(rng_()); }

  void logLine(const char* text) {
    const uint64_t ms = monotonicMs() - start_;
    printf("[%7lu.%03lu] %s\n", static_cast<unsigned long>(ms / 1000),
           static_cast<unsigned long>(ms % 1000), text);
    fflush(stdout);
  }

  bool linkUp() { return true; }  // a PC has no Wi-Fi step to wait for

  sockpit::ConnectResult tcpConnect(const char* host, uint16_t port, uint32_t timeoutMs) {
    tcpClose();
    error_[0] = '\0';
    char service[8];
    snprintf(service, sizeof service, "%u", static_cast<unsigned>(port));
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo* list = 0;
    const int gai = getaddrinfo(host, service, &hints, &list);
    if (gai != 0) {
      snprintf(error_, sizeof error_, "%s", gai_strerror(gai));
      return sockpit::ConnectResult::DnsFailed;
    }
    int firstErr = 0;
    for (struct addrinfo* a = list; a && fd_ < 0; a = a->ai_next) {
      const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
          (errno == EINPROGRESS && waitConnected(fd, timeoutMs))) {
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fd_ = fd;
      } else {
        if (!firstErr) firstErr = errno;
        close(fd);
      }
    }
    freeaddrinfo(list);
    if (fd_ >= 0) return sockpit::ConnectResult::Ok;
    snprintf(error_, sizeof error_, "%s", strerror(firstErr));
    if (firstErr == ECONNREFUSED) return sockpit::ConnectResult::Refused;
    if (firstErr == ETIMEDOUT) return sockpit::ConnectResult::TimedOut;
    return sockpit::ConnectResult::Failed;
  }

  int tcpRead(char* buf, size_t cap) {
    if (fd_ < 0) return -1;
    const ssize_t n = recv(fd_, buf, cap, 0);
    if (n > 0) return static_cast<int>(n);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    snprintf(error_, sizeof error_, "%s", n == 0 ? "" : strerror(errno));
    return -1;
  }

  bool tcpWrite(const char* data, size_t len) {
    while (len > 0 && fd_ >= 0) {
      const ssize_t n = send(fd_, data, len, MSG_NOSIGNAL);
      if (n > 0) {
        data += n;
        len -= static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        struct pollfd p = {fd_, POLLOUT, 0};
        if (poll(&p, 1, 5000) > 0) continue;
        snprintf(error_, sizeof error_, "send timed out");
        return false;
      }
      snprintf(error_, sizeof error_, "%s", strerror(errno));
      return false;
    }
    return len == 0;
  }

  void tcpClose() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  const char* tcpError() { return error_; }

  void setRelay(bool on) {
    if (on != relay_) logLine(on ? "(simulated relay clicks ON)" : "(simulated relay clicks OFF)");
    relay_ = on;
  }

  // The ESP32 keeps the relay state in flash (Preferences); the PC build in
  // a file, when --state-file is given.
  bool loadRelay(bool* on) {
    if (!stateFile_) return false;
    FILE* f = fopen(stateFile_, "r");
    if (!f) return false;
    const int c = fgetc(f);
    fclose(f);
    if (c != '0' && c != '1') return false;
    *on = c == '1';
    return true;
  }

  void saveRelay(bool on) {
    if (!stateFile_) return;
    FILE* f = fopen(stateFile_, "w");
    if (!f) {
      logLine("(could not write the --state-file)");
      return;
    }
    fputs(on ? "1\n" : "0\n", f);
    fclose(f);
  }

  // A PC has no heap figure, Wi-Fi signal or chip sensor worth reporting.
  void readSensors(sockpit::Readings& r) { r.uptimeMs = monotonicMs() - start_; }

  void restart() {
    logLine("(The PC build exits here instead of restarting: status 3.)");
    fflush(stdout);
    _exit(kExitRestart);
  }

 private:
  bool waitConnected(int fd, uint32_t timeoutMs) {
    struct pollfd p = {fd, POLLOUT, 0};
    const int ready = poll(&p, 1, static_cast<int>(timeoutMs > 600000 ? 600000 : timeoutMs));
    if (ready <= 0) {
      errno = ready == 0 ? ETIMEDOUT : errno;
      return false;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return false;
    errno = err;
    return err == 0;
  }

  int fd_;
  uint64_t start_;
  bool relay_;
  const char* stateFile_;
  std::mt19937 rng_;
  char error_[96];
};

void usage(FILE* out) {
  fprintf(out,
          "usage: sockpit-device-host --id ID --token TOKEN [--host HOST] [--port PORT]\n"
          "                           [--interval-ms N] [--boot N] [--connect-timeout-ms N]\n"
          "                           [--power-on off|on|last] [--state-file PATH]\n"
          "                           [--reboot-timeout-ms N] [--unauthorized-pause-ms N]\n"
          "                           [--on-reject exit|wait]\n"
          "Runs the ESP32 firmware's core on this machine: connects to a sockpit server's\n"
          "device port, sends readings, obeys commands with a simulated relay.\n"
          "  --host                   server address (default 127.0.0.1)\n"
          "  --port                   device port (default 7000)\n"
          "  --interval-ms            time between readings (default 5000)\n"
          "  --boot                   boot number for reading ids (default: current unix time)\n"
          "  --connect-timeout-ms     bound on one TCP connect (default 5000)\n"
          "  --power-on               relay state at start, as POWER_ON_STATE (default off)\n"
          "  --state-file             where 'last' keeps the relay state (default: nowhere)\n"
          "  --reboot-timeout-ms      no server for this long: exit with status 3, where the\n"
          "                           board restarts (default 0: never)\n"
          "  --unauthorized-pause-ms  rest after 'unauthorized', before jitter (default 900000)\n"
          "  --on-reject              'exit' (default): status 2 when the server refuses the\n"
          "                           id/token; 'wait': rest and try again, as the board does\n");
}

bool parseUint(const char* s, unsigned long max, unsigned long* out) {
  char* end = 0;
  errno = 0;
  const unsigned long v = strtoul(s, &end, 10);
  if (errno || !*s || *end || v > max || s[0] == '-') return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  sockpit::DeviceConfig cfg;
  cfg.firmware = "sockpit-device-host/0.2.0";
  cfg.credentialsHint = "--id and --token";
  // The ESP32 keeps a boot counter in flash; the PC build uses the start
  // time, which differs on every run just the same.
  unsigned long boot = static_cast<unsigned long>(time(0));
  const char* stateFile = 0;
  bool exitOnReject = true;

  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "sockpit-device-host: %s needs a value\n", a);
      usage(stderr);
      return 64;
    }
    const char* v = argv[++i];
    unsigned long n = 0;
    if (!strcmp(a, "--host")) {
      cfg.host = v;
    } else if (!strcmp(a, "--id")) {
      cfg.deviceId = v;
    } else if (!strcmp(a, "--token")) {
      cfg.token = v;
    } else if (!strcmp(a, "--port") && parseUint(v, 65535, &n) && n > 0) {
      cfg.port = static_cast<uint16_t>(n);
    } else if (!strcmp(a, "--interval-ms") && parseUint(v, sockpit::Device::kMaxIntervalMs, &n) &&
               n >= sockpit::Device::kMinIntervalMs) {
      cfg.intervalMs = static_cast<uint32_t>(n);
    } else if (!strcmp(a, "--boot") && parseUint(v, 0xffffffffUL, &n)) {
      boot = n;
    } else if (!strcmp(a, "--connect-timeout-ms") && parseUint(v, 600000, &n) && n > 0) {
      cfg.connectTimeoutMs = static_cast<uint32_t>(n);
    } else if (!strcmp(a, "--reboot-timeout-ms") && parseUint(v, 0x7fffffffUL, &n)) {
      cfg.rebootTimeoutMs = static_cast<uint32_t>(n);
    } else if (!strcmp(a, "--unauthorized-pause-ms") && parseUint(v, 0x7fffffffUL, &n)) {
      cfg.unauthorizedPauseMs = static_cast<uint32_t>(n);
    } else if (!strcmp(a, "--power-on") && !strcmp(v, "off")) {
      cfg.powerOn = sockpit::PowerOn::Off;
    } else if (!strcmp(a, "--power-on") && !strcmp(v, "on")) {
      cfg.powerOn = sockpit::PowerOn::On;
    } else if (!strcmp(a, "--power-on") && !strcmp(v, "last")) {
      cfg.powerOn = sockpit::PowerOn::Last;
    } else if (!strcmp(a, "--state-file") && *v) {
      stateFile = v;
    } else if (!strcmp(a, "--on-reject") && (!strcmp(v, "exit") || !strcmp(v, "wait"))) {
      exitOnReject = !strcmp(v, "exit");
    } else {
      fprintf(stderr, "sockpit-device-host: bad option or value: %s %s\n", a, v);
      usage(stderr);
      return 64;
    }
  }
  if (!*cfg.deviceId || !*cfg.token) {
    fprintf(stderr, "sockpit-device-host: --id and --token are required\n");
    usage(stderr);
    return 64;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = onSignal;
  sigaction(SIGINT, &sa, 0);
  sigaction(SIGTERM, &sa, 0);

  // About 31 KB of fixed buffers: static, as on the ESP32.
  static PosixPlatform platform;
  platform.setStateFile(stateFile);
  static sockpit::Device device(platform, cfg);
  device.begin(static_cast<uint32_t>(boot));

  while (!g_stop) {
    device.poll();
    if (exitOnReject && device.state() == sockpit::Device::State::Rejected) {
      platform.logLine("(The PC build exits here rather than wait: status 2.)");
      return kExitRejected;
    }
    // Sleep until the server says something, or 20 ms for the timers.
    if (platform.fd() >= 0) {
      struct pollfd p = {platform.fd(), POLLIN, 0};
      poll(&p, 1, 20);
    } else {
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep(&ts, 0);
    }
  }
  platform.logLine("Stopping (signal).");
  return 0;
}
