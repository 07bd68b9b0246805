// Building the device's messages and parsing the server's (docs/protocol.md).
// Everything here is plain JSON text; framing and base64 happen elsewhere.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cjson_shim.h"

namespace sockpit {

// One set of readings. The has* flags leave out what a board cannot measure.
struct Readings {
  uint64_t uptimeMs;
  bool hasFreeHeap;
  uint32_t freeHeap;
  bool hasRssi;
  int rssi;
  bool relay;
  bool hasTempC;
  float tempC;

  Readings()
      : uptimeMs(0), hasFreeHeap(false), freeHeap(0), hasRssi(false), rssi(0),
        relay(false), hasTempC(false), tempC(0) {}
};

// Builders write compact JSON, NUL-terminated, into out. They return false
// when it does not fit (or memory ran out), leaving out unusable.
bool buildHello(char* out, size_t cap, const char* device, const char* token,
                const char* firmware);
bool buildPing(char* out, size_t cap);
bool buildTelemetry(char* out, size_t cap, const char* msgId, const Readings& r);
// Takes ownership of result (may be null) and of nothing else. cmdId is
// echoed as the server sent it (string or number).
bool buildAck(char* out, size_t cap, const cJSON* cmdId, bool ok, cJSON* result);

// Deepest nesting accepted in a message from the server, counted as the
// server counts it (docs/protocol.md): the top-level object is level 0, and
// nothing may sit deeper than level 32.
static const unsigned kMaxJsonDepth = 32;

// True if no array or object in the JSON text sits deeper than maxDepth
// (the outermost value is level 0). Brackets inside strings do not count.
// It is a plain scan with no recursion, run before cJSON parses anything:
// cJSON parses recursively and allows 1,000 levels, more than the 8 KiB
// stack of the Arduino loop task can take.
bool jsonDepthWithin(const char* json, size_t len, unsigned maxDepth);

enum class ServerMsg { Welcome, Command, Stored, Pong, Error, Other };

// A parsed server message. Pointers point into the parsed tree and stay
// valid until the object is destroyed or parse() is called again.
class ServerMessage {
 public:
  ServerMessage();
  ~ServerMessage();

  // Parses one decoded line. On failure returns false and error() says why.
  // A line nested deeper than kMaxJsonDepth is refused before parsing.
  bool parse(const char* json, size_t len);

  ServerMsg kind;
  const char* type;     // the raw "type" field
  // welcome
  const char* device;   // may be null
  double time;          // unix ms, 0 if absent
  // fromservertonode
  const char* action;
  const cJSON* id;      // command id (string or number), also for "stored"
  const cJSON* params;  // object or null
  // stored
  const char* storedId;
  // error
  const char* code;
  const char* detail;   // may be null

  const char* error() const { return error_; }
  // The command id as text, for logs ("?" if it has none).
  void idText(char* out, size_t cap) const;

 private:
  ServerMessage(const ServerMessage&);             // not copyable: owns the tree
  ServerMessage& operator=(const ServerMessage&);
  void clear();

  cJSON* root_;
  const char* error_;
};

}  // namespace sockpit
