// What the portable core needs from the board (or from Linux, in the host
// build). The Arduino sketch and esp32/host/main.cpp each implement this.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "messages.h"

namespace sockpit {

// How an attempt to reach the server ended; the log tells them apart, since
// each points a person at a different fix.
enum class ConnectResult {
  Ok,
  DnsFailed,  // the host name could not be looked up
  Refused,    // the address answered, but nothing accepts on that port
  TimedOut,   // no answer at all within the connect timeout
  TlsFailed,  // TCP worked, the TLS handshake or the certificate check did not
  Failed,     // anything else (tcpError() says what)
};

class Platform {
 public:
  virtual ~Platform() {}

  // Milliseconds since boot; may wrap (the core only uses differences).
  virtual uint32_t nowMs() = 0;
  virtual uint32_t random32() = 0;
  // One finished log line, without a newline.
  virtual void logLine(const char* text) = 0;

  // Is the network up (Wi-Fi associated with an IP)? The core only tries the
  // server while it is, and drops the connection when it goes away.
  virtual bool linkUp() = 0;

  // Opens the connection (name lookup, TCP, and TLS when configured). It may
  // block, but never for long: timeoutMs bounds the TCP connect, and the
  // board bounds the rest (see esp32/README.md, "Bounded waits").
  virtual ConnectResult tcpConnect(const char* host, uint16_t port, uint32_t timeoutMs) = 0;
  // Non-blocking read: > 0 bytes read, 0 nothing right now, -1 connection closed.
  virtual int tcpRead(char* buf, size_t cap) = 0;
  // Writes everything or returns false (within a bounded time).
  virtual bool tcpWrite(const char* data, size_t len) = 0;
  virtual void tcpClose() = 0;
  // Why the last connect/read/write failed, in a few words, or "" if unknown.
  virtual const char* tcpError() { return ""; }

  virtual void setRelay(bool on) = 0;
  // The relay state kept for the next power-on (POWER_ON_STATE "last"):
  // load returns false when nothing was kept yet.
  virtual bool loadRelay(bool* on) {
    (void)on;
    return false;
  }
  virtual void saveRelay(bool on) { (void)on; }

  // Fills in every reading except the relay, which the core tracks itself.
  virtual void readSensors(Readings& r) = 0;

  // Restarts the board: the last resort after a long time without the
  // server (DeviceConfig::rebootTimeoutMs). Need not return.
  virtual void restart() {}
};

}  // namespace sockpit
