// Unit tests of the firmware's portable core, run on the host:
//   make -C esp32 test
// A tiny harness: each TEST is a function; a test fails if any CHECK in it
// fails. The last line is "N passed, M failed".

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "../sockpit-device/src/core/b64.h"
#include "../sockpit-device/src/core/backoff.h"
#include "../sockpit-device/src/core/device_core.h"
#include "../sockpit-device/src/core/line_splitter.h"
#include "../sockpit-device/src/core/messages.h"
#include "../sockpit-device/src/core/resend_buffer.h"

using namespace sockpit;

// ---------------------------------------------------------------- harness

namespace {

struct TestCase {
  const char* name;
  void (*fn)();
};
std::vector<TestCase>& registry() {
  static std::vector<TestCase> r;
  return r;
}
struct Register {
  Register(const char* name, void (*fn)()) { registry().push_back(TestCase{name, fn}); }
};
int g_checkFailures = 0;

#define TEST(name)                              \
  static void test_##name();                    \
  static Register reg_##name(#name, test_##name); \
  static void test_##name()

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      ++g_checkFailures;                                                   \
      fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
    }                                                                      \
  } while (0)

#define CHECK_STR(a, b)                                                                   \
  do {                                                                                    \
    const std::string a_ = (a), b_ = (b);                                                 \
    if (a_ != b_) {                                                                       \
      ++g_checkFailures;                                                                  \
      fprintf(stderr, "    %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
              a_.c_str(), b_.c_str());                                                    \
    }                                                                                     \
  } while (0)

// An encoder written independently of mbedtls, so round trips are not just
// the library agreeing with itself.
std::string refBase64(const std::string& in) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t)in[i] << 16 | (uint8_t)in[i + 1] << 8 | (uint8_t)in[i + 2];
    out += abc[v >> 18];
    out += abc[(v >> 12) & 63];
    out += abc[(v >> 6) & 63];
    out += abc[v & 63];
  }
  if (in.size() - i == 1) {
    const uint32_t v = (uint8_t)in[i] << 16;
    out += abc[v >> 18];
    out += abc[(v >> 12) & 63];
    out += "==";
  } else if (in.size() - i == 2) {
    const uint32_t v = (uint8_t)in[i] << 16 | (uint8_t)in[i + 1] << 8;
    out += abc[v >> 18];
    out += abc[(v >> 12) & 63];
    out += abc[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// Owning wrapper for inspecting JSON in tests.
struct Json {
  cJSON* root;
  explicit Json(const std::string& text) : root(cJSON_Parse(text.c_str())) {}
  ~Json() { cJSON_Delete(root); }
  const cJSON* get(const char* a, const char* b = 0) const {
    const cJSON* x = cJSON_GetObjectItemCaseSensitive(root, a);
    return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
  }
  std::string str(const char* a, const char* b = 0) const {
    const cJSON* x = get(a, b);
    return cJSON_IsString(x) ? x->valuestring : "<missing>";
  }
  double num(const char* a, const char* b = 0) const {
    const cJSON* x = get(a, b);
    return cJSON_IsNumber(x) ? x->valuedouble : -999999;
  }
  int boolean(const char* a, const char* b = 0) const {  // 1, 0, or -1 if absent
    const cJSON* x = get(a, b);
    return cJSON_IsBool(x) ? (cJSON_IsTrue(x) ? 1 : 0) : -1;
  }
 private:
  Json(const Json&);
  Json& operator=(const Json&);
};

}  // namespace

// ---------------------------------------------------------------- framing

namespace {
std::vector<std::string> splitAll(LineSplitter& s, const std::string& stream,
                                  const std::vector<size_t>& cuts, int* tooLong) {
  std::vector<std::string> lines;
  size_t start = 0;
  std::vector<size_t> ends(cuts);
  ends.push_back(stream.size());
  for (size_t k = 0; k < ends.size(); ++k) {
    const char* data = stream.data() + start;
    size_t len = ends[k] - start;
    while (len > 0) {
      const LineSplitter::Event ev = s.feed(&data, &len);
      if (ev == LineSplitter::Line) lines.push_back(std::string(s.line(), s.lineLength()));
      if (ev == LineSplitter::TooLong && tooLong) ++*tooLong;
    }
    start = ends[k];
  }
  return lines;
}
}  // namespace

TEST(framing_basic_lines_crlf_and_empty_lines) {
  char buf[66];
  LineSplitter s(buf, 64);
  std::vector<size_t> none;
  std::vector<std::string> got = splitAll(s, "abc\ndef\r\n\n\r\nxyz\n", none, 0);
  CHECK(got.size() == 3);
  if (got.size() == 3) {
    CHECK_STR(got[0], "abc");
    CHECK_STR(got[1], "def");
    CHECK_STR(got[2], "xyz");
  }
  // An unfinished line waits for more.
  const char* data = "partial";
  size_t len = 7;
  CHECK(s.feed(&data, &len) == LineSplitter::NeedMore);
  CHECK(len == 0);
  data = "\n";
  len = 1;
  CHECK(s.feed(&data, &len) == LineSplitter::Line);
  CHECK_STR(std::string(s.line()), "partial");
}

TEST(framing_every_two_way_and_three_way_split) {
  const std::string stream = "eyJ0eXBlIjoicG9uZyJ9\r\nsecond line\n\nthird\n";
  const std::vector<std::string> want = {"eyJ0eXBlIjoicG9uZyJ9", "second line", "third"};
  char buf[66];
  bool allSame = true;
  for (size_t i = 0; i <= stream.size(); ++i) {
    for (size_t j = i; j <= stream.size(); ++j) {
      LineSplitter s(buf, 64);
      std::vector<size_t> cuts = {i, j};
      if (splitAll(s, stream, cuts, 0) != want) allSame = false;
    }
  }
  CHECK(allSame);
}

TEST(framing_random_chunks_of_a_long_stream) {
  std::mt19937 rng(7);
  std::string stream;
  std::vector<std::string> want;
  for (int i = 0; i < 200; ++i) {
    std::string line(rng() % 300 + 1, 'a' + i % 26);
    want.push_back(line);
    stream += line + ((i % 3) ? "\n" : "\r\n");
  }
  static char buf[Device::kMaxLine + 2];
  bool ok = true;
  for (int round = 0; round < 50; ++round) {
    LineSplitter s(buf, Device::kMaxLine);
    std::vector<size_t> cuts;
    for (size_t p = rng() % 40; p < stream.size(); p += rng() % 700 + 1) cuts.push_back(p);
    if (splitAll(s, stream, cuts, 0) != want) ok = false;
  }
  CHECK(ok);
}

TEST(framing_16k_limit_is_bounded_and_recovers) {
  static char buf[Device::kMaxLine + 2];
  LineSplitter s(buf, Device::kMaxLine);
  const std::string exact(Device::kMaxLine, 'x');
  const std::string over(Device::kMaxLine + 1, 'y');
  const std::string huge(100000, 'z');
  // The limit counts the line, not its ending, as the server does.
  const std::string stream = exact + "\n" + over + "\nok\n" + huge + "\r\nafter\n" + exact + "\r\n" +
                             over + "\r\nend\n";
  int tooLong = 0;
  std::vector<size_t> cuts = {5, 16000, 16390, 20000, 50000, 116430};
  std::vector<std::string> got = splitAll(s, stream, cuts, &tooLong);
  CHECK(tooLong == 3);  // once per oversized line, not once per chunk
  CHECK(got.size() == 5);
  if (got.size() == 5) {
    CHECK(got[0] == exact);
    CHECK_STR(got[1], "ok");
    CHECK_STR(got[2], "after");
    CHECK(got[3] == exact);
    CHECK_STR(got[4], "end");
  }
}

// ---------------------------------------------------------------- base64

TEST(base64_known_vectors) {
  const char* plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char* coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; ++i) {
    char out[32];
    size_t n = 99;
    CHECK(b64Encode(plain[i], strlen(plain[i]), out, sizeof out, &n));
    CHECK_STR(out, coded[i]);
    CHECK(n == strlen(coded[i]));
    char back[32];
    CHECK(b64Decode(coded[i], strlen(coded[i]), back, sizeof back, &n));
    CHECK(n == strlen(plain[i]));
    CHECK_STR(back, plain[i]);
  }
}

