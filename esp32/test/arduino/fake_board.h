// Stand-ins for the parts of Arduino-ESP32 (2.0.x and 3.x) that the sketch
// uses, so that sockpit-device.ino compiles and runs on the host
// (esp32/test/sketch_test.cpp). The signatures follow the real cores; the
// behaviour is a small model that records calls, with a fake clock, radio
// and network. It is no proof that the sketch builds for a real board: only
// a real core can give that (esp32/README.md says how to build one).
//
// FAKE_ARDUINO_MAJOR (2 or 3) and FAKE_IDF_MAJOR (4 or 5) choose the core
// version; CONFIG_IDF_TARGET_* the chip, as sdkconfig.h does on a real build.
#pragma once

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#ifndef FAKE_ARDUINO_MAJOR
#error "build the harness with -DFAKE_ARDUINO_MAJOR=2 or 3"
#endif
#ifndef FAKE_IDF_MAJOR
#error "build the harness with -DFAKE_IDF_MAJOR=4 or 5"
#endif

typedef int esp_err_t;
#define ESP_OK 0
#define ESP_FAIL -1
#define ESP_ERR_INVALID_ARG 0x102
#define ESP_ERR_INVALID_STATE 0x103
#define ESP_ERR_NOT_FOUND 0x105
typedef void* TaskHandle_t;

#define HIGH 0x1
#define LOW 0x0
#define INPUT 0x01
#define OUTPUT 0x03

// ---------------------------------------------------------------- the fake board's state

namespace fake {

struct Board {
  uint32_t now = 0;          // millis()
  uint64_t bootMicros = 0;   // esp_timer_get_time() at now == 0
  std::string serial;        // everything written to Serial
  int heapBlocksForLogs = 0; // what Serial.printf would have taken from the heap
  std::vector<std::string> calls;  // the order of the calls that matter
  std::map<int, int> pinModes;
  std::map<int, int> pinLevels;
  std::vector<std::pair<int, int> > pinWrites;
  int restarts = 0;
  int resetReason = 1;       // ESP_RST_POWERON
  uint32_t random = 12345;
};

struct Radio {
  bool persistent = true;            // the core's default
  bool storageChosen = false;        // the first mode() decides, as WiFiGeneric.cpp does
  bool storageInFlash = false;
  int status = 6;                    // WL_DISCONNECTED
  int begins = 0;
  std::function<void(int, int)> onDisconnected;  // (event, reason)
  int disconnectEventId = -1;
};

struct Net {
  // Name lookups: the answer and how long it takes.
  std::map<std::string, uint32_t> names;  // name -> IPv4 (host order a.b.c.d as 0xaabbccdd)
  uint32_t dnsMs = 5;
  int lookups = 0;
  // TCP: 'a' accept, 'r' refuse at once, 't' nothing until the timeout.
  char connectMode = 'a';
  int32_t lastTimeout = -1;
  uint32_t lastIp = 0;
  int connects = 0;       // every TCP connect, plain or under TLS
  int plainConnects = 0;  // WiFiClient::connect(ip, ...): plain TCP
  // TLS (WiFiClientSecure): the CA and timeout set, the name given to
  // connect(), and how the handshake ends: 0 success, else the mbedtls
  // error lastError() reports (-0x2700 certificate refused, -0x7200 not TLS).
  const char* ca = nullptr;
  unsigned long handshakeS = 0;
  int tlsConnects = 0;
  std::string tlsHost;
  int tlsError = 0;
  bool open = false;
  std::string inbox;   // what the server sent, not yet read
  std::string sent;    // what the device wrote
};

struct Wdt {
  bool initialized = false;  // Arduino 3.x starts it at boot; 2.x too (idle tasks)
  uint32_t timeoutMs = 5000;
  bool panic = false;
  uint32_t idleMask = 1;
  int inits = 0;
  int reconfigures = 0;
  bool subscribed = false;
  int resets = 0;
  int resetsUnsubscribed = 0;
};

inline Board& board() { static Board b; return b; }
inline Radio& radio() { static Radio r; return r; }
inline Net& net() { static Net n; return n; }
inline Wdt& wdt() { static Wdt w; return w; }
inline std::map<std::string, uint32_t>& nvs() { static std::map<std::string, uint32_t> m; return m; }

inline void call(const std::string& what) { board().calls.push_back(what); }

}  // namespace fake

