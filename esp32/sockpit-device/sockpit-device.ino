// sockpit-device: ESP32 firmware for the sockpit IoT gateway.
//
// Joins Wi-Fi, keeps one TCP connection to the sockpit server, sends a
// reading every few seconds, and switches a relay when the dashboard says so.
// Everything it prints on Serial (115200 baud) is meant for you to read.
//
// The protocol logic (framing, base64, JSON, reconnects, resending,
// commands, the relay's power-on state) lives in src/core as plain C++,
// tested on a PC against the real server. This file is only the board layer:
// Wi-Fi, the socket, the relay pin, the clock, flash, the watchdog and Serial.
// Settings are in config.h (see config.example.h). Supported cores:
// Arduino-ESP32 2.0.x (ESP-IDF 4.4) and 3.x (ESP-IDF 5.x), see esp32/README.md.

#include <Arduino.h>
#include <Preferences.h>
#include <WiFi.h>
#include <esp_idf_version.h>
#include <esp_system.h>
#include <esp_task_wdt.h>
#include <esp_timer.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
// ESP-IDF 5 (Arduino-ESP32 3.x) declares esp_random() only here; 4.4 also
// in esp_system.h.
#if __has_include(<esp_random.h>)
#include <esp_random.h>
#endif
#if __has_include(<esp_arduino_version.h>)
#include <esp_arduino_version.h>
#endif
#if __has_include(<soc/soc_caps.h>)
#include <soc/soc_caps.h>
#endif

#if __has_include("config.h")
#include "config.h"
#else
#error "config.h is missing: copy config.example.h to config.h (next to this sketch) and fill in your Wi-Fi and device details."
#endif

#if !defined(WIFI_SSID) || !defined(WIFI_PASSWORD) || !defined(SERVER_HOST) || !defined(SERVER_PORT) || \
    !defined(DEVICE_ID) || !defined(DEVICE_TOKEN)
#error "config.h must define WIFI_SSID, WIFI_PASSWORD, SERVER_HOST, SERVER_PORT, DEVICE_ID and DEVICE_TOKEN (see config.example.h)."
#endif

#if !defined(ESP_ARDUINO_VERSION_MAJOR) || ESP_ARDUINO_VERSION_MAJOR < 2
#error "This sketch needs the Arduino-ESP32 core 2.0.x or 3.x (Boards Manager: esp32 by Espressif Systems)."
#endif

// TLS when config.h names the server's CA (SERVER_CA): then the device
// speaks only TLS, and the token never crosses the network in clear text.
#if defined(SERVER_CA)
#include <WiFiClientSecure.h>
#define SOCKPIT_TLS 1
#else
#define SOCKPIT_TLS 0
#endif

#include "src/core/device_core.h"

#define FIRMWARE_VERSION "sockpit-esp32/0.2.0"

// ---- Optional settings and their defaults (config.example.h explains them).

#define POWER_ON_OFF 0
#define POWER_ON_ON 1
#define POWER_ON_LAST 2

#ifndef RELAY_ACTIVE_LOW
#define RELAY_ACTIVE_LOW true
#endif
#ifndef REPORT_INTERVAL_MS
#define REPORT_INTERVAL_MS 5000
#endif
#ifndef POWER_ON_STATE
#define POWER_ON_STATE POWER_ON_OFF
#endif
#ifndef REBOOT_TIMEOUT_MS
#define REBOOT_TIMEOUT_MS (30UL * 60UL * 1000UL)
#endif
#ifndef WATCHDOG_TIMEOUT_S
#define WATCHDOG_TIMEOUT_S 60
#endif
#ifndef CONNECT_TIMEOUT_MS
#define CONNECT_TIMEOUT_MS 5000
#endif
#ifndef TLS_HANDSHAKE_TIMEOUT_S
#define TLS_HANDSHAKE_TIMEOUT_S 10
#endif

// The relay pin: a default per chip, since a pin that is safe on one chip
// belongs to the flash on another (table in esp32/README.md). The macros are
// the ESP-IDF target macros that Arduino-ESP32's sdkconfig.h defines.
#ifndef RELAY_PIN
#if defined(CONFIG_IDF_TARGET_ESP32)
#define RELAY_PIN 26
#elif defined(CONFIG_IDF_TARGET_ESP32S2) || defined(CONFIG_IDF_TARGET_ESP32S3) || defined(CONFIG_IDF_TARGET_ESP32C3)
#define RELAY_PIN 4
#else
#error "No default RELAY_PIN for this chip: add  #define RELAY_PIN <a free output GPIO>  to config.h (see the pin table in esp32/README.md)."
#endif
#endif

