#include "messages.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

namespace sockpit {

namespace {

// Prints obj into out and frees obj. cJSON's size estimate can be a few
// bytes off, which PrintPreallocated reports as failure rather than overflow.
bool printAndFree(cJSON* obj, char* out, size_t cap) {
  if (!obj) return false;
  const bool ok = cap > 0 && cap <= 0x7fffffff &&
                  cJSON_PrintPreallocated(obj, out, static_cast<int>(cap), 0);
  cJSON_Delete(obj);
  return ok;
}

const char* stringField(const cJSON* obj, const char* name) {
  const cJSON* item = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(item) ? item->valuestring : 0;
}

}  // namespace

bool jsonDepthWithin(const char* json, size_t len, unsigned maxDepth) {
  unsigned depth = 0;  // open arrays and objects
  bool inString = false;
  for (size_t i = 0; i < len; ++i) {
    const char c = json[i];
    if (inString) {
      if (c == '\\') {
        ++i;  // whatever is escaped cannot end the string
      } else if (c == '"') {
        inString = false;
      }
    } else if (c == '"') {
      inString = true;
    } else if (c == '[' || c == '{') {
      // The value opened here sits at level `depth` (the outermost at 0).
      if (depth > maxDepth) return false;
      ++depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

bool buildHello(char* out, size_t cap, const char* device, const char* token,
                const char* firmware) {
  cJSON* o = cJSON_CreateObject();
  if (!o) return false;
  cJSON_AddStringToObject(o, "type", "hello");
  cJSON_AddStringToObject(o, "device", device);
  cJSON_AddStringToObject(o, "token", token);
  if (firmware && *firmware) cJSON_AddStringToObject(o, "firmware", firmware);
  return printAndFree(o, out, cap);
}

bool buildPing(char* out, size_t cap) {
  cJSON* o = cJSON_CreateObject();
  if (!o) return false;
  cJSON_AddStringToObject(o, "type", "ping");
  return printAndFree(o, out, cap);
}

bool buildTelemetry(char* out, size_t cap, const char* msgId, const Readings& r) {
  cJSON* o = cJSON_CreateObject();
  if (!o) return false;
  cJSON_AddStringToObject(o, "type", "telemetry");
  cJSON_AddStringToObject(o, "id", msgId);
  cJSON* d = cJSON_AddObjectToObject(o, "data");
  if (!d) {
    cJSON_Delete(o);
    return false;
  }
  // JSON numbers are doubles: exact for uptimes up to 285 000 years.
  cJSON_AddNumberToObject(d, "uptime_ms", static_cast<double>(r.uptimeMs));
  if (r.hasFreeHeap) cJSON_AddNumberToObject(d, "free_heap", r.freeHeap);
  if (r.hasRssi) cJSON_AddNumberToObject(d, "rssi", r.rssi);
  cJSON_AddBoolToObject(d, "relay", r.relay);
  if (r.hasTempC && !isnan(r.tempC)) {
    // One decimal is all the sensor is good for, and avoids 45.59999847...
    cJSON_AddNumberToObject(d, "temp_c", floor(r.tempC * 10.0 + 0.5) / 10.0);
  }
  return printAndFree(o, out, cap);
}

bool buildAck(char* out, size_t cap, const cJSON* cmdId, bool ok, cJSON* result) {
  cJSON* o = cJSON_CreateObject();
  cJSON* id = cmdId ? cJSON_Duplicate(cmdId, 0) : cJSON_CreateNull();
  if (!o || !id) {
    cJSON_Delete(o);
    cJSON_Delete(id);
    cJSON_Delete(result);
    return false;
  }
  cJSON_AddStringToObject(o, "type", "ack");
  cJSON_AddItemToObject(o, "id", id);
  cJSON_AddBoolToObject(o, "ok", ok);
  if (result) cJSON_AddItemToObject(o, "result", result);
  return printAndFree(o, out, cap);
}

ServerMessage::ServerMessage() : root_(0), error_(0) { clear(); }

ServerMessage::~ServerMessage() { cJSON_Delete(root_); }

void ServerMessage::clear() {
  cJSON_Delete(root_);
  root_ = 0;
  error_ = 0;
  kind = ServerMsg::Other;
  type = 0;
  device = 0;
  time = 0;
  action = 0;
  id = 0;
  params = 0;
  storedId = 0;
  code = 0;
  detail = 0;
}

bool ServerMessage::parse(const char* json, size_t len) {
  clear();
  // The text must be exactly one JSON value: no trailing bytes, no NULs.
  if (strlen(json) != len) {
    error_ = "contains a NUL byte";
    return false;
  }
  if (!jsonDepthWithin(json, len, kMaxJsonDepth)) {
    error_ = "nested deeper than 32 levels, refused unparsed";
    return false;
  }
  const char* end = 0;
  root_ = cJSON_ParseWithOpts(json, &end, 1);
  if (!root_) {
    error_ = "not valid JSON";
    return false;
  }
  if (!cJSON_IsObject(root_)) {
    error_ = "not a JSON object";
    return false;
  }
  type = stringField(root_, "type");
  if (!type) {
    error_ = "no \"type\" field";
    return false;
  }

  if (strcmp(type, "welcome") == 0) {
    kind = ServerMsg::Welcome;
    device = stringField(root_, "device");
    const cJSON* t = cJSON_GetObjectItemCaseSensitive(root_, "time");
    if (cJSON_IsNumber(t)) time = t->valuedouble;
  } else if (strcmp(type, "fromservertonode") == 0) {
    kind = ServerMsg::Command;
    action = stringField(root_, "action");
    const cJSON* i = cJSON_GetObjectItemCaseSensitive(root_, "id");
    if (cJSON_IsString(i) || cJSON_IsNumber(i)) id = i;
    const cJSON* p = cJSON_GetObjectItemCaseSensitive(root_, "params");
    if (!action) {
      error_ = "command without an \"action\"";
      return false;
    }
    if (!id) {  // without an id there is nothing to acknowledge
      error_ = "command without an \"id\"";
      return false;
    }
    if (p && !cJSON_IsNull(p)) {
      if (!cJSON_IsObject(p)) {
        error_ = "command \"params\" is not an object";
        return false;
      }
      params = p;
    }
  } else if (strcmp(type, "stored") == 0) {
    kind = ServerMsg::Stored;
    storedId = stringField(root_, "id");
    if (!storedId) {
      error_ = "\"stored\" without an \"id\"";
      return false;
    }
  } else if (strcmp(type, "pong") == 0) {
    kind = ServerMsg::Pong;
  } else if (strcmp(type, "error") == 0) {
    kind = ServerMsg::Error;
    code = stringField(root_, "error");
    detail = stringField(root_, "detail");
    if (!code) {
      error_ = "\"error\" without an error code";
      return false;
    }
  } else {
    kind = ServerMsg::Other;
  }
  return true;
}

void ServerMessage::idText(char* out, size_t cap) const {
  if (cap == 0) return;
  if (cJSON_IsString(id)) {
    snprintf(out, cap, "%s", id->valuestring);
  } else if (cJSON_IsNumber(id)) {
    snprintf(out, cap, "%.17g", id->valuedouble);
  } else {
    snprintf(out, cap, "?");
  }
}

}  // namespace sockpit