// ---------------------------------------------------------------- Arduino.h

typedef bool boolean;

inline unsigned long millis() { return fake::board().now; }
inline void delay(uint32_t ms) { fake::board().now += ms; }
inline void pinMode(uint8_t pin, uint8_t mode) {
  fake::board().pinModes[pin] = mode;
  fake::call("pinMode(" + std::to_string(pin) + ")");
}
inline void digitalWrite(uint8_t pin, uint8_t val) {
  fake::board().pinLevels[pin] = val;
  fake::board().pinWrites.push_back(std::make_pair(static_cast<int>(pin), static_cast<int>(val)));
}
inline float temperatureRead() { return 53.33f; }  // a chip without a working sensor

class HardwareSerial {
 public:
  void begin(unsigned long) {}
  size_t write(const uint8_t* buf, size_t n) {
    fake::board().serial.append(reinterpret_cast<const char*>(buf), n);
    return n;
  }
  size_t println() { return write(reinterpret_cast<const uint8_t*>("\r\n"), 2); }
  void flush() {}
  // As Print::printf in both cores: a 64-byte buffer on the stack, and a heap
  // block for every longer line.
  size_t printf(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n >= 64) ++fake::board().heapBlocksForLogs;
    return n > 0 ? write(reinterpret_cast<const uint8_t*>(buf), static_cast<size_t>(n)) : 0;
  }
};
static HardwareSerial Serial;

class EspClass {
 public:
  uint32_t getFreeHeap() { return 200000; }
  void restart() {
    ++fake::board().restarts;
    fake::call("restart");
  }
};
static EspClass ESP;

// ---------------------------------------------------------------- IPAddress

class IPAddress {
 public:
  IPAddress() : a_(0) {}
  explicit IPAddress(uint32_t a) : a_(a) {}
  IPAddress(uint8_t a, uint8_t b, uint8_t c, uint8_t d) : a_(a | b << 8 | c << 16 | static_cast<uint32_t>(d) << 24) {}
  bool fromString(const char* s) {
    unsigned p[4];
    char tail;
    if (sscanf(s, "%u.%u.%u.%u%c", &p[0], &p[1], &p[2], &p[3], &tail) != 4) return false;
    for (int i = 0; i < 4; ++i)
      if (p[i] > 255) return false;
    *this = IPAddress(p[0], p[1], p[2], p[3]);
    return true;
  }
  operator uint32_t() const { return a_; }  // network order, as the real one
  uint8_t operator[](int i) const { return static_cast<uint8_t>(a_ >> (8 * i)); }

 private:
  uint32_t a_;
};

// ---------------------------------------------------------------- WiFi.h

typedef enum {
  WL_NO_SHIELD = 255,
  WL_IDLE_STATUS = 0,
  WL_NO_SSID_AVAIL = 1,
  WL_SCAN_COMPLETED = 2,
  WL_CONNECTED = 3,
  WL_CONNECT_FAILED = 4,
  WL_CONNECTION_LOST = 5,
  WL_DISCONNECTED = 6
} wl_status_t;

typedef enum { WIFI_MODE_NULL = 0, WIFI_MODE_STA, WIFI_MODE_AP, WIFI_MODE_APSTA } wifi_mode_t;
#define WIFI_OFF WIFI_MODE_NULL
#define WIFI_STA WIFI_MODE_STA

