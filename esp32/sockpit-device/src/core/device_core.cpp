#include "device_core.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace sockpit {

namespace {

// "2.5 s" below two minutes, "16.4 min" above: one decimal, no floating point.
struct Dur {
  char text[24];
  explicit Dur(uint32_t ms) {
    if (ms < 120000) {
      snprintf(text, sizeof text, "%lu.%lu s", static_cast<unsigned long>(ms / 1000),
               static_cast<unsigned long>((ms % 1000) / 100));
    } else {
      snprintf(text, sizeof text, "%lu.%lu min", static_cast<unsigned long>(ms / 60000),
               static_cast<unsigned long>((ms % 60000) / 6000));
    }
  }
};

// A whole number from a JSON number or a numeric string ("5000"): web forms
// tend to send strings. The server passes on any finite double, and strtod
// also reads "1e400" (infinity) and "nan"; a double outside the range of an
// integer type must not be cast to it (undefined behaviour), so the range is
// checked first, on the double itself.
bool wholeNumber(const cJSON* v, double* out) {
  double d;
  if (cJSON_IsNumber(v)) {
    d = v->valuedouble;
  } else if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
    char* end = 0;
    d = strtod(v->valuestring, &end);
    if (*end != '\0') return false;
  } else {
    return false;
  }
  // 2^53: beyond it doubles are all whole, and no setting is that big.
  // NaN fails both comparisons.
  if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0)) return false;
  if (floor(d) != d) return false;
  *out = d;
  return true;
}

// "42 s", "12 min 5 s", "3 h 20 min", "5 d 2 h": uptime as a person says it.
void formatUptime(uint64_t ms, char* out, size_t cap) {
  const unsigned long s = static_cast<unsigned long>(ms / 1000);
  if (s < 60) {
    snprintf(out, cap, "%lu s", s);
  } else if (s < 3600) {
    snprintf(out, cap, "%lu min %lu s", s / 60, s % 60);
  } else if (s < 86400) {
    snprintf(out, cap, "%lu h %lu min", s / 3600, (s % 3600) / 60);
  } else {
    snprintf(out, cap, "%lu d %lu h", s / 86400, (s % 86400) / 3600);
  }
}

bool onOff(const cJSON* v, bool* out) {
  if (cJSON_IsBool(v)) {
    *out = cJSON_IsTrue(v);
    return true;
  }
  if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1)) {
    *out = v->valuedouble == 1;
    return true;
  }
  if (!cJSON_IsString(v)) return false;
  const char* s = v->valuestring;
  if (!strcmp(s, "true") || !strcmp(s, "on") || !strcmp(s, "1")) {
    *out = true;
    return true;
  }
  if (!strcmp(s, "false") || !strcmp(s, "off") || !strcmp(s, "0")) {
    *out = false;
    return true;
  }
  return false;
}

const char* errorHint(const char* code) {
  if (!strcmp(code, "rate_limited")) return "we are sending too fast; a longer report interval helps";
  if (!strcmp(code, "bad_base64") || !strcmp(code, "bad_json")) return "it could not read one of our messages";
  if (!strcmp(code, "line_too_long")) return "one of our messages was too long";
  return "";
}

// " (detail)" or "", for log lines.
struct Paren {
  char text[124];
  explicit Paren(const char* detail) {
    if (detail && *detail) {
      snprintf(text, sizeof text, " (%.118s)", detail);
    } else {
      text[0] = '\0';
    }
  }
};

}  // namespace

CoreLayout coreLayout() {
  CoreLayout c;
  c.maxLine = SOCKPIT_MAX_LINE;
  c.resendSlots = SOCKPIT_RESEND_SLOTS;
  c.deviceSize = sizeof(Device);
  return c;
}

