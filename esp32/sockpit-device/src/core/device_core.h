// The device's behaviour, independent of the board: connect with backoff,
// hello/welcome, telemetry with resend, keep-alive pings, commands.
// Call begin() once and poll() often; poll() never blocks except inside
// Platform::tcpConnect().
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "b64.h"
#include "backoff.h"
#include "line_splitter.h"
#include "messages.h"
#include "platform.h"
#include "resend_buffer.h"

#ifndef SOCKPIT_MAX_LINE
#define SOCKPIT_MAX_LINE 16384  // the server's own limit (SPEC section 3)
#endif

namespace sockpit {

struct DeviceConfig {
  const char* deviceId;
  const char* token;
  const char* host;
  uint16_t port;
  const char* firmware;
  // Where a person fixes a rejected id/token, for the log message.
  const char* credentialsHint;
  uint32_t intervalMs;           // time between readings
  uint32_t welcomeTimeoutMs;     // hello sent, no welcome: try again
  uint32_t idlePingMs;           // nothing sent for this long: ping
  uint32_t silenceTimeoutMs;     // nothing heard for this long: reconnect
  uint32_t unauthorizedPauseMs;  // rest after the server refused our token
  uint32_t backoffBaseMs;
  uint32_t backoffCapMs;
  uint32_t stableAfterMs;        // online this long: the backoff starts over

  DeviceConfig();
};

class Device {
 public:
  enum class State {
    Offline,         // no connection; next attempt at a scheduled time
    AwaitWelcome,    // connected, hello sent
    Online,          // welcomed: readings flow, commands are obeyed
    Rejected,        // server said "unauthorized": resting, not retrying
  };

  static const size_t kMaxLine = SOCKPIT_MAX_LINE;
  static const uint32_t kMinIntervalMs = 500;
  static const uint32_t kMaxIntervalMs = 86400000;  // one day

  Device(Platform& platform, const DeviceConfig& config);

  // bootId makes reading ids unique across restarts ("<boot>-<seq>"), so it
  // must differ on every start (a counter kept in flash, say).
  void begin(uint32_t bootId);
  void poll();

  State state() const { return state_; }
  bool relay() const { return relay_; }
  uint32_t intervalMs() const { return intervalMs_; }
  size_t unconfirmed() const { return resend_.size(); }
  uint32_t readingsTaken() const { return seq_; }

 private:
  Device(const Device&);
  Device& operator=(const Device&);

  struct DoneCommand {
    char key[64];
    char ack[256];
  };
  static const size_t kDoneCommands = 8;
  static const size_t kTxJsonMax = 1024;

  void connect();
  void receive();
  void handleLine(const char* line, size_t len);
  void handleCommand(const ServerMessage& m);
  bool applySettings(const cJSON* params, cJSON* result);
  void reject(const char* detail);
  void drop(const char* reason);
  void keepAlive();
  void flushResends();
  void takeReading();
  bool sendJson(const char* json);
  bool connected() const { return state_ == State::AwaitWelcome || state_ == State::Online; }
  void logf(const char* fmt, ...)
#if defined(__GNUC__)
      __attribute__((format(printf, 2, 3)))
#endif
      ;

  Platform& p_;
  DeviceConfig cfg_;
  State state_;
  uint32_t boot_;
  uint32_t seq_;
  bool relay_;
  uint32_t intervalMs_;
  Backoff backoff_;
  uint32_t nextAttemptAt_;
  uint32_t connectedAt_;
  uint32_t onlineSince_;
  uint32_t lastRxAt_;
  uint32_t lastTxAt_;
  uint32_t lastReadingAt_;
  uint32_t pausedUntil_;

  ResendBuffer resend_;
  DoneCommand done_[kDoneCommands];  // recent commands, so a repeat is not run twice
  size_t doneNext_;

  // All buffers are fixed: about 45 KB in total with the default sizes, so
  // keep the Device object global (static), never on the stack.
  char rxLine_[kMaxLine + 2];
  char decoded_[kMaxLine / 4 * 3 + 4];
  char rxChunk_[512];
  char txJson_[kTxJsonMax];
  char txLine_[4 * ((kTxJsonMax + 2) / 3) + 2];
  LineSplitter splitter_;
};

}  // namespace sockpit