#if defined(CONFIG_IDF_TARGET_ESP32)
static_assert(RELAY_PIN >= 0 && RELAY_PIN <= 33, "RELAY_PIN: the ESP32 has output GPIOs 0-33 only (34-39 are inputs). Set another RELAY_PIN in config.h; 26 is the default.");
static_assert(RELAY_PIN < 6 || RELAY_PIN > 11, "RELAY_PIN: GPIO 6-11 belong to the flash chip on the ESP32. Set another RELAY_PIN in config.h; 26 is the default.");
#elif defined(CONFIG_IDF_TARGET_ESP32S2) || defined(CONFIG_IDF_TARGET_ESP32S3)
static_assert(RELAY_PIN >= 0 && RELAY_PIN <= 48, "RELAY_PIN: no such GPIO on the ESP32-S2/S3. Set another RELAY_PIN in config.h; 4 is the default.");
static_assert(RELAY_PIN < 26 || RELAY_PIN > 32, "RELAY_PIN: GPIO 26-32 belong to the flash and PSRAM on the ESP32-S2/S3. Set another RELAY_PIN in config.h; 4 is the default.");
#elif defined(CONFIG_IDF_TARGET_ESP32C3)
static_assert(RELAY_PIN >= 0 && RELAY_PIN <= 21, "RELAY_PIN: the ESP32-C3 has GPIO 0-21 only. Set another RELAY_PIN in config.h; 4 is the default.");
static_assert(RELAY_PIN < 12 || RELAY_PIN > 17, "RELAY_PIN: GPIO 12-17 belong to the flash on the ESP32-C3. Set another RELAY_PIN in config.h; 4 is the default.");
#endif

static_assert(POWER_ON_STATE == POWER_ON_OFF || POWER_ON_STATE == POWER_ON_ON || POWER_ON_STATE == POWER_ON_LAST,
              "POWER_ON_STATE must be POWER_ON_OFF, POWER_ON_ON or POWER_ON_LAST");
static_assert(WATCHDOG_TIMEOUT_S == 0 || WATCHDOG_TIMEOUT_S >= 45,
              "WATCHDOG_TIMEOUT_S must be 0 (off) or at least 45: a name lookup may block for 31 s on Arduino-ESP32 2.x");
static_assert(WATCHDOG_TIMEOUT_S == 0 || WATCHDOG_TIMEOUT_S * 1000UL > CONNECT_TIMEOUT_MS + TLS_HANDSHAKE_TIMEOUT_S * 1000UL + 10000UL,
              "WATCHDOG_TIMEOUT_S must leave room for CONNECT_TIMEOUT_MS, the TLS handshake and a send");

// How long one Wi-Fi attempt may take before we call it failed.
static const uint32_t WIFI_ATTEMPT_MS = 15000;

// ---- Serial log: "[   12.345] text", the same format as the host build.
// Formatted into a static buffer and written as is: Serial.printf() would
// take a heap block for every line longer than 64 characters. Only the loop
// task logs (the Wi-Fi event callback just stores a number).

static void logText(const char* text) {
  static char line[360];
  const unsigned long ms = millis();
  int n = snprintf(line, sizeof line - 1, "[%7lu.%03lu] %s", ms / 1000, ms % 1000, text);
  if (n < 0) return;
  if (n > static_cast<int>(sizeof line) - 2) n = sizeof line - 2;
  line[n++] = '\n';
  Serial.write(reinterpret_cast<const uint8_t*>(line), static_cast<size_t>(n));
}

