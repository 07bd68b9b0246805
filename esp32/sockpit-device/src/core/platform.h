// What the portable core needs from the board (or from Linux, in the host
// build). The Arduino sketch and esp32/host/main.cpp each implement this.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "messages.h"

namespace sockpit {

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

  // Opens the TCP connection (may block for a few seconds).
  virtual bool tcpConnect(const char* host, uint16_t port) = 0;
  // Non-blocking read: > 0 bytes read, 0 nothing right now, -1 connection closed.
  virtual int tcpRead(char* buf, size_t cap) = 0;
  // Writes everything or returns false.
  virtual bool tcpWrite(const char* data, size_t len) = 0;
  virtual void tcpClose() = 0;
  // Why the last connect/read/write failed, in a few words, or "" if unknown.
  virtual const char* tcpError() { return ""; }

  virtual void setRelay(bool on) = 0;
  // Fills in every reading except the relay, which the core tracks itself.
  virtual void readSensors(Readings& r) = 0;
};

}  // namespace sockpit
