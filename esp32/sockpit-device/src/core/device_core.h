// The device's behaviour, independent of the board: connect with backoff,
// hello/welcome, telemetry with resend, keep-alive pings, commands, the
// relay's power-on state, and a restart as the last resort.
// Call begin() once and poll() often; poll() never blocks except inside
// Platform::tcpConnect() and Platform::tcpWrite(), which the board bounds.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "sockpit_config.h"
#include "b64.h"
#include "backoff.h"
#include "line_splitter.h"
#include "messages.h"
#include "platform.h"
#include "resend_buffer.h"
#include "timer.h"

namespace sockpit {

// The relay's state when the board starts, as Tasmota's PowerOnState.
enum class PowerOn {
  Off,   // always off
  On,    // always on
  Last,  // as it was before the restart (kept through Platform::saveRelay)
};

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
  // Rest after the server said "unauthorized": at least this long, and up to
  // half as long again at random, so that a fleet refused at the same moment
  // (say, after a token mix-up) does not come back in step.
  uint32_t unauthorizedPauseMs;
  uint32_t backoffBaseMs;
  uint32_t backoffCapMs;
  uint32_t stableAfterMs;        // online this long: the backoff starts over
  uint32_t connectTimeoutMs;     // bound on one TCP connect
  // The platform speaks TLS (a CA is configured; it never falls back to
  // plain TCP). For the log only: TLS itself is the platform's business.
  bool tls;
  // No connection to the server for this long: restart the board (0: never),
  // as ESPHome's reboot_timeout. The clock stands still while the device
  // rests after "unauthorized", since a restart cannot fix a token.
  uint32_t rebootTimeoutMs;
  PowerOn powerOn;

  DeviceConfig();
};

class Device;

// The sizes device_core.cpp was compiled with. The sketch compares them with
// its own view (layoutMatches) and refuses to run on a mismatch, which would
// mean two translation units disagree on the layout of Device.
struct CoreLayout {
  size_t maxLine;
  size_t resendSlots;
  size_t deviceSize;
};
CoreLayout coreLayout();

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
  // must differ on every start (a counter kept in flash, say). Sets the relay
  // to its power-on state first of all.
  void begin(uint32_t bootId);
  void poll();

  State state() const { return state_; }
  bool relay() const { return relay_; }
  uint32_t intervalMs() const { return intervalMs_; }
  size_t unconfirmed() const { return resend_.size(); }
  uint32_t readingsTaken() const { return seq_; }
  // Milliseconds until the next connection attempt (Offline) or the end of
  // the pause (Rejected); 0 otherwise.
  uint32_t waitLeftMs() const;

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
  void handleLine(char* line, size_t len);
  void handleError(const ServerMessage& m);
  void handleCommand(const ServerMessage& m);
  bool applySettings(const cJSON* params, cJSON* result);
  void setRelayState(bool on);
  void reject(const char* detail);
  void drop(const char* reason);
  void retryLater(const char* fmt, ...)
#if defined(__GNUC__)
      __attribute__((format(printf, 2, 3)))
#endif
      ;
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
  Timer attempt_;    // Offline: the next connection attempt
  Timer pause_;      // Rejected: the end of the rest
  Timer reading_;    // the next reading
  Timer reboot_;     // restart when no server contact for rebootTimeoutMs
  uint32_t connectedAt_;
  uint32_t onlineSince_;
  bool stable_;      // online for stableAfterMs on this connection
  uint32_t lastRxAt_;
  uint32_t lastTxAt_;

  ResendBuffer resend_;
  DoneCommand done_[kDoneCommands];  // recent commands, so a repeat is not run twice
  size_t doneNext_;

  // All buffers are fixed: about 31 KB in total with the default sizes, so
  // keep the Device object global (static), never on the stack. A base64
  // line is decoded in place, in rxLine_.
  char rxLine_[kMaxLine + 2];
  char rxChunk_[512];
  char txJson_[kTxJsonMax];
  char txLine_[4 * ((kTxJsonMax + 2) / 3) + 2];
  LineSplitter splitter_;
};

// True when this translation unit sees Device as device_core.cpp does.
inline bool layoutMatches() {
  const CoreLayout c = coreLayout();
  return c.maxLine == SOCKPIT_MAX_LINE && c.resendSlots == SOCKPIT_RESEND_SLOTS &&
         c.deviceSize == sizeof(Device);
}

}  // namespace sockpit
