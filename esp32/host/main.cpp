// sockpit-device-host: the firmware's portable core on Linux, over POSIX
// sockets, with a simulated relay. It prints what the ESP32 prints on Serial.
//
//   sockpit-device-host --host 127.0.0.1 --port 7000 --id ID --token TOKEN [--interval-ms N]
//
// Run it with a small stack (`ulimit -s 32`) to get closer to the ESP32's
// 8 KiB loop task: the tests in tests/esp32/ do.
//
// With --ca FILE it speaks TLS through mbedtls (as WiFiClientSecure does on
// the board): the server's certificate must chain to that CA and name the
// --host; there is no fallback to plain TCP.

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
#include "mbedtls/ctr_drbg.h"
#include "mbedtls/entropy.h"
#include "mbedtls/error.h"
#include "mbedtls/net_sockets.h"
#include "mbedtls/sha256.h"
#include "mbedtls/ssl.h"
#include "mbedtls/x509_crt.h"

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

// The TLS handshake's bound, as setHandshakeTimeout() on the board.
const int kHandshakeMs = 10000;

// mbedtls reads and writes the socket through these (a non-blocking fd).
int bioSend(void* ctx, const unsigned char* buf, size_t len) {
  const ssize_t n = send(*static_cast<int*>(ctx), buf, len, MSG_NOSIGNAL);
  if (n >= 0) return static_cast<int>(n);
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_WRITE;
  return MBEDTLS_ERR_NET_SEND_FAILED;
}

int bioRecv(void* ctx, unsigned char* buf, size_t len) {
  const ssize_t n = recv(*static_cast<int*>(ctx), buf, len, 0);
  if (n >= 0) return static_cast<int>(n);  // 0: the peer closed
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_READ;
  return MBEDTLS_ERR_NET_RECV_FAILED;
}

class PosixPlatform : public sockpit::Platform {
 public:
  PosixPlatform()
      : fd_(-1), start_(monotonicMs()), relay_(false), stateFile_(0), rng_(std::random_device()()),
        tls_(false), sslOpen_(false) {
    error_[0] = '\0';
    mbedtls_x509_crt_init(&ca_);
    mbedtls_ssl_config_init(&conf_);
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&drbg_);
    mbedtls_ssl_init(&ssl_);
  }
  ~PosixPlatform() {
    tcpClose();
    mbedtls_ssl_free(&ssl_);
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
    mbedtls_ssl_config_free(&conf_);
    mbedtls_x509_crt_free(&ca_);
  }

  int fd() const { return fd_; }
  void setStateFile(const char* path) { stateFile_ = path; }
  // Bytes TLS has decrypted already: the socket may be quiet while they wait.
  bool pending() { return sslOpen_ && mbedtls_ssl_get_bytes_avail(&ssl_) > 0; }

  // Reads the CA (PEM) and sets up TLS: certificate required, name checked.
  // Returns "" or what went wrong; the SHA-256 of the CA goes to fingerprint.
  const char* useCa(const char* path, char* fingerprint, size_t cap) {
    static char why[160];
    FILE* f = fopen(path, "rb");
    if (!f) {
      snprintf(why, sizeof why, "cannot read %s: %s", path, strerror(errno));
      return why;
    }
    static char pem[64 * 1024];
    const size_t n = fread(pem, 1, sizeof pem - 1, f);
    fclose(f);
    pem[n] = '\0';
    int ret = mbedtls_x509_crt_parse(&ca_, reinterpret_cast<const unsigned char*>(pem), n + 1);
    if (ret != 0) {
      char text[100];
      mbedtls_strerror(ret, text, sizeof text);
      snprintf(why, sizeof why, "%s holds no usable CA certificate (%s)", path, text);
      return why;
    }
    unsigned char sum[32];
    mbedtls_sha256_ret(ca_.raw.p, ca_.raw.len, sum, 0);
    size_t o = 0;
    for (int i = 0; i < 32 && o + 3 < cap; ++i) o += snprintf(fingerprint + o, cap - o, i ? ":%02X" : "%02X", sum[i]);
    const char* pers = "sockpit-device-host";
    if ((ret = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_,
                                     reinterpret_cast<const unsigned char*>(pers), strlen(pers))) != 0 ||
        (ret = mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                           MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
      char text[100];
      mbedtls_strerror(ret, text, sizeof text);
      snprintf(why, sizeof why, "TLS set-up failed (%s)", text);
      return why;
    }
    mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&conf_, &ca_, 0);
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &drbg_);
    mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);  // TLS 1.2
    tls_ = true;
    return "";
  }

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
    if (fd_ >= 0) return tls_ ? startTls(host) : sockpit::ConnectResult::Ok;
    snprintf(error_, sizeof error_, "%s", strerror(firstErr));
    if (firstErr == ECONNREFUSED) return sockpit::ConnectResult::Refused;
    if (firstErr == ETIMEDOUT) return sockpit::ConnectResult::TimedOut;
    return sockpit::ConnectResult::Failed;
  }

  int tcpRead(char* buf, size_t cap) {
    if (fd_ < 0) return -1;
    if (sslOpen_) {
      const int n = mbedtls_ssl_read(&ssl_, reinterpret_cast<unsigned char*>(buf), cap);
      if (n > 0) return n;
      if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE) return 0;
      if (n == 0 || n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        error_[0] = '\0';
      } else {
        tlsError(n);
      }
      return -1;
    }
    const ssize_t n = recv(fd_, buf, cap, 0);
    if (n > 0) return static_cast<int>(n);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    snprintf(error_, sizeof error_, "%s", n == 0 ? "" : strerror(errno));
    return -1;
  }

  bool tcpWrite(const char* data, size_t len) {
    while (sslOpen_ && len > 0) {
      const int n = mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(data), len);
      if (n > 0) {
        data += n;
        len -= static_cast<size_t>(n);
        continue;
      }
      if (n == MBEDTLS_ERR_SSL_WANT_WRITE || n == MBEDTLS_ERR_SSL_WANT_READ) {
        struct pollfd p = {fd_, static_cast<short>(n == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT), 0};
        if (poll(&p, 1, 5000) > 0) continue;
        snprintf(error_, sizeof error_, "send timed out");
        return false;
      }
      tlsError(n);
      return false;
    }
    if (tls_) return sslOpen_ && len == 0;  // never plain bytes once TLS is asked for
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
    if (sslOpen_) {
      mbedtls_ssl_close_notify(&ssl_);  // best effort; the socket is non-blocking
      mbedtls_ssl_free(&ssl_);
      mbedtls_ssl_init(&ssl_);
      sslOpen_ = false;
    }
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
  // The TLS handshake on the connected socket, within kHandshakeMs. Nothing
  // of ours is sent before it succeeds: the hello comes after.
  sockpit::ConnectResult startTls(const char* host) {
    int ret = mbedtls_ssl_setup(&ssl_, &conf_);
    if (ret == 0) ret = mbedtls_ssl_set_hostname(&ssl_, host);
    if (ret != 0) {
      tlsError(ret);
      mbedtls_ssl_free(&ssl_);
      mbedtls_ssl_init(&ssl_);
      close(fd_);
      fd_ = -1;
      return sockpit::ConnectResult::TlsFailed;
    }
    mbedtls_ssl_set_bio(&ssl_, &fd_, bioSend, bioRecv, 0);
    sslOpen_ = true;
    const uint64_t end = monotonicMs() + kHandshakeMs;
    while ((ret = mbedtls_ssl_handshake(&ssl_)) != 0) {
      const uint64_t now = monotonicMs();
      if ((ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) && now < end) {
        struct pollfd p = {fd_, static_cast<short>(ret == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT), 0};
        poll(&p, 1, static_cast<int>(end - now));
        continue;
      }
      if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
        snprintf(error_, sizeof error_, "no TLS answer within %d s; is this a TLS port?", kHandshakeMs / 1000);
      } else {
        tlsError(ret);
      }
      mbedtls_ssl_free(&ssl_);
      mbedtls_ssl_init(&ssl_);
      sslOpen_ = false;
      close(fd_);
      fd_ = -1;
      return sockpit::ConnectResult::TlsFailed;
    }
    return sockpit::ConnectResult::Ok;
  }

  // What mbedtls says went wrong; for a refused certificate, why it was
  // refused, in the words the board's log uses.
  void tlsError(int ret) {
    const uint32_t flags = sslOpen_ ? mbedtls_ssl_get_verify_result(&ssl_) : 0;
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != static_cast<uint32_t>(-1)) {
      const char* why = "the server's certificate was refused";
      if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
        why = "the server's certificate is not from this CA";
      } else if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) {
        why = "the server's certificate does not name this host";
      } else if (flags & MBEDTLS_X509_BADCERT_EXPIRED) {
        why = "the server's certificate has expired";
      } else if (flags & MBEDTLS_X509_BADCERT_FUTURE) {
        why = "the server's certificate is not valid yet (is the clock right?)";
      }
      snprintf(error_, sizeof error_, "%s", why);
      return;
    }
    char text[120];
    mbedtls_strerror(ret, text, sizeof text);
    snprintf(error_, sizeof error_, "%s", text);
  }

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
  char error_[160];
  bool tls_;
  bool sslOpen_;
  mbedtls_x509_crt ca_;
  mbedtls_ssl_config conf_;
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  mbedtls_ssl_context ssl_;
};