TEST(base64_round_trips_all_lengths_and_bytes) {
  std::mt19937 rng(42);
  bool ok = true;
  for (size_t len = 0; len < 400; ++len) {
    std::string in(len, '\0');
    for (size_t i = 0; i < len; ++i) in[i] = static_cast<char>(rng());
    std::vector<char> enc(b64EncodedLength(len) + 1), dec(b64DecodedMax(enc.size()) + 1);
    size_t encLen = 0, decLen = 0;
    if (!b64Encode(in.data(), len, enc.data(), enc.size(), &encLen)) ok = false;
    if (std::string(enc.data(), encLen) != refBase64(in)) ok = false;
    if (!b64Decode(enc.data(), encLen, dec.data(), dec.size(), &decLen)) ok = false;
    if (std::string(dec.data(), decLen) != in) ok = false;
  }
  CHECK(ok);
}

TEST(base64_rejects_bad_input_and_small_buffers) {
  char out[64];
  size_t n = 0;
  CHECK(!b64Decode("Zm9v!A==", 8, out, sizeof out, &n));  // not in the alphabet
  CHECK(!b64Decode("Zm9v YmFy", 9, out, sizeof out, &n));  // space inside
  CHECK(!b64Decode("Zg=a", 4, out, sizeof out, &n));       // data after padding
  CHECK(!b64Decode("Z===", 4, out, sizeof out, &n));       // too much padding
  CHECK(!b64Decode("{\"type\"", 7, out, sizeof out, &n));  // JSON is not base64
  CHECK(!b64Decode("Zm9vYmFy", 8, out, 6, &n));            // 6 bytes + NUL do not fit in 6
  CHECK(b64Decode("Zm9vYmFy", 8, out, 7, &n) && n == 6);
  CHECK(!b64Encode("foobar", 6, out, 8, &n));               // 8 chars + NUL do not fit in 8
  CHECK(b64Encode("foobar", 6, out, 9, &n) && n == 8);
}

// ---------------------------------------------------------------- parsing