DeviceConfig::DeviceConfig()
    : deviceId(""),
      token(""),
      host("127.0.0.1"),
      port(7000),
      firmware("sockpit-esp32"),
      credentialsHint("the device id and token"),
      intervalMs(5000),
      welcomeTimeoutMs(10000),
      idlePingMs(30000),
      silenceTimeoutMs(90000),  // pings every 30 s, so 3 missed pongs
      unauthorizedPauseMs(15UL * 60UL * 1000UL),
      backoffBaseMs(1000),
      backoffCapMs(30000),
      stableAfterMs(10000),
      connectTimeoutMs(5000),
      tls(false),
      rebootTimeoutMs(0),
      powerOn(PowerOn::Off) {}

Device::Device(Platform& platform, const DeviceConfig& config)
    : p_(platform),
      cfg_(config),
      state_(State::Offline),
      boot_(0),
      seq_(0),
      relay_(false),
      intervalMs_(config.intervalMs),
      backoff_(config.backoffBaseMs, config.backoffCapMs),
      connectedAt_(0),
      onlineSince_(0),
      stable_(false),
      lastRxAt_(0),
      lastTxAt_(0),
      doneNext_(0),
      splitter_(rxLine_, kMaxLine) {
  memset(done_, 0, sizeof done_);
}

void Device::begin(uint32_t bootId) {
  // The relay first: it should not sit in the wrong state while we log.
  bool saved = false;
  const bool haveSaved = cfg_.powerOn == PowerOn::Last && p_.loadRelay(&saved);
  relay_ = cfg_.powerOn == PowerOn::On || (haveSaved && saved);
  p_.setRelay(relay_);

  boot_ = bootId;
  seq_ = 0;
  if (intervalMs_ < kMinIntervalMs) intervalMs_ = kMinIntervalMs;
  if (intervalMs_ > kMaxIntervalMs) intervalMs_ = kMaxIntervalMs;
  const uint32_t now = p_.nowMs();
  reading_.start(now, intervalMs_);
  attempt_.start(now, 0);
  reboot_.start(now, cfg_.rebootTimeoutMs);
  state_ = State::Offline;

  const char* why = "";
  if (cfg_.powerOn == PowerOn::On) {
    why = " (power-on state: on)";
  } else if (cfg_.powerOn == PowerOn::Last) {
    why = haveSaved ? " (power-on state: as before the restart)" : " (power-on state: last; none kept yet)";
  }
  logf("sockpit device \"%s\" starting (firmware %s, boot #%lu). A reading every %s; relay %s%s.",
       cfg_.deviceId, cfg_.firmware, static_cast<unsigned long>(boot_), Dur(intervalMs_).text,
       relay_ ? "on" : "off", why);
}

uint32_t Device::waitLeftMs() const {
  const uint32_t now = p_.nowMs();
  if (state_ == State::Offline) return attempt_.remaining(now);
  if (state_ == State::Rejected) return pause_.remaining(now);
  return 0;
}

void Device::poll() {
  const uint32_t now = p_.nowMs();

  // Readings are taken whether or not we are online: the buffer keeps them.
  if (reading_.due(now)) {
    reading_.start(now, intervalMs_);
    takeReading();
  }

  // The last resort: a Wi-Fi stack or router that is wedged in a way no
  // reconnect fixes. Online, or resting after "unauthorized", counts as
  // contact (a restart would not fix a token).
  if (state_ == State::Online || state_ == State::Rejected) reboot_.start(now, cfg_.rebootTimeoutMs);
  if (cfg_.rebootTimeoutMs > 0 && reboot_.due(now)) {
    logf("No connection to the server for %s: restarting the board as a last resort. "
         "%lu unconfirmed reading(s) are lost.",
         Dur(cfg_.rebootTimeoutMs).text, static_cast<unsigned long>(resend_.size()));
    if (connected()) p_.tcpClose();
    reboot_.start(now, cfg_.rebootTimeoutMs);  // for a platform whose restart returns
    p_.restart();
    return;
  }

  switch (state_) {
    case State::Offline: {
      // due() runs on every poll, network or not, so the timer stays right
      // through an outage of any length (see timer.h).
      const bool due = attempt_.due(now);
      if (due && p_.linkUp()) connect();
      break;
    }
    case State::AwaitWelcome:
    case State::Online:
      if (!p_.linkUp()) {
        drop("The network is down, so the server connection is lost");
        break;
      }
      receive();
      if (state_ == State::AwaitWelcome &&
          elapsedMs(p_.nowMs(), connectedAt_) >= cfg_.welcomeTimeoutMs) {
        drop("The server did not answer our hello");
      } else if (state_ == State::Online) {
        if (!stable_ && elapsedMs(p_.nowMs(), onlineSince_) >= cfg_.stableAfterMs) {
          // Only a connection that lasted starts the backoff over; otherwise a
          // server that welcomes and then drops us would be hammered.
          stable_ = true;
          backoff_.reset();
        }
        keepAlive();
        flushResends();
      }
      break;
    case State::Rejected:
      if (pause_.due(now)) {
        logf("The pause is over; trying the server again with the same id and token.");
        backoff_.reset();
        state_ = State::Offline;
        attempt_.start(now, 0);
      }
      break;
  }
}