void usage(FILE* out) {
  fprintf(out,
          "usage: sockpit-device-host --id ID --token TOKEN [--host HOST] [--port PORT]\n"
          "                           [--interval-ms N] [--boot N] [--connect-timeout-ms N]\n"
          "                           [--power-on off|on|last] [--state-file PATH]\n"
          "                           [--reboot-timeout-ms N] [--unauthorized-pause-ms N]\n"
          "                           [--on-reject exit|wait] [--ca FILE]\n"
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
          "                           id/token; 'wait': rest and try again, as the board does\n"
          "  --ca                     TLS: the CA certificate (PEM) the server's certificate must\n"
          "                           chain to; the certificate must also name --host. No\n"
          "                           plain TCP then, ever (the server's DEVICE_TLS_PORT)\n");
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
  const char* caFile = 0;
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
    } else if (!strcmp(a, "--ca") && *v) {
      caFile = v;
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
  char fingerprint[100] = "";
  if (caFile) {
    const char* why = platform.useCa(caFile, fingerprint, sizeof fingerprint);
    if (*why) {
      fprintf(stderr, "sockpit-device-host: --ca: %s\n", why);
      return 64;
    }
    cfg.tls = true;
  }
  static sockpit::Device device(platform, cfg);
  device.begin(static_cast<uint32_t>(boot));
  if (caFile) {
    char line[200];
    snprintf(line, sizeof line, "TLS only: the server must show a certificate for \"%s\" from the CA with SHA-256 %s.",
             cfg.host, fingerprint);
    platform.logLine(line);
  }

  while (!g_stop) {
    device.poll();
    if (exitOnReject && device.state() == sockpit::Device::State::Rejected) {
      platform.logLine("(The PC build exits here rather than wait: status 2.)");
      return kExitRejected;
    }
    // Sleep until the server says something, or 20 ms for the timers.
    if (platform.pending()) continue;
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