TEST(parse_welcome) {
  ServerMessage m;
  const char* j = "{\"type\":\"welcome\",\"device\":\"relay-1\",\"time\":1767225600000}";
  CHECK(m.parse(j, strlen(j)));
  CHECK(m.kind == ServerMsg::Welcome);
  CHECK_STR(m.device ? m.device : "", "relay-1");
  CHECK(m.time == 1767225600000.0);
  const char* minimal = "{\"type\":\"welcome\"}";
  CHECK(m.parse(minimal, strlen(minimal)) && m.kind == ServerMsg::Welcome && m.device == 0);
}

TEST(parse_command_with_and_without_params) {
  ServerMessage m;
  const char* a = "{\"type\":\"fromservertonode\",\"msg\":\"action\",\"action\":\"togglerele\",\"id\":\"c-1\"}";
  CHECK(m.parse(a, strlen(a)));
  CHECK(m.kind == ServerMsg::Command);
  CHECK_STR(m.action, "togglerele");
  CHECK(cJSON_IsString(m.id) && !strcmp(m.id->valuestring, "c-1"));
  CHECK(m.params == 0);

  const char* b =
      "{\"type\":\"fromservertonode\",\"msg\":\"action\",\"action\":\"changesetting\",\"id\":\"c-2\","
      "\"params\":{\"interval_ms\":2000}}";
  CHECK(m.parse(b, strlen(b)));
  CHECK_STR(m.action, "changesetting");
  CHECK(cJSON_IsObject(m.params));
  CHECK(cJSON_GetObjectItem(m.params, "interval_ms")->valuedouble == 2000);

  const char* nullParams = "{\"type\":\"fromservertonode\",\"action\":\"x\",\"id\":\"c\",\"params\":null}";
  CHECK(m.parse(nullParams, strlen(nullParams)) && m.params == 0);

  const char* numericId = "{\"type\":\"fromservertonode\",\"action\":\"togglerele\",\"id\":17}";
  CHECK(m.parse(numericId, strlen(numericId)));
  char idText[16];
  m.idText(idText, sizeof idText);
  CHECK_STR(idText, "17");

  const char* noId = "{\"type\":\"fromservertonode\",\"action\":\"togglerele\"}";
  CHECK(!m.parse(noId, strlen(noId)));
  const char* noAction = "{\"type\":\"fromservertonode\",\"id\":\"c\"}";
  CHECK(!m.parse(noAction, strlen(noAction)));
  const char* badParams = "{\"type\":\"fromservertonode\",\"action\":\"x\",\"id\":\"c\",\"params\":[1]}";
  CHECK(!m.parse(badParams, strlen(badParams)));
}

TEST(parse_every_error_code) {
  const char* codes[] = {"unauthorized", "bad_base64", "bad_json", "line_too_long", "rate_limited", "protocol"};
  for (int i = 0; i < 6; ++i) {
    ServerMessage m;
    std::string j = std::string("{\"type\":\"error\",\"error\":\"") + codes[i] + "\"}";
    CHECK(m.parse(j.c_str(), j.size()));
    CHECK(m.kind == ServerMsg::Error);
    CHECK_STR(m.code, codes[i]);
    CHECK(m.detail == 0);
  }
  ServerMessage m;
  const char* withDetail = "{\"type\":\"error\",\"error\":\"protocol\",\"detail\":\"hello expected\"}";
  CHECK(m.parse(withDetail, strlen(withDetail)));
  CHECK_STR(m.detail ? m.detail : "", "hello expected");
  const char* noCode = "{\"type\":\"error\"}";
  CHECK(!m.parse(noCode, strlen(noCode)));
}

TEST(parse_stored_pong_and_unknown_types) {
  ServerMessage m;
  const char* stored = "{\"type\":\"stored\",\"id\":\"3-41\"}";
  CHECK(m.parse(stored, strlen(stored)) && m.kind == ServerMsg::Stored);
  CHECK_STR(m.storedId, "3-41");
  const char* storedNoId = "{\"type\":\"stored\"}";
  CHECK(!m.parse(storedNoId, strlen(storedNoId)));
  const char* pong = "{\"type\":\"pong\"}";
  CHECK(m.parse(pong, strlen(pong)) && m.kind == ServerMsg::Pong);
  const char* other = "{\"type\":\"fromservertowebpage\",\"msg\":\"x\"}";
  CHECK(m.parse(other, strlen(other)) && m.kind == ServerMsg::Other);
}

TEST(parse_rejects_non_messages) {
  ServerMessage m;
  const char* bad[] = {"", "not json", "[1,2]", "\"welcome\"", "{\"msg\":\"no type\"}",
                       "{\"type\":7}", "{\"type\":\"pong\"} trailing", "{\"type\":\"pong\""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    CHECK(!m.parse(bad[i], strlen(bad[i])));
    CHECK(m.error() != 0);
  }
  const char withNul[] = "{\"type\":\"pong\"}\0x";
  CHECK(!m.parse(withNul, sizeof withNul - 1));
}

// ---------------------------------------------------------------- builders