static void say(const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static void say(const char* fmt, ...) {
  char text[240];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  logText(text);
}

// "2.5 s" - one decimal, as the core prints durations.
struct Secs {
  char text[24];
  explicit Secs(uint32_t ms) {
    snprintf(text, sizeof text, "%lu.%lu s", static_cast<unsigned long>(ms / 1000),
             static_cast<unsigned long>((ms % 1000) / 100));
  }
};

// ---- The task watchdog: restarts the board if loop() stops coming round,
// whatever blocked it. Every wait below is bounded (esp32/README.md, "Bounded
// waits"); the longest, a name lookup on Arduino-ESP32 2.x, takes up to 31 s.

static bool watchdogOn = false;

static void startWatchdog() {
#if WATCHDOG_TIMEOUT_S > 0
#if ESP_IDF_VERSION_MAJOR >= 5
  // ESP-IDF 5 takes a struct; Arduino-ESP32 3.x has usually started the
  // watchdog already, so reconfigure it, keeping the idle tasks it watched.
  esp_task_wdt_config_t wdt = {};
  wdt.timeout_ms = WATCHDOG_TIMEOUT_S * 1000UL;
  wdt.idle_core_mask = 0;
#if defined(CONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU0) && CONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU0
  wdt.idle_core_mask |= 1U << 0;
#endif
#if defined(CONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU1) && CONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU1
  wdt.idle_core_mask |= 1U << 1;
#endif
  wdt.trigger_panic = true;
  esp_err_t err = esp_task_wdt_reconfigure(&wdt);
  if (err == ESP_ERR_INVALID_STATE) err = esp_task_wdt_init(&wdt);
#else
  // ESP-IDF 4.4: init() sets the timeout, also when it already runs.
  esp_err_t err = esp_task_wdt_init(WATCHDOG_TIMEOUT_S, true);
#endif
  if (err == ESP_OK) err = esp_task_wdt_add(NULL);  // NULL: this task, the one running loop()
  watchdogOn = err == ESP_OK;
  if (watchdogOn) {
    say("Watchdog on: the board restarts if the loop hangs for %d s.", WATCHDOG_TIMEOUT_S);
  } else {
    say("Could not start the watchdog (error %d); running without it.", static_cast<int>(err));
  }
#endif
}

static void feedWatchdog() {
  if (watchdogOn) esp_task_wdt_reset();
}

static const char* resetReason() {
  switch (esp_reset_reason()) {
    case ESP_RST_POWERON: return "power-on";
    case ESP_RST_EXT: return "the reset pin";
    case ESP_RST_SW: return "a restart by the firmware";
    case ESP_RST_PANIC: return "a crash";
    case ESP_RST_INT_WDT:
    case ESP_RST_TASK_WDT:
    case ESP_RST_WDT: return "the watchdog (the loop hung)";
    case ESP_RST_BROWNOUT: return "a brownout (is the power supply too weak?)";
    case ESP_RST_DEEPSLEEP: return "deep sleep";
    default: return "another cause";
  }
}

// ---- Wi-Fi disconnect reasons. The event task stores the reason; loop()
// reads it. A wrong password mostly shows as a handshake timeout, which the
// Wi-Fi status alone reports as "connection lost".

static volatile uint16_t wifiReason = 0;

static void onWiFiDisconnected(WiFiEvent_t event, WiFiEventInfo_t info) {
  (void)event;
  const uint16_t reason = info.wifi_sta_disconnected.reason;
  // Our own WiFi.disconnect() says ASSOC_LEAVE; that explains nothing.
  if (reason != WIFI_REASON_ASSOC_LEAVE) wifiReason = reason;
}

static const char* wifiReasonText(uint16_t reason) {
  switch (reason) {
    case 0: return "";
    case WIFI_REASON_NO_AP_FOUND: return "network \"" WIFI_SSID "\" not found (name right? 2.4 GHz? in range?)";
    case WIFI_REASON_AUTH_FAIL:
    case WIFI_REASON_4WAY_HANDSHAKE_TIMEOUT:
    case WIFI_REASON_HANDSHAKE_TIMEOUT:
    case WIFI_REASON_MIC_FAILURE:
    case WIFI_REASON_802_1X_AUTH_FAILED: return "the router did not accept our key (wrong WIFI_PASSWORD?)";
    case WIFI_REASON_AUTH_EXPIRE: return "no answer to our login (wrong WIFI_PASSWORD, or a weak signal?)";
    case WIFI_REASON_BEACON_TIMEOUT: return "the router stopped answering (switched off, or out of range?)";
    case WIFI_REASON_AUTH_LEAVE: return "the router sent us away";
    case WIFI_REASON_ASSOC_TOOMANY:
    case WIFI_REASON_ASSOC_FAIL:
    case WIFI_REASON_CONNECTION_FAIL: return "the router refused to let us in (too many devices on it?)";
    default: return "the router or the radio dropped us";
  }
}

// ---- The board, as the portable core sees it.

class EspPlatform : public sockpit::Platform {
 public:
  EspPlatform() { error_[0] = '\0'; }

  void begin() {
#if SOCKPIT_TLS
    client_.setCACert(SERVER_CA);
    client_.setHandshakeTimeout(TLS_HANDSHAKE_TIMEOUT_S);  // seconds, on both cores
#endif
  }

  uint32_t nowMs() override { return millis(); }
  uint32_t random32() override { return esp_random(); }
  void logLine(const char* text) override { logText(text); }

  bool linkUp() override { return WiFi.status() == WL_CONNECTED; }

  sockpit::ConnectResult tcpConnect(const char* host, uint16_t port, uint32_t timeoutMs) override {
    client_.stop();
    error_[0] = '\0';
    // Look the name up ourselves (an address needs no lookup), so that a
    // failed lookup is not reported as an unreachable server.
    IPAddress ip;
    if (!ip.fromString(host)) {
      const uint32_t t0 = millis();
      // 1 is success on both cores; 3.x returns an lwIP error code otherwise.
      const int found = WiFi.hostByName(host, ip);
      const uint32_t took = millis() - t0;
      feedWatchdog();  // the lookup may have taken up to 31 s
      if (found != 1) {
        if (took >= 10000) {
          snprintf(error_, sizeof error_, "no answer from the DNS server in %s", Secs(took).text);
        } else {
          snprintf(error_, sizeof error_, "the DNS server does not know it");
        }
        return sockpit::ConnectResult::DnsFailed;
      }
    }
    const uint32_t t0 = millis();
#if SOCKPIT_TLS
    // By name, not by address: connect(host, port, timeout_ms) goes on to
    // connect(ip, port, host, CA, ...) on both cores, which checks that the
    // certificate chains to SERVER_CA and names SERVER_HOST. Nothing of ours
    // is sent before that handshake succeeds, and there is no plain fallback.
    if (!client_.connect(host, port, static_cast<int32_t>(timeoutMs))) {
      const uint32_t took = millis() - t0;
      char text[100] = "";
      const int err = client_.lastError(text, sizeof text);
      // ssl_client reports a failed TCP connect, and a handshake that ran
      // out of time, as -1; mbedtls' own errors are other negative numbers.
      if (err == -1 || err == 0) {
        if (took > timeoutMs + 1000) {
          snprintf(error_, sizeof error_, "no TLS answer within %d s; is SERVER_PORT the TLS port?",
                   TLS_HANDSHAKE_TIMEOUT_S);
          return sockpit::ConnectResult::TlsFailed;
        }
        return connectFailure(took, timeoutMs);
      }
      if (err == -0x2700) {  // MBEDTLS_ERR_X509_CERT_VERIFY_FAILED
        snprintf(error_, sizeof error_, "the server's certificate was refused: not from this CA, or not for this name");
      } else if (err == -0x7200) {  // MBEDTLS_ERR_SSL_INVALID_RECORD
        snprintf(error_, sizeof error_, "not a TLS server; is SERVER_PORT the TLS port?");
      } else {
        snprintf(error_, sizeof error_, "%s", text);
      }
      return sockpit::ConnectResult::TlsFailed;
    }
#else
    // connect(ip, port, timeout_ms) bounds the TCP handshake on both cores,
    // and sets the same timeout on the socket's sends and receives, so that
    // write() is bounded too (2.x and 3.x both retry a stuck send up to 10
    // times 1 s, then give up).
    if (!client_.connect(ip, port, static_cast<int32_t>(timeoutMs))) {
      return connectFailure(millis() - t0, timeoutMs);
    }
#endif
    client_.setNoDelay(true);  // small lines: send them now, not in 200 ms
    return sockpit::ConnectResult::Ok;
  }

  int tcpRead(char* buf, size_t cap) override {
    const int avail = client_.available();
    if (avail > 0) {
      const size_t want = static_cast<size_t>(avail) < cap ? static_cast<size_t>(avail) : cap;
      const int n = client_.read(reinterpret_cast<uint8_t*>(buf), want);
      return n > 0 ? n : 0;
    }
    return client_.connected() ? 0 : -1;  // data first, then report the close
  }

  bool tcpWrite(const char* data, size_t len) override {
    return client_.write(reinterpret_cast<const uint8_t*>(data), len) == len;
  }

  void tcpClose() override { client_.stop(); }
  const char* tcpError() override { return error_; }

  void setRelay(bool on) override {
    digitalWrite(RELAY_PIN, (on != RELAY_ACTIVE_LOW) ? HIGH : LOW);
  }

  // The relay state for POWER_ON_LAST, in flash (NVS). The core writes it
  // only when it changes.
  bool loadRelay(bool* on) override {
    Preferences prefs;
    prefs.begin("sockpit", false);
    const uint8_t v = prefs.getUChar("relay", 2);  // 2: never kept
    prefs.end();
    if (v > 1) return false;
    *on = v == 1;
    return true;
  }

  void saveRelay(bool on) override {
    Preferences prefs;
    prefs.begin("sockpit", false);
    prefs.putUChar("relay", on ? 1 : 0);
    prefs.end();
  }

  void readSensors(sockpit::Readings& r) override {
    r.uptimeMs = esp_timer_get_time() / 1000;  // 64-bit: does not wrap like millis()
    r.hasFreeHeap = true;
    r.freeHeap = ESP.getFreeHeap();
    if (WiFi.status() == WL_CONNECTED) {
      r.hasRssi = true;
      r.rssi = WiFi.RSSI();
    }
#if defined(CONFIG_IDF_TARGET_ESP32) || (defined(SOC_TEMP_SENSOR_SUPPORTED) && SOC_TEMP_SENSOR_SUPPORTED)
    const float t = temperatureRead();
    // Most original ESP32 chips made since 2018 have no sensor and always
    // read 53.3 C (raw 128): better no number than a made-up one.
    if (!isnan(t) && fabsf(t - 53.33f) > 0.05f) {
      r.hasTempC = true;
      r.tempC = t;
    }
#endif
  }

  void restart() override {
    Serial.flush();
    ESP.restart();
  }

 private:
  // The core's client does not say why a TCP connect failed; the time it
  // took does. A refusal (RST) comes back at once, silence takes the whole
  // timeout.
  sockpit::ConnectResult connectFailure(uint32_t took, uint32_t timeoutMs) {
    if (took + 250 >= timeoutMs) return sockpit::ConnectResult::TimedOut;
    snprintf(error_, sizeof error_, "after %lu ms", static_cast<unsigned long>(took));
    return sockpit::ConnectResult::Refused;
  }

#if SOCKPIT_TLS
  WiFiClientSecure client_;
#else
  WiFiClient client_;
#endif
  char error_[100];
};

static sockpit::DeviceConfig makeConfig() {
  sockpit::DeviceConfig c;
  c.deviceId = DEVICE_ID;
  c.token = DEVICE_TOKEN;
  c.host = SERVER_HOST;
  c.port = SERVER_PORT;
  c.firmware = FIRMWARE_VERSION;
  c.credentialsHint = "DEVICE_ID and DEVICE_TOKEN in config.h";
  c.intervalMs = REPORT_INTERVAL_MS;
  c.connectTimeoutMs = CONNECT_TIMEOUT_MS;
  c.tls = SOCKPIT_TLS;
  c.rebootTimeoutMs = REBOOT_TIMEOUT_MS;
  c.powerOn = POWER_ON_STATE == POWER_ON_ON     ? sockpit::PowerOn::On
              : POWER_ON_STATE == POWER_ON_LAST ? sockpit::PowerOn::Last
                                                : sockpit::PowerOn::Off;
  return c;
}

// Global, not on the stack: the core keeps ~31 KB of fixed buffers.
static EspPlatform platform;
static sockpit::Device device(platform, makeConfig());

// A boot counter kept in flash makes reading ids ("<boot>-<seq>") unique
// across restarts; the server drops an id it has already stored.
static uint32_t nextBootNumber() {
  Preferences prefs;
  prefs.begin("sockpit", false);
  uint32_t boot = prefs.getUInt("boot", 0);
  // Fresh (or erased) flash: start at a random point, so ids from before the
  // erase are not reused and mistaken for duplicates.
  if (boot == 0) boot = esp_random() & 0xFFFFF;
  ++boot;
  prefs.putUInt("boot", boot);
  prefs.end();
  return boot;
}

// ---- Wi-Fi, with the same backoff as the server connection. The timers
// are wrap-safe and checked on every loop (src/core/timer.h).

static sockpit::Backoff wifiBackoff(1000, 30000);
static bool wifiWasUp = false;
static bool wifiTrying = false;
static sockpit::Timer wifiAttempt;  // the running attempt's WIFI_ATTEMPT_MS
static sockpit::Timer wifiNext;     // the next attempt

static void maintainWiFi() {
  const uint32_t now = millis();
  const bool nextDue = wifiNext.due(now);
  const wl_status_t status = WiFi.status();

  if (status == WL_CONNECTED) {
    if (!wifiWasUp) {
      wifiWasUp = true;
      wifiTrying = false;
      wifiBackoff.reset();
      const IPAddress ip = WiFi.localIP();
      say("Wi-Fi connected: IP address %u.%u.%u.%u, signal %d dBm.", static_cast<unsigned>(ip[0]),
          static_cast<unsigned>(ip[1]), static_cast<unsigned>(ip[2]), static_cast<unsigned>(ip[3]),
          static_cast<int>(WiFi.RSSI()));
    }
    return;
  }

  if (wifiWasUp) {
    const uint16_t reason = wifiReason;
    wifiWasUp = false;
    wifiTrying = false;
    wifiNext.start(now, 0);
    if (reason) {
      say("Wi-Fi connection lost: %s (reason %u); reconnecting.", wifiReasonText(reason), reason);
    } else {
      say("Wi-Fi connection lost; reconnecting.");
    }
    return;
  }

  if (wifiTrying) {
    // A disconnect event is a clear answer ("not found", "wrong key"); no
    // need to wait out the attempt. Otherwise give it WIFI_ATTEMPT_MS.
    const uint16_t reason = wifiReason;
    if (!wifiAttempt.due(now) && reason == 0) return;
    wifiTrying = false;
    const uint32_t delayMs = wifiBackoff.next(esp_random());
    wifiNext.start(now, delayMs);
    if (reason) {
      say("Wi-Fi failed: %s (reason %u). Next try in %s.", wifiReasonText(reason), reason, Secs(delayMs).text);
    } else {
      say("Wi-Fi failed: not connected after %lu s, and no answer from the router (out of range?). "
          "Next try in %s.",
          static_cast<unsigned long>(WIFI_ATTEMPT_MS / 1000), Secs(delayMs).text);
    }
    WiFi.disconnect();
    return;
  }

  if (nextDue) {
    wifiReason = 0;
    say("Connecting to Wi-Fi \"%s\" ...", WIFI_SSID);
    WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
    wifiTrying = true;
    wifiAttempt.start(now, WIFI_ATTEMPT_MS);
  }
}

// ---- Arduino entry points.

void setup() {
  Serial.begin(115200);
  delay(200);  // let the USB serial settle so the first lines are not lost
  Serial.println();

  // A size in config.h seen differently by two files would corrupt memory:
  // src/core/sockpit_config.h prevents it, and this says so if it ever fails.
  if (!sockpit::layoutMatches()) {
    say("Build problem: the sketch and src/core disagree on buffer sizes. Rebuild everything (clean build).");
    for (;;) delay(1000);
  }

  platform.begin();
  pinMode(RELAY_PIN, OUTPUT);
  // The boot number and the kept relay state come from flash; begin() sets
  // the relay to its power-on state before anything else happens.
  device.begin(nextBootNumber());
  say("Relay on GPIO %d (%s). Server %s:%d. Last reset: %s.", RELAY_PIN,
      RELAY_ACTIVE_LOW ? "on when LOW" : "on when HIGH", SERVER_HOST, SERVER_PORT, resetReason());
#if SOCKPIT_TLS
#if defined(SERVER_CA_SHA256)
  say("TLS only: the server must show a certificate for \"%s\" from the CA with SHA-256 %s.", SERVER_HOST,
      SERVER_CA_SHA256);
#else
  say("TLS only: the server must show a certificate for \"%s\" from the CA in config.h.", SERVER_HOST);
#endif
#endif
  if (!strcmp(WIFI_SSID, "your-wifi-name") || !strcmp(DEVICE_TOKEN, "paste-the-token-here")) {
    say("config.h still holds a placeholder: set WIFI_SSID, WIFI_PASSWORD and DEVICE_TOKEN, then upload again.");
  }

  // persistent(false) must come before the first mode(): only that call
  // applies the storage setting, and config.h is the truth, so nothing needs
  // writing to flash at every boot.
  WiFi.persistent(false);
  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(false);  // maintainWiFi() retries, with backoff and a log line
  WiFi.onEvent(onWiFiDisconnected, ARDUINO_EVENT_WIFI_STA_DISCONNECTED);

  startWatchdog();
}

void loop() {
  feedWatchdog();
  maintainWiFi();
  device.poll();
  delay(5);  // yield to the Wi-Fi stack; commands still land within milliseconds
}
