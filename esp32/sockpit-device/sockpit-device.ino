// sockpit-device: ESP32 firmware for the sockpit IoT gateway.
//
// Joins Wi-Fi, keeps one TCP connection to the sockpit server, sends a
// reading every few seconds, and switches a relay when the dashboard says so.
// Everything it prints on Serial (115200 baud) is meant for you to read.
//
// The protocol logic (framing, base64, JSON, reconnects, resending,
// commands) lives in src/core as plain C++, tested on a PC against the real
// server. This file is only the board layer: Wi-Fi, the socket, the relay
// pin, the clock and Serial. Settings are in config.h (see config.example.h).

#include <Arduino.h>
#include <Preferences.h>
#include <WiFi.h>
#include <esp_system.h>
#include <esp_timer.h>
#include <math.h>
#include <stdarg.h>
#if __has_include(<soc/soc_caps.h>)
#include <soc/soc_caps.h>
#endif

#if __has_include("config.h")
#include "config.h"
#else
#error "config.h is missing: copy config.example.h to config.h (next to this sketch) and fill in your Wi-Fi and device details."
#endif

#include "src/core/device_core.h"

#define FIRMWARE_VERSION "sockpit-esp32/0.1.0"

// How long one Wi-Fi attempt may take before we call it failed.
static const uint32_t WIFI_ATTEMPT_MS = 15000;

// ---- Serial log: "[   12.345] text", the same format as the host build.

static void logText(const char* text) {
  const unsigned long ms = millis();
  Serial.printf("[%7lu.%03lu] %s\n", ms / 1000, ms % 1000, text);
}

static void say(const char* fmt, ...) {
  char line[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  logText(line);
}

// ---- The board, as the portable core sees it.

class EspPlatform : public sockpit::Platform {
 public:
  uint32_t nowMs() override { return millis(); }
  uint32_t random32() override { return esp_random(); }
  void logLine(const char* text) override { logText(text); }

  bool linkUp() override { return WiFi.status() == WL_CONNECTED; }

  bool tcpConnect(const char* host, uint16_t port) override {
    client_.stop();
    // Bounded wait, so an unreachable server cannot freeze loop() for long.
    if (!client_.connect(host, port, 5000)) return false;
    client_.setNoDelay(true);  // small lines: send them now, not in 200 ms
    return true;
  }

  int tcpRead(char* buf, size_t cap) override {
    const int avail = client_.available();
    if (avail > 0) {
      const size_t want = (size_t)avail < cap ? (size_t)avail : cap;
      const int n = client_.read(reinterpret_cast<uint8_t*>(buf), want);
      return n > 0 ? n : 0;
    }
    return client_.connected() ? 0 : -1;  // data first, then report the close
  }

  bool tcpWrite(const char* data, size_t len) override {
    return client_.write(reinterpret_cast<const uint8_t*>(data), len) == len;
  }

  void tcpClose() override { client_.stop(); }

  void setRelay(bool on) override {
    digitalWrite(RELAY_PIN, (on != RELAY_ACTIVE_LOW) ? HIGH : LOW);
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

 private:
  WiFiClient client_;
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
  return c;
}

// Global, not on the stack: the core keeps ~45 KB of fixed buffers.
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

// ---- Wi-Fi, with the same backoff as the server connection.

static sockpit::Backoff wifiBackoff(1000, 30000);
static bool wifiWasUp = false;
static bool wifiTrying = false;
static uint32_t wifiAttemptStart = 0;
static uint32_t wifiNextAttempt = 0;

static const char* wifiProblem(wl_status_t s) {
  switch (s) {
    case WL_NO_SSID_AVAIL: return "network \"" WIFI_SSID "\" not found (name right? 2.4 GHz? in range?)";
    case WL_CONNECT_FAILED: return "the network refused us (wrong WIFI_PASSWORD?)";
    case WL_CONNECTION_LOST: return "connection lost";
    default: return "not connected after 15 s (wrong WIFI_PASSWORD? too far from the router?)";
  }
}

static void maintainWiFi() {
  const uint32_t now = millis();
  const wl_status_t status = WiFi.status();

  if (status == WL_CONNECTED) {
    if (!wifiWasUp) {
      wifiWasUp = true;
      wifiTrying = false;
      wifiBackoff.reset();
      say("Wi-Fi connected: IP address %s, signal %d dBm.", WiFi.localIP().toString().c_str(),
          (int)WiFi.RSSI());
    }
    return;
  }

  if (wifiWasUp) {
    wifiWasUp = false;
    wifiTrying = false;
    wifiNextAttempt = now;
    say("Wi-Fi connection lost; reconnecting.");
  }

  if (wifiTrying) {
    const uint32_t elapsed = now - wifiAttemptStart;
    // "Not found" and "refused" are clear answers, no need to wait out the
    // attempt. (The first 2 s may still show the previous attempt's status.)
    const bool definite = elapsed > 2000 && (status == WL_CONNECT_FAILED || status == WL_NO_SSID_AVAIL);
    if (elapsed < WIFI_ATTEMPT_MS && !definite) return;
    wifiTrying = false;
    const uint32_t delayMs = wifiBackoff.next(esp_random());
    wifiNextAttempt = now + delayMs;
    say("Wi-Fi failed: %s. Next try in %lu.%lu s.", wifiProblem(status), (unsigned long)(delayMs / 1000),
        (unsigned long)((delayMs % 1000) / 100));
    WiFi.disconnect();
    return;
  }

  if ((int32_t)(now - wifiNextAttempt) >= 0) {
    say("Connecting to Wi-Fi \"%s\" ...", WIFI_SSID);
    WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
    wifiTrying = true;
    wifiAttemptStart = now;
  }
}

// ---- Arduino entry points.

void setup() {
  Serial.begin(115200);
  delay(200);  // let the USB serial settle so the first lines are not lost
  Serial.println();

  pinMode(RELAY_PIN, OUTPUT);
  platform.setRelay(false);  // off before anything else happens

  WiFi.mode(WIFI_STA);
  WiFi.persistent(false);  // config.h is the truth; no flash writes per attempt
  WiFi.setAutoReconnect(false);  // maintainWiFi() retries, with backoff and a log line

  device.begin(nextBootNumber());
  say("Relay on GPIO %d (%s). Server %s:%d.", RELAY_PIN, RELAY_ACTIVE_LOW ? "on when LOW" : "on when HIGH",
      SERVER_HOST, SERVER_PORT);
}

void loop() {
  maintainWiFi();
  device.poll();
  delay(5);  // yield to the Wi-Fi stack; commands still land within milliseconds
}