// The values of ESP-IDF's wifi_err_reason_t (esp_wifi_types.h), 4.4 and 5.x.
typedef enum {
  WIFI_REASON_UNSPECIFIED = 1,
  WIFI_REASON_AUTH_EXPIRE = 2,
  WIFI_REASON_AUTH_LEAVE = 3,
  WIFI_REASON_ASSOC_EXPIRE = 4,
  WIFI_REASON_ASSOC_TOOMANY = 5,
  WIFI_REASON_NOT_AUTHED = 6,
  WIFI_REASON_NOT_ASSOCED = 7,
  WIFI_REASON_ASSOC_LEAVE = 8,
  WIFI_REASON_MIC_FAILURE = 14,
  WIFI_REASON_4WAY_HANDSHAKE_TIMEOUT = 15,
  WIFI_REASON_802_1X_AUTH_FAILED = 23,
  WIFI_REASON_BEACON_TIMEOUT = 200,
  WIFI_REASON_NO_AP_FOUND = 201,
  WIFI_REASON_AUTH_FAIL = 202,
  WIFI_REASON_ASSOC_FAIL = 203,
  WIFI_REASON_HANDSHAKE_TIMEOUT = 204,
  WIFI_REASON_CONNECTION_FAIL = 205,
} wifi_err_reason_t;

typedef enum {
  ARDUINO_EVENT_WIFI_READY = 0,
  ARDUINO_EVENT_WIFI_STA_START = 2,
  ARDUINO_EVENT_WIFI_STA_CONNECTED = 4,
  ARDUINO_EVENT_WIFI_STA_DISCONNECTED = 5,
  ARDUINO_EVENT_WIFI_STA_GOT_IP = 7,
  ARDUINO_EVENT_MAX = 100
} arduino_event_id_t;

typedef struct {
  uint8_t ssid[33];
  uint8_t ssid_len;
  uint8_t bssid[6];
  uint8_t reason;
  int8_t rssi;
} wifi_event_sta_disconnected_t;

typedef union {
  wifi_event_sta_disconnected_t wifi_sta_disconnected;
  uint8_t other[64];
} arduino_event_info_t;

typedef arduino_event_id_t WiFiEvent_t;
typedef arduino_event_info_t WiFiEventInfo_t;
typedef void (*WiFiEventCb)(arduino_event_id_t event);
typedef std::function<void(arduino_event_id_t event, arduino_event_info_t info)> WiFiEventFuncCb;
typedef size_t wifi_event_id_t;

class WiFiClass {
 public:
  void persistent(bool p) {
    fake::radio().persistent = p;
    fake::call(std::string("persistent(") + (p ? "true" : "false") + ")");
  }
  bool mode(wifi_mode_t m) {
    fake::Radio& r = fake::radio();
    if (!r.storageChosen) {  // only the first call applies the storage setting
      r.storageChosen = true;
      r.storageInFlash = r.persistent;
    }
    fake::call("mode(" + std::to_string(static_cast<int>(m)) + ")");
    return true;
  }
  bool setAutoReconnect(bool on) {
    fake::call(std::string("setAutoReconnect(") + (on ? "true" : "false") + ")");
    return true;
  }
  wl_status_t begin(const char* ssid, const char* pass) {
    (void)ssid;
    (void)pass;
    ++fake::radio().begins;
    fake::call("begin");
    return static_cast<wl_status_t>(fake::radio().status);
  }
  bool disconnect(bool wifioff = false, bool eraseap = false) {
    (void)wifioff;
    (void)eraseap;
    fake::call("disconnect");
    return true;
  }
  wl_status_t status() { return static_cast<wl_status_t>(fake::radio().status); }
  int8_t RSSI() { return -58; }
  IPAddress localIP() { return IPAddress(192, 168, 1, 57); }
  wifi_event_id_t onEvent(WiFiEventCb cb, arduino_event_id_t event = ARDUINO_EVENT_MAX) {
    (void)cb;
    (void)event;
    fake::call("onEvent(id only)");
    return 1;
  }
  wifi_event_id_t onEvent(WiFiEventFuncCb cb, arduino_event_id_t event = ARDUINO_EVENT_MAX) {
    fake::radio().disconnectEventId = event;
    fake::radio().onDisconnected = [cb](int ev, int reason) {
      arduino_event_info_t info;
      memset(&info, 0, sizeof info);
      info.wifi_sta_disconnected.reason = static_cast<uint8_t>(reason);
      cb(static_cast<arduino_event_id_t>(ev), info);
    };
    fake::call("onEvent(" + std::to_string(static_cast<int>(event)) + ")");
    return 2;
  }
  // 1 on success on both cores; 3.x returns an lwIP error code otherwise.
  static int hostByName(const char* name, IPAddress& result) {
    fake::Net& n = fake::net();
    ++n.lookups;
    fake::board().now += n.dnsMs;
    std::map<std::string, uint32_t>::const_iterator it = n.names.find(name);
    if (it == n.names.end()) return FAKE_ARDUINO_MAJOR >= 3 ? 200 /* EAI_NONAME */ : 0;
    result = IPAddress(static_cast<uint8_t>(it->second >> 24), static_cast<uint8_t>(it->second >> 16),
                       static_cast<uint8_t>(it->second >> 8), static_cast<uint8_t>(it->second));
    return 1;
  }
};
static WiFiClass WiFi;