TEST(build_hello_ping_ack) {
  char out[256];
  CHECK(buildHello(out, sizeof out, "relay-1", "s3cret", "fw/1"));
  Json h(out);
  CHECK_STR(h.str("type"), "hello");
  CHECK_STR(h.str("device"), "relay-1");
  CHECK_STR(h.str("token"), "s3cret");
  CHECK_STR(h.str("firmware"), "fw/1");

  CHECK(buildPing(out, sizeof out));
  CHECK_STR(out, "{\"type\":\"ping\"}");

  cJSON* id = cJSON_CreateString("cmd-9");
  cJSON* result = cJSON_CreateObject();
  cJSON_AddBoolToObject(result, "relay", 1);
  CHECK(buildAck(out, sizeof out, id, true, result));
  CHECK_STR(out, "{\"type\":\"ack\",\"id\":\"cmd-9\",\"ok\":true,\"result\":{\"relay\":true}}");
  CHECK(buildAck(out, sizeof out, id, false, 0));
  CHECK_STR(out, "{\"type\":\"ack\",\"id\":\"cmd-9\",\"ok\":false}");
  cJSON* big = cJSON_CreateObject();
  cJSON_AddStringToObject(big, "error", std::string(300, 'e').c_str());
  CHECK(!buildAck(out, sizeof out, id, false, big));  // too big: false, and no leak
  cJSON_Delete(id);
  CHECK(!buildHello(out, 20, "relay-1", "s3cret", "fw/1"));
}

TEST(build_telemetry) {
  char out[256];
  Readings r;
  r.uptimeMs = 5000000000ULL;  // past 2^32: must not wrap
  r.hasFreeHeap = true;
  r.freeHeap = 201234;
  r.hasRssi = true;
  r.rssi = -61;
  r.relay = true;
  r.hasTempC = true;
  r.tempC = 45.6f;
  CHECK(buildTelemetry(out, sizeof out, "12-7", r));
  Json t(out);
  CHECK_STR(t.str("type"), "telemetry");
  CHECK_STR(t.str("id"), "12-7");
  CHECK(t.num("data", "uptime_ms") == 5000000000.0);
  CHECK(t.num("data", "free_heap") == 201234);
  CHECK(t.num("data", "rssi") == -61);
  CHECK(t.boolean("data", "relay") == 1);
  CHECK(strstr(out, "\"temp_c\":45.6}") != 0);

  Readings bare;  // a board without heap/RSSI/temperature figures
  CHECK(buildTelemetry(out, sizeof out, "1-1", bare));
  CHECK_STR(out, "{\"type\":\"telemetry\",\"id\":\"1-1\",\"data\":{\"uptime_ms\":0,\"relay\":false}}");
}

// ---------------------------------------------------------------- resend buffer

TEST(resend_buffer_bounds_and_order) {
  static ResendBuffer b;  // static: a few KB
  char dropped[ResendBuffer::kIdMax];
  bool wasDropped = true;
  char id[16];
  for (size_t i = 1; i <= ResendBuffer::kSlots; ++i) {
    snprintf(id, sizeof id, "1-%zu", i);
    CHECK(b.push(id, "{}", dropped, &wasDropped));
    CHECK(!wasDropped);
  }
  CHECK(b.size() == ResendBuffer::kSlots);
  // Full: each new reading pushes out the oldest one.
  for (size_t i = ResendBuffer::kSlots + 1; i <= ResendBuffer::kSlots + 10; ++i) {
    snprintf(id, sizeof id, "1-%zu", i);
    CHECK(b.push(id, "{}", dropped, &wasDropped));
    CHECK(wasDropped);
    char expect[16];
    snprintf(expect, sizeof expect, "1-%zu", i - ResendBuffer::kSlots);
    CHECK_STR(dropped, expect);
  }
  CHECK(b.size() == ResendBuffer::kSlots);
  CHECK_STR(b.at(0).id, "1-11");
  CHECK_STR(b.at(ResendBuffer::kSlots - 1).id, "1-42");

  CHECK(b.remove("1-11"));   // oldest
  CHECK(b.remove("1-20"));   // middle, across the wrap point
  CHECK(!b.remove("1-20"));  // twice
  CHECK(!b.remove("1-1"));   // long gone
  CHECK(b.size() == ResendBuffer::kSlots - 2);
  bool ordered = true;
  for (size_t i = 0; i + 1 < b.size(); ++i) {
    unsigned a = 0, c = 0;
    sscanf(b.at(i).id, "1-%u", &a);
    sscanf(b.at(i + 1).id, "1-%u", &c);
    if (!(a < c) || a == 20) ordered = false;
  }
  CHECK(ordered);

  // Oversized entries are refused, not truncated.
  CHECK(!b.push("1-99", std::string(ResendBuffer::kJsonMax, 'x').c_str(), 0, 0));
  CHECK(!b.push(std::string(ResendBuffer::kIdMax, '9').c_str(), "{}", 0, 0));
  CHECK(b.size() == ResendBuffer::kSlots - 2);
}