void Device::retryLater(const char* fmt, ...) {
  const uint32_t delay = backoff_.next(p_.random32());
  attempt_.start(p_.nowMs(), delay);
  char what[280];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  logf("%s Next try in %s.", what, Dur(delay).text);
}

void Device::connect() {
  const char* host = cfg_.host;
  const unsigned port = cfg_.port;
  logf("Connecting to the sockpit server at %s:%u%s ...", host, port, cfg_.tls ? " (TLS)" : "");
  const ConnectResult r = p_.tcpConnect(host, cfg_.port, cfg_.connectTimeoutMs);
  if (r != ConnectResult::Ok) {
    const Paren why(p_.tcpError());
    switch (r) {
      case ConnectResult::DnsFailed:
        retryLater("Could not look up the server's name \"%s\"%s: is the name right, and does this network "
                   "have a DNS server?", host, why.text);
        break;
      case ConnectResult::Refused:
        retryLater("The server's machine at %s:%u refused the connection: nothing listens on that port. "
                   "Is sockpit running there, and is this its device port?", host, port);
        break;
      case ConnectResult::TimedOut:
        retryLater("No answer from %s:%u within %s: wrong address, machine switched off, or a firewall "
                   "dropping the port?", host, port, Dur(cfg_.connectTimeoutMs).text);
        break;
      case ConnectResult::TlsFailed:
        retryLater("Reached %s:%u, but TLS failed%s: is the CA the server's, and is \"%s\" a name in its "
                   "certificate?", host, port, why.text, host);
        break;
      default:
        retryLater("Could not connect to %s:%u%s.", host, port, why.text);
        break;
    }
    return;
  }
  const uint32_t now = p_.nowMs();
  splitter_.reset();
  state_ = State::AwaitWelcome;
  stable_ = false;
  connectedAt_ = lastRxAt_ = lastTxAt_ = now;
  reboot_.start(now, cfg_.rebootTimeoutMs);
  logf("Connected%s. Saying hello as \"%s\" and waiting for the server's welcome ...",
       cfg_.tls ? " over TLS, the server's certificate checked" : "", cfg_.deviceId);
  if (!buildHello(txJson_, sizeof txJson_, cfg_.deviceId, cfg_.token, cfg_.firmware)) {
    drop("The device id or token is too long to send");
    return;
  }
  sendJson(txJson_);
}

void Device::receive() {
  // A few chunks per poll, so a chatty server cannot starve the loop.
  for (int round = 0; round < 8 && connected(); ++round) {
    const int n = p_.tcpRead(rxChunk_, sizeof rxChunk_);
    if (n < 0) {
      char reason[160];
      snprintf(reason, sizeof reason, "The server closed the connection%s", Paren(p_.tcpError()).text);
      drop(reason);
      return;
    }
    if (n == 0) return;
    const char* data = rxChunk_;
    size_t len = static_cast<size_t>(n);
    while (len > 0 && connected()) {
      const LineSplitter::Event ev = splitter_.feed(&data, &len);
      if (ev == LineSplitter::Line) {
        handleLine(splitter_.line(), splitter_.lineLength());
      } else if (ev == LineSplitter::TooLong) {
        logf("The server sent a line longer than %lu bytes; skipping it.",
             static_cast<unsigned long>(kMaxLine));
      }
    }
  }
}