class WiFiClient {
 public:
  int connect(IPAddress ip, uint16_t port, int32_t timeout_ms) {
    (void)port;
    fake::Net& n = fake::net();
    ++n.connects;
    n.lastTimeout = timeout_ms;
    n.lastIp = ip;
    ++n.plainConnects;
    if (n.connectMode == 'r') {
      fake::board().now += 3;
      return 0;
    }
    if (n.connectMode == 't') {
      fake::board().now += static_cast<uint32_t>(timeout_ms);
      return 0;
    }
    n.open = true;
    n.inbox.clear();
    return 1;
  }
  int setNoDelay(bool) { return 0; }
  int available() { return fake::net().open ? static_cast<int>(fake::net().inbox.size()) : 0; }
  int read(uint8_t* buf, size_t size) {
    std::string& in = fake::net().inbox;
    const size_t n = in.size() < size ? in.size() : size;
    memcpy(buf, in.data(), n);
    in.erase(0, n);
    return static_cast<int>(n);
  }
  uint8_t connected() { return fake::net().open ? 1 : 0; }
  size_t write(const uint8_t* buf, size_t size) {
    if (!fake::net().open) return 0;
    fake::net().sent.append(reinterpret_cast<const char*>(buf), size);
    return size;
  }
  void stop() { fake::net().open = false; }
};

// As WiFiClientSecure in both cores: connect(host, port, timeout) resolves
// the name and verifies the certificate against the CA and that name.
class WiFiClientSecure : public WiFiClient {
 public:
  WiFiClientSecure() : lastError_(0) {}
  void setCACert(const char* ca) {
    fake::net().ca = ca;
    fake::call("setCACert");
  }
  void setHandshakeTimeout(unsigned long seconds) { fake::net().handshakeS = seconds; }
  int connect(const char* host, uint16_t port, int32_t timeout_ms) {
    (void)port;
    fake::Net& n = fake::net();
    ++n.connects;
    ++n.tlsConnects;
    n.tlsHost = host;
    n.lastTimeout = timeout_ms;
    lastError_ = 0;
    if (n.connectMode == 'r') {
      fake::board().now += 3;
      lastError_ = -1;
      return 0;
    }
    if (n.connectMode == 't') {
      fake::board().now += static_cast<uint32_t>(timeout_ms);
      lastError_ = -1;
      return 0;
    }
    if (!n.ca || n.tlsError != 0) {
      fake::board().now += 40;
      lastError_ = n.ca ? n.tlsError : -0x2700;
      return 0;
    }
    n.open = true;
    n.inbox.clear();
    return 1;
  }
  int lastError(char* buf, const size_t size) {
    snprintf(buf, size, "mbedtls error -0x%04X", static_cast<unsigned>(-lastError_));
    return lastError_;
  }

 private:
  int lastError_;
};

// ---------------------------------------------------------------- Preferences.h