TEST(resend_buffer_sent_marks) {
  ResendBuffer* b = new ResendBuffer();
  b->push("1-1", "{\"a\":1}", 0, 0);
  b->push("1-2", "{\"a\":2}", 0, 0);
  ResendBuffer::Entry* e = b->nextUnsent();
  CHECK(e && !strcmp(e->id, "1-1"));
  e->sent = true;
  e = b->nextUnsent();
  CHECK(e && !strcmp(e->id, "1-2"));
  e->sent = true;
  CHECK(b->nextUnsent() == 0);
  CHECK(b->unsentCount() == 0);
  b->markAllUnsent();
  CHECK(b->unsentCount() == 2);
  CHECK(b->remove("1-1") && b->remove("1-2") && b->empty() && b->nextUnsent() == 0);
  delete b;
}

// ---------------------------------------------------------------- backoff

TEST(backoff_grows_and_caps) {
  Backoff b(1000, 30000);
  const uint32_t lows[] = {500, 1000, 2000, 4000, 8000, 15000, 15000, 15000};
  for (size_t i = 0; i < 8; ++i) CHECK(b.next(0) == lows[i]);  // no jitter: half the ceiling
  b.reset();
  const uint32_t highs[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
  for (size_t i = 0; i < 7; ++i) CHECK(b.next(0xffffffffu - (0xffffffffu % (highs[i] / 2 + 1))) <= highs[i]);

  // Random jitter: always within [ceiling/2, ceiling], never above 30 s, and
  // attempts far past the cap do not overflow.
  std::mt19937 rng(1);
  b.reset();
  bool inRange = true;
  uint32_t maxSeen = 0;
  for (int i = 0; i < 1000; ++i) {
    const uint32_t c = b.ceiling();
    const uint32_t d = b.next(rng());
    if (d < c / 2 || d > c || d > 30000) inRange = false;
    if (d > maxSeen) maxSeen = d;
  }
  CHECK(inRange);
  CHECK(maxSeen > 25000);  // the jitter really reaches up towards the cap
  CHECK(b.ceiling() == 30000);

  b.reset();
  CHECK(b.attempts() == 0 && b.ceiling() == 1000);
}

// ---------------------------------------------------------------- device

namespace {

struct FakePlatform : public Platform {
  uint32_t now = 1000;
  uint32_t rnd = 0;
  bool link = true;
  bool serverUp = true;
  bool open = false;
  bool peerClosed = false;
  int connects = 0;
  size_t chunk = 512;  // how many bytes a read hands back at most
  std::string inbox;   // what the server has sent, not yet read
  std::string rawOut;  // what the device has written, not yet split into lines
  std::vector<std::string> sent;  // decoded JSON of each complete line
  std::vector<std::string> logs;
  bool relay = false;
  int relayWrites = 0;

  uint32_t nowMs() { return now; }
  uint32_t random32() { return rnd; }
  void logLine(const char* text) { logs.push_back(text); }
  bool linkUp() { return link; }
  bool tcpConnect(const char*, uint16_t) {
    ++connects;
    open = serverUp;
    peerClosed = false;
    inbox.clear();
    return open;
  }
  int tcpRead(char* buf, size_t cap) {
    if (!open) return -1;
    if (inbox.empty()) return peerClosed ? -1 : 0;
    size_t n = inbox.size() < cap ? inbox.size() : cap;
    if (n > chunk) n = chunk;
    memcpy(buf, inbox.data(), n);
    inbox.erase(0, n);
    return static_cast<int>(n);
  }
  bool tcpWrite(const char* data, size_t len) {
    if (!open || peerClosed) return false;
    rawOut.append(data, len);
    size_t nl;
    while ((nl = rawOut.find('\n')) != std::string::npos) {
      std::string line = rawOut.substr(0, nl);
      rawOut.erase(0, nl + 1);
      std::vector<char> dec(line.size() + 4);
      size_t n = 0;
      sent.push_back(b64Decode(line.data(), line.size(), dec.data(), dec.size(), &n)
                         ? std::string(dec.data(), n)
                         : "<bad base64: " + line + ">");
    }
    return true;
  }
  void tcpClose() { open = false; }
  void setRelay(bool on) {
    relay = on;
    ++relayWrites;
  }
  void readSensors(Readings& r) {
    r.uptimeMs = now;
    r.hasFreeHeap = true;
    r.freeHeap = 200000;
  }

  // Server side helpers.
  void say(const std::string& json) { inbox += refBase64(json) + "\n"; }
  void sayPlain(const std::string& json) { inbox += json + "\n"; }
  std::vector<std::string> take() {
    std::vector<std::string> s;
    s.swap(sent);
    return s;
  }
  bool logged(const char* needle) const {
    for (size_t i = 0; i < logs.size(); ++i)
      if (logs[i].find(needle) != std::string::npos) return true;
    return false;
  }
};

DeviceConfig testConfig() {
  DeviceConfig c;
  c.deviceId = "relay-1";
  c.token = "tok-123";
  c.firmware = "test-fw";
  c.intervalMs = 5000;
  return c;
}

// Runs poll() while advancing the fake clock in small steps.
void run(Device& d, FakePlatform& p, uint32_t ms, uint32_t step = 10) {
  for (uint32_t t = 0; t < ms; t += step) {
    d.poll();
    p.now += step;
  }
  d.poll();
}

// Connects and gets welcomed; the hello is taken off the sent lines.
void bringOnline(Device& d, FakePlatform& p) {
  for (int i = 0; i < 100000 && d.state() != Device::State::AwaitWelcome; ++i) run(d, p, 10);
  p.take();
  p.say("{\"type\":\"welcome\",\"device\":\"relay-1\",\"time\":1}");
  run(d, p, 20);
}

std::vector<std::string> telemetryIds(const std::vector<std::string>& lines) {
  std::vector<std::string> ids;
  for (size_t i = 0; i < lines.size(); ++i) {
    Json j(lines[i]);
    if (j.str("type") == "telemetry") ids.push_back(j.str("id"));
  }
  return ids;
}

// A Device holds ~45 KB of buffers: one static instance per test, rebuilt in place.
struct Rig {
  FakePlatform p;
  Device* d;
  alignas(Device) static unsigned char storage[sizeof(Device)];
  explicit Rig(const DeviceConfig& c = testConfig()) : d(new (storage) Device(p, c)) { d->begin(7); }
  ~Rig() { d->~Device(); }
};
alignas(Device) unsigned char Rig::storage[sizeof(Device)];

}  // namespace

TEST(device_hello_welcome_and_telemetry) {
  Rig r;
  run(*r.d, r.p, 20);
  CHECK(r.p.connects == 1);
  CHECK(r.d->state() == Device::State::AwaitWelcome);
  std::vector<std::string> out = r.p.take();
  CHECK(out.size() == 1);
  if (!out.empty()) {
    Json h(out[0]);
    CHECK_STR(h.str("type"), "hello");
    CHECK_STR(h.str("device"), "relay-1");
    CHECK_STR(h.str("token"), "tok-123");
    CHECK_STR(h.str("firmware"), "test-fw");
  }
  // Nothing else goes out before the welcome, not even readings.
  run(*r.d, r.p, 6000);
  CHECK(r.p.take().empty());
  r.p.say("{\"type\":\"welcome\",\"device\":\"relay-1\",\"time\":1}");
  run(*r.d, r.p, 20);
  CHECK(r.d->state() == Device::State::Online);
  out = r.p.take();
  CHECK(out.size() == 1);  // the reading taken while waiting
  if (!out.empty()) {
    Json t(out[0]);
    CHECK_STR(t.str("type"), "telemetry");
    CHECK_STR(t.str("id"), "7-1");
    CHECK(t.num("data", "free_heap") == 200000);
    CHECK(t.boolean("data", "relay") == 0);
    CHECK(t.num("data", "uptime_ms") > 0);
  }
  CHECK(r.d->unconfirmed() == 1);
  r.p.say("{\"type\":\"stored\",\"id\":\"7-1\"}");
  run(*r.d, r.p, 5000);
  CHECK(r.d->unconfirmed() == 1);  // 7-1 confirmed, 7-2 just sent
  std::vector<std::string> ids = telemetryIds(r.p.take());
  CHECK(ids.size() == 1 && ids[0] == "7-2");
  CHECK(r.p.logged("welcomed"));
}

TEST(device_togglerele_acks_new_relay_state) {
  Rig r;
  bringOnline(*r.d, r.p);
  r.p.say("{\"type\":\"fromservertonode\",\"msg\":\"action\",\"action\":\"togglerele\",\"id\":\"c1\"}");
  run(*r.d, r.p, 20);
  CHECK(r.p.relay && r.d->relay());
  std::vector<std::string> out = r.p.take();
  CHECK(out.size() == 1);
  if (!out.empty()) CHECK_STR(out[0], "{\"type\":\"ack\",\"id\":\"c1\",\"ok\":true,\"result\":{\"relay\":true}}");
  r.p.say("{\"type\":\"fromservertonode\",\"msg\":\"action\",\"action\":\"togglerele\",\"id\":\"c2\"}");
  run(*r.d, r.p, 20);
  CHECK(!r.p.relay);
  out = r.p.take();
  CHECK(out.size() == 1);
  if (!out.empty()) CHECK_STR(out[0], "{\"type\":\"ack\",\"id\":\"c2\",\"ok\":true,\"result\":{\"relay\":false}}");
  // The next reading reports the relay as it is now.
  r.p.say("{\"type\":\"fromservertonode\",\"action\":\"togglerele\",\"id\":\"c3\"}");
  run(*r.d, r.p, 5000);
  out = r.p.take();
  CHECK(out.size() == 2);
  if (out.size() == 2) {
    Json t(out[1]);
    CHECK(t.boolean("data", "relay") == 1);
  }
}

TEST(device_repeated_command_id_runs_once) {
  Rig r;
  bringOnline(*r.d, r.p);
  const std::string cmd = "{\"type\":\"fromservertonode\",\"action\":\"togglerele\",\"id\":\"same\"}";
  r.p.say(cmd);
  r.p.say(cmd);
  run(*r.d, r.p, 20);
  CHECK(r.p.relay);
  CHECK(r.p.relayWrites == 2);  // begin() + one toggle
  std::vector<std::string> out = r.p.take();
  CHECK(out.size() == 2 && out[0] == out[1]);
}

TEST(device_changesetting) {
  Rig r;
  bringOnline(*r.d, r.p);
  r.p.say("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"s1\",\"params\":{\"interval_ms\":2000}}");
  run(*r.d, r.p, 20);
  CHECK(r.d->intervalMs() == 2000);
  std::vector<std::string> out = r.p.take();
  CHECK(out.size() == 1);
  if (!out.empty()) CHECK_STR(out[0], "{\"type\":\"ack\",\"id\":\"s1\",\"ok\":true,\"result\":{\"interval_ms\":2000}}");

  // Forms send strings.
  r.p.say("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"s2\",\"params\":{\"interval_ms\":\"3000\"}}");
  run(*r.d, r.p, 20);
  CHECK(r.d->intervalMs() == 3000);
  r.p.take();

  // Unknown setting: refused with a reason, and nothing else is applied.
  r.p.say("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"s3\",\"params\":{\"interval_ms\":9000,\"foo\":1}}");
  run(*r.d, r.p, 20);
  CHECK(r.d->intervalMs() == 3000);
  out = r.p.take();
  CHECK(out.size() == 1);
  if (!out.empty())
    CHECK_STR(out[0], "{\"type\":\"ack\",\"id\":\"s3\",\"ok\":false,\"result\":{\"error\":\"unknown setting: foo\"}}");

  const char* bad[] = {"{\"interval_ms\":10}", "{\"interval_ms\":1.5e3}", "{\"interval_ms\":\"soon\"}",
                       "{\"interval_ms\":1234.5}", "{}", "{\"relay\":\"maybe\"}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    r.p.say(std::string("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"b") +
            char('0' + i) + "\",\"params\":" + bad[i] + "}");
    run(*r.d, r.p, 20);
    out = r.p.take();
    CHECK(out.size() == 1);
    if (out.empty()) continue;
    Json a(out[0]);
    // 1.5e3 is a whole number, so it is the one accepted
    CHECK(a.boolean("ok") == (i == 1 ? 1 : 0));
    if (i != 1) CHECK(a.str("result", "error") != "<missing>");
  }
  CHECK(r.d->intervalMs() == 1500);

  r.p.say("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"s4\"}");
  run(*r.d, r.p, 20);
  out = r.p.take();
  CHECK(out.size() == 1);
  if (!out.empty())
    CHECK_STR(out[0], "{\"type\":\"ack\",\"id\":\"s4\",\"ok\":false,\"result\":{\"error\":\"no settings given\"}}");

  r.p.say("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"s5\",\"params\":{\"relay\":\"on\"}}");
  run(*r.d, r.p, 20);
  CHECK(r.p.relay);
}