void Device::handleLine(char* line, size_t len) {
  lastRxAt_ = p_.nowMs();
  reboot_.start(lastRxAt_, cfg_.rebootTimeoutMs);

  // We always send base64, so the server answers in base64; a line starting
  // with '{' is plain JSON, as the server itself allows for debugging.
  size_t jsonLen = len;
  if (line[0] != '{' && !b64DecodeInPlace(line, len, &jsonLen)) {
    logf("Ignoring a line from the server that is not valid base64.");
    return;
  }

  ServerMessage m;
  if (!m.parse(line, jsonLen)) {
    logf("Ignoring a message from the server: %s.", m.error());
    return;
  }

  switch (m.kind) {
    case ServerMsg::Welcome:
      if (state_ != State::AwaitWelcome) break;
      state_ = State::Online;
      onlineSince_ = p_.nowMs();
      resend_.markAllUnsent();
      if (resend_.empty()) {
        logf("The server welcomed us: online.");
      } else {
        logf("The server welcomed us: online. Sending %lu reading(s) it has not confirmed yet.",
             static_cast<unsigned long>(resend_.size()));
      }
      break;
    case ServerMsg::Command:
      handleCommand(m);
      break;
    case ServerMsg::Stored:
      resend_.remove(m.storedId);  // unknown ids: a repeat confirmation, nothing to do
      break;
    case ServerMsg::Pong:
      break;  // lastRxAt_ already updated
    case ServerMsg::Error:
      handleError(m);
      break;
    case ServerMsg::Other:
      logf("Ignoring a message of type \"%.32s\" that this firmware does not know.", m.type);
      break;
  }
}

void Device::handleError(const ServerMessage& m) {
  // The codes of docs/protocol.md. Only "unauthorized" earns the long rest:
  // the others say "not now", and the normal backoff answers them.
  const char* code = m.code;
  const char* detail = m.detail ? m.detail : "";
  const char* dash = m.detail ? " - " : "";
  char reason[200];
  if (!strcmp(code, "unauthorized")) {
    reject(m.detail);
  } else if (!strcmp(code, "unavailable")) {
    snprintf(reason, sizeof reason,
             "The server could not check our id and token just now (unavailable%s%.80s); "
             "that is not a wrong token",
             dash, detail);
    drop(reason);
  } else if (!strcmp(code, "going_away")) {
    snprintf(reason, sizeof reason,
             "The server is closing this connection (going_away%s%.80s): it is restarting, or a newer "
             "connection with our id replaced this one",
             dash, detail);
    drop(reason);
  } else if (!strcmp(code, "protocol") && state_ == State::AwaitWelcome) {
    // Before the welcome, "protocol" is about our hello (say, it came too
    // late), and the server closes the connection.
    snprintf(reason, sizeof reason, "The server did not take our hello (protocol%s%.80s)", dash, detail);
    drop(reason);
  } else {
    const char* hint = errorHint(code);
    logf("The server reported a problem: %.32s%s%.80s%s%s.", code, dash, detail, *hint ? "; " : "", hint);
  }
}