class Preferences {
 public:
  Preferences() : open_(false) {}
  bool begin(const char* name, bool readOnly = false, const char* partition = NULL) {
    (void)readOnly;
    (void)partition;
    ns_ = name;
    open_ = true;
    return true;
  }
  void end() { open_ = false; }
  uint32_t getUInt(const char* key, uint32_t def = 0) { return get(key, def); }
  size_t putUInt(const char* key, uint32_t v) { return put(key, v, 4); }
  uint8_t getUChar(const char* key, uint8_t def = 0) { return static_cast<uint8_t>(get(key, def)); }
  size_t putUChar(const char* key, uint8_t v) { return put(key, v, 1); }

 private:
  uint32_t get(const char* key, uint32_t def) {
    std::map<std::string, uint32_t>::const_iterator it = fake::nvs().find(ns_ + "/" + key);
    return open_ && it != fake::nvs().end() ? it->second : def;
  }
  size_t put(const char* key, uint32_t v, size_t size) {
    if (!open_) return 0;
    fake::nvs()[ns_ + "/" + key] = v;
    fake::call("nvs write " + ns_ + "/" + key);
    return size;
  }
  std::string ns_;
  bool open_;
};

// ---------------------------------------------------------------- esp_system.h, esp_timer.h

typedef enum {
  ESP_RST_UNKNOWN = 0,
  ESP_RST_POWERON = 1,
  ESP_RST_EXT = 2,
  ESP_RST_SW = 3,
  ESP_RST_PANIC = 4,
  ESP_RST_INT_WDT = 5,
  ESP_RST_TASK_WDT = 6,
  ESP_RST_WDT = 7,
  ESP_RST_DEEPSLEEP = 8,
  ESP_RST_BROWNOUT = 9,
  ESP_RST_SDIO = 10,
} esp_reset_reason_t;

inline esp_reset_reason_t esp_reset_reason() { return static_cast<esp_reset_reason_t>(fake::board().resetReason); }
inline int64_t esp_timer_get_time() {
  return static_cast<int64_t>(fake::board().bootMicros + static_cast<uint64_t>(fake::board().now) * 1000u);
}

// ---------------------------------------------------------------- esp_task_wdt.h

#if FAKE_IDF_MAJOR >= 5
typedef struct {
  uint32_t timeout_ms;
  uint32_t idle_core_mask;
  bool trigger_panic;
} esp_task_wdt_config_t;

inline esp_err_t esp_task_wdt_init(const esp_task_wdt_config_t* c) {
  fake::Wdt& w = fake::wdt();
  if (w.initialized) return ESP_ERR_INVALID_STATE;
  w.initialized = true;
  ++w.inits;
  w.timeoutMs = c->timeout_ms;
  w.panic = c->trigger_panic;
  w.idleMask = c->idle_core_mask;
  return ESP_OK;
}
inline esp_err_t esp_task_wdt_reconfigure(const esp_task_wdt_config_t* c) {
  fake::Wdt& w = fake::wdt();
  if (!w.initialized) return ESP_ERR_INVALID_STATE;
  ++w.reconfigures;
  w.timeoutMs = c->timeout_ms;
  w.panic = c->trigger_panic;
  w.idleMask = c->idle_core_mask;
  return ESP_OK;
}
#else
// ESP-IDF 4.4: init() also reconfigures a running watchdog.
inline esp_err_t esp_task_wdt_init(uint32_t timeoutS, bool panic) {
  fake::Wdt& w = fake::wdt();
  w.initialized = true;
  ++w.inits;
  w.timeoutMs = timeoutS * 1000;
  w.panic = panic;
  return ESP_OK;
}
#endif
inline esp_err_t esp_task_wdt_add(TaskHandle_t task) {
  fake::Wdt& w = fake::wdt();
  if (task != NULL || !w.initialized) return ESP_ERR_INVALID_ARG;
  if (w.subscribed) return ESP_ERR_INVALID_ARG;
  w.subscribed = true;
  return ESP_OK;
}
inline esp_err_t esp_task_wdt_reset() {
  fake::Wdt& w = fake::wdt();
  if (!w.subscribed) {
    ++w.resetsUnsubscribed;  // ESP-IDF 5 logs "task not found" each time
    return ESP_ERR_NOT_FOUND;
  }
  ++w.resets;
  return ESP_OK;
}