TEST(device_unknown_action_is_refused) {
  Rig r;
  bringOnline(*r.d, r.p);
  r.p.say("{\"type\":\"fromservertonode\",\"msg\":\"action\",\"action\":\"selfdestruct\",\"id\":42}");
  run(*r.d, r.p, 20);
  std::vector<std::string> out = r.p.take();
  CHECK(out.size() == 1);
  if (!out.empty())
    CHECK_STR(out[0], "{\"type\":\"ack\",\"id\":42,\"ok\":false,\"result\":{\"error\":\"unknown action: selfdestruct\"}}");
  CHECK(r.d->state() == Device::State::Online);
}

TEST(device_resends_unconfirmed_readings_after_reconnect) {
  Rig r;
  bringOnline(*r.d, r.p);
  run(*r.d, r.p, 15000);  // readings 7-1 .. 7-3 go out
  std::vector<std::string> ids = telemetryIds(r.p.take());
  CHECK(ids.size() == 3);
  r.p.say("{\"type\":\"stored\",\"id\":\"7-1\"}");
  run(*r.d, r.p, 20);
  CHECK(r.d->unconfirmed() == 2);

  // The server goes away; readings keep being taken and kept.
  r.p.peerClosed = true;
  r.p.serverUp = false;
  run(*r.d, r.p, 20);
  CHECK(r.d->state() == Device::State::Offline);
  CHECK(r.p.logged("The server closed the connection"));
  const int before = r.p.connects;
  run(*r.d, r.p, 10000);  // backoff: a few failed attempts, not one per poll
  CHECK(r.p.connects > before && r.p.connects < before + 6);
  CHECK(r.p.logged("Server unreachable"));
  CHECK(r.d->unconfirmed() == 4);  // 7-2, 7-3 unconfirmed + 7-4, 7-5 taken offline

  r.p.serverUp = true;
  bringOnline(*r.d, r.p);
  CHECK(r.d->state() == Device::State::Online);
  run(*r.d, r.p, 100);
  ids = telemetryIds(r.p.take());
  // Everything unconfirmed, oldest first, each once; 7-1 was stored so not again.
  CHECK(ids.size() >= 5);
  if (ids.size() >= 5) {
    CHECK_STR(ids[0], "7-2");
    CHECK_STR(ids[1], "7-3");
    CHECK_STR(ids[2], "7-4");
  }
  bool unique = true;
  for (size_t i = 0; i < ids.size(); ++i)
    for (size_t j = i + 1; j < ids.size(); ++j)
      if (ids[i] == ids[j]) unique = false;
  CHECK(unique);
  CHECK(std::find(ids.begin(), ids.end(), std::string("7-1")) == ids.end());
}