void Device::handleCommand(const ServerMessage& m) {
  char key[sizeof done_[0].key];
  m.idText(key, sizeof key);

  // The same command id twice (say, redelivered after a reconnect) must not
  // toggle the relay twice: repeat the first answer instead.
  for (size_t i = 0; i < kDoneCommands; ++i) {
    if (done_[i].key[0] != '\0' && !strcmp(done_[i].key, key)) {
      logf("Command %s was already carried out; repeating its answer.", key);
      sendJson(done_[i].ack);
      return;
    }
  }

  cJSON* result = cJSON_CreateObject();
  if (!result) {
    logf("Out of memory while handling command %s.", key);
    return;
  }
  bool ok = false;
  if (!strcmp(m.action, "togglerele")) {
    setRelayState(!relay_);
    cJSON_AddBoolToObject(result, "relay", relay_);
    ok = true;
    logf("Command togglerele: relay switched %s.", relay_ ? "ON" : "OFF");
  } else if (!strcmp(m.action, "changesetting")) {
    ok = applySettings(m.params, result);
  } else {
    char why[96];
    snprintf(why, sizeof why, "unknown action: %.48s", m.action);
    cJSON_AddStringToObject(result, "error", why);
    logf("Command \"%.48s\" refused: this firmware does not know that action.", m.action);
  }

  if (!buildAck(txJson_, sizeof txJson_, m.id, ok, result)) {  // takes result
    logf("Could not build the answer to command %s.", key);
    return;
  }
  const size_t ackLen = strlen(txJson_);
  if (strlen(key) < sizeof key - 1 && ackLen < sizeof done_[0].ack) {
    DoneCommand& d = done_[doneNext_];
    memcpy(d.key, key, strlen(key) + 1);
    memcpy(d.ack, txJson_, ackLen + 1);
    doneNext_ = (doneNext_ + 1) % kDoneCommands;
  }
  sendJson(txJson_);
}

bool Device::applySettings(const cJSON* params, cJSON* result) {
  // Check everything before changing anything: a half-applied command would
  // be acked as failed yet have changed the device.
  char err[112] = "";
  uint32_t interval = intervalMs_;
  bool haveInterval = false;
  bool relay = relay_;
  bool haveRelay = false;

  if (!params || !params->child) snprintf(err, sizeof err, "no settings given");
  for (const cJSON* it = params ? params->child : 0; it && !err[0]; it = it->next) {
    double v = 0;
    if (!strcmp(it->string, "interval_ms")) {
      if (!wholeNumber(it, &v) || v < kMinIntervalMs || v > kMaxIntervalMs) {
        snprintf(err, sizeof err, "interval_ms must be a whole number from %lu to %lu",
                 static_cast<unsigned long>(kMinIntervalMs), static_cast<unsigned long>(kMaxIntervalMs));
      } else {
        interval = static_cast<uint32_t>(v);  // in range: checked just above
        haveInterval = true;
      }
    } else if (!strcmp(it->string, "relay")) {
      if (!onOff(it, &relay)) {
        snprintf(err, sizeof err, "relay must be true or false");
      } else {
        haveRelay = true;
      }
    } else {
      snprintf(err, sizeof err, "unknown setting: %.48s", it->string);
    }
  }

  if (err[0]) {
    cJSON_AddStringToObject(result, "error", err);
    logf("Command changesetting refused: %s.", err);
    return false;
  }
  if (haveInterval) {
    intervalMs_ = interval;
    cJSON_AddNumberToObject(result, "interval_ms", interval);
    logf("Command changesetting: a reading every %s from now on.", Dur(interval).text);
  }
  if (haveRelay) {
    setRelayState(relay);
    cJSON_AddBoolToObject(result, "relay", relay_);
    logf("Command changesetting: relay switched %s.", relay_ ? "ON" : "OFF");
  }
  return true;
}

void Device::setRelayState(bool on) {
  const bool changed = on != relay_;
  relay_ = on;
  p_.setRelay(on);
  // Kept only when it changes: flash cells wear with every write.
  if (changed && cfg_.powerOn == PowerOn::Last) p_.saveRelay(on);
}

void Device::reject(const char* detail) {
  p_.tcpClose();
  state_ = State::Rejected;
  const uint32_t base = cfg_.unauthorizedPauseMs;
  const uint32_t pause = base + p_.random32() % (base / 2 + 1);
  pause_.start(p_.nowMs(), pause);
  logf("The server refused this device: unauthorized%s%s. It knows no device \"%s\" with this token. "
       "Check %s (a new token: npx sockpit device token %s).",
       detail ? " - " : "", detail ? detail : "", cfg_.deviceId, cfg_.credentialsHint, cfg_.deviceId);
  logf("Not trying again for %s, so as not to hammer the server. Readings are kept meanwhile.",
       Dur(pause).text);
}