TEST(device_backoff_when_server_unreachable) {
  Rig r;
  r.p.serverUp = false;
  r.p.rnd = 0;  // no jitter: delays are 0.5, 1, 2, 4, 8, 15, 15 s
  std::vector<uint32_t> attemptTimes;
  int seen = 0;
  for (uint32_t t = 0; t < 120000; t += 10) {
    r.d->poll();
    if (r.p.connects != seen) {
      seen = r.p.connects;
      attemptTimes.push_back(r.p.now);
    }
    r.p.now += 10;
  }
  CHECK(attemptTimes.size() >= 8);
  bool growing = true, capped = true;
  for (size_t i = 2; i < attemptTimes.size(); ++i) {
    const uint32_t gap = attemptTimes[i] - attemptTimes[i - 1];
    const uint32_t prev = attemptTimes[i - 1] - attemptTimes[i - 2];
    if (gap < prev) growing = false;
    if (gap > 30000 + 20) capped = false;
  }
  CHECK(growing);
  CHECK(capped);
  CHECK(attemptTimes.back() - attemptTimes[attemptTimes.size() - 2] >= 14990);
}

TEST(device_unauthorized_stops_hammering) {
  Rig r;
  run(*r.d, r.p, 20);
  r.p.say("{\"type\":\"error\",\"error\":\"unauthorized\"}");
  r.p.peerClosed = true;
  run(*r.d, r.p, 20);
  CHECK(r.d->state() == Device::State::Rejected);
  CHECK(!r.p.open);
  CHECK(r.p.logged("unauthorized"));
  CHECK(r.p.logged("Not trying again for 15 minutes"));
  const int connects = r.p.connects;
  run(*r.d, r.p, 15 * 60 * 1000 - 1000, 1000);
  CHECK(r.p.connects == connects);  // a quarter of an hour of silence
  run(*r.d, r.p, 2000, 1000);
  CHECK(r.p.connects == connects + 1);  // then one careful new try
}

TEST(device_pings_when_idle_and_drops_a_silent_server) {
  DeviceConfig c = testConfig();
  c.intervalMs = 600000;  // readings too rare to keep the line busy
  Rig r(c);
  bringOnline(*r.d, r.p);
  run(*r.d, r.p, 29000);
  CHECK(r.p.take().empty());
  run(*r.d, r.p, 2000);
  std::vector<std::string> out = r.p.take();
  CHECK(out.size() == 1 && out[0] == "{\"type\":\"ping\"}");
  r.p.say("{\"type\":\"pong\"}");
  run(*r.d, r.p, 80000);
  CHECK(r.d->state() == Device::State::Online);  // the pong counted as life
  run(*r.d, r.p, 20000);                          // no more pongs: silent server
  CHECK(r.d->state() != Device::State::Online);
  CHECK(r.p.logged("No word from the server"));
}

TEST(device_gives_up_on_missing_welcome) {
  Rig r;
  run(*r.d, r.p, 20);
  CHECK(r.d->state() == Device::State::AwaitWelcome);
  run(*r.d, r.p, 10100);
  CHECK(r.d->state() == Device::State::Offline);
  CHECK(r.p.logged("did not answer our hello"));
}

TEST(device_survives_bad_lines_and_byte_by_byte_input) {
  Rig r;
  r.p.chunk = 1;
  run(*r.d, r.p, 20);
  r.p.inbox += "!!!not base64!!!\n";
  r.p.say("not json at all");
  r.p.say("{\"type\":\"something-new\"}");
  r.p.sayPlain("{\"type\":\"welcome\"}");  // plain JSON is accepted too
  run(*r.d, r.p, 200, 1);
  CHECK(r.d->state() == Device::State::Online);
  CHECK(r.p.logged("not valid base64"));
  CHECK(r.p.logged("not valid JSON"));
  CHECK(r.p.logged("something-new"));
  r.p.inbox += std::string(Device::kMaxLine + 10, 'A') + "\n";
  r.p.chunk = 512;
  run(*r.d, r.p, 500);
  CHECK(r.p.logged("longer than"));
  CHECK(r.d->state() == Device::State::Online);
}

TEST(device_waits_for_network_and_buffers_offline) {
  Rig r;
  r.p.link = false;
  run(*r.d, r.p, 5000 * 40);  // 40 readings with no network
  CHECK(r.p.connects == 0);
  CHECK(r.d->unconfirmed() == ResendBuffer::kSlots);
  CHECK(r.p.logged("dropped the oldest"));
  r.p.link = true;
  bringOnline(*r.d, r.p);
  run(*r.d, r.p, 1000);
  std::vector<std::string> ids = telemetryIds(r.p.take());
  CHECK(ids.size() == ResendBuffer::kSlots);
  if (!ids.empty()) CHECK_STR(ids[0], "7-9");  // 1..8 made room
  r.p.link = false;
  run(*r.d, r.p, 20);
  CHECK(r.d->state() == Device::State::Offline);
  CHECK(r.p.logged("network is down"));
}

// ---------------------------------------------------------------- main

int main() {
  int passed = 0, failed = 0;
  for (size_t i = 0; i < registry().size(); ++i) {
    const int before = g_checkFailures;
    registry()[i].fn();
    if (g_checkFailures == before) {
      ++passed;
      printf("ok   %s\n", registry()[i].name);
    } else {
      ++failed;
      printf("FAIL %s\n", registry()[i].name);
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