void Device::drop(const char* reason) {
  p_.tcpClose();
  state_ = State::Offline;
  const uint32_t delay = backoff_.next(p_.random32());
  attempt_.start(p_.nowMs(), delay);
  logf("%s. Reconnecting in %s.", reason, Dur(delay).text);
}

void Device::keepAlive() {
  const uint32_t now = p_.nowMs();
  if (elapsedMs(now, lastRxAt_) >= cfg_.silenceTimeoutMs) {
    char reason[64];
    snprintf(reason, sizeof reason, "No word from the server for %s", Dur(cfg_.silenceTimeoutMs).text);
    drop(reason);
    return;
  }
  if (elapsedMs(now, lastTxAt_) >= cfg_.idlePingMs && buildPing(txJson_, sizeof txJson_)) {
    sendJson(txJson_);
  }
}

void Device::flushResends() {
  // A few per poll: a full buffer goes out within a second without
  // flooding the server (or the Wi-Fi stack) in one burst.
  for (int i = 0; i < 4 && state_ == State::Online; ++i) {
    ResendBuffer::Entry* e = resend_.nextUnsent();
    if (!e || !sendJson(e->json)) return;
    e->sent = true;
  }
}

void Device::takeReading() {
  char id[ResendBuffer::kIdMax];
  ++seq_;
  snprintf(id, sizeof id, "%lu-%lu", static_cast<unsigned long>(boot_), static_cast<unsigned long>(seq_));

  Readings r;
  p_.readSensors(r);
  r.relay = relay_;
  if (!buildTelemetry(txJson_, sizeof txJson_, id, r)) {
    logf("Could not build reading %s (out of memory?).", id);
    return;
  }
  char droppedId[ResendBuffer::kIdMax];
  bool dropped = false;
  if (!resend_.push(id, txJson_, droppedId, &dropped)) {
    logf("Reading %s is too big for the resend buffer; skipped.", id);
    return;
  }
  if (dropped) {
    logf("The buffer of unconfirmed readings is full (%lu); dropped the oldest, %s.",
         static_cast<unsigned long>(ResendBuffer::kSlots), droppedId);
  }

  char text[160];
  char up[32];
  formatUptime(r.uptimeMs, up, sizeof up);
  int n = snprintf(text, sizeof text, "Reading %s: up %s", id, up);
  if (r.hasFreeHeap && n > 0 && static_cast<size_t>(n) < sizeof text)
    n += snprintf(text + n, sizeof text - n, ", free heap %lu bytes", static_cast<unsigned long>(r.freeHeap));
  if (r.hasRssi && n > 0 && static_cast<size_t>(n) < sizeof text)
    n += snprintf(text + n, sizeof text - n, ", Wi-Fi %d dBm", r.rssi);
  if (r.hasTempC && n > 0 && static_cast<size_t>(n) < sizeof text)
    n += snprintf(text + n, sizeof text - n, ", chip %.1f C", static_cast<double>(r.tempC));
  if (n > 0 && static_cast<size_t>(n) < sizeof text)
    snprintf(text + n, sizeof text - n, ", relay %s", relay_ ? "on" : "off");

  if (state_ == State::Online) {
    logf("%s.", text);  // flushResends() sends it, after any older ones
  } else {
    logf("%s. Offline: kept for later (%lu waiting).", text, static_cast<unsigned long>(resend_.size()));
  }
}

bool Device::sendJson(const char* json) {
  size_t len = 0;
  // One byte is kept back for the newline that replaces the NUL.
  if (!b64Encode(json, strlen(json), txLine_, sizeof txLine_ - 1, &len)) {
    logf("A message was too big to send; skipped it.");
    return false;
  }
  txLine_[len++] = '\n';
  if (!p_.tcpWrite(txLine_, len)) {
    char reason[160];
    snprintf(reason, sizeof reason, "Could not send to the server%s", Paren(p_.tcpError()).text);
    drop(reason);
    return false;
  }
  lastTxAt_ = p_.nowMs();
  return true;
}

void Device::logf(const char* fmt, ...) {
  // On the stack, not the heap: a log line must never allocate.
  char line[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  p_.logLine(line);
}

}  // namespace sockpit
