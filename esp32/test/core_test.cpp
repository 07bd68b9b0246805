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
  const char* codes[] = {"unauthorized", "bad_base64", "bad_json", "line_too_long",
                         "rate_limited", "protocol", "going_away", "unavailable"};
  for (int i = 0; i < 8; ++i) {
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
  ConnectResult failure = ConnectResult::Refused;  // how a connect fails while !serverUp
  uint32_t lastConnectTimeoutMs = 0;
  bool haveSaved = false;  // the relay state kept "in flash"
  bool saved = false;
  int saves = 0;
  int restarts = 0;

  uint32_t nowMs() { return now; }
  uint32_t random32() { return rnd; }
  void logLine(const char* text) { logs.push_back(text); }
  bool linkUp() { return link; }
  ConnectResult tcpConnect(const char*, uint16_t, uint32_t timeoutMs) {
    ++connects;
    lastConnectTimeoutMs = timeoutMs;
    open = serverUp;
    peerClosed = false;
    inbox.clear();
    return open ? ConnectResult::Ok : failure;
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
  bool loadRelay(bool* on) {
    if (!haveSaved) return false;
    *on = saved;
    return true;
  }
  void saveRelay(bool on) {
    haveSaved = true;
    saved = on;
    ++saves;
  }
  void restart() { ++restarts; }
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
  CHECK(r.p.logged("refused the connection"));
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
  CHECK(r.p.logged("Not trying again for 15.0 min"));  // rnd 0: no jitter
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


// ---------------------------------------------------------------- deep nesting (issue 16, defect 1)

namespace {
std::string nested(unsigned levels) {  // {"a": + levels arrays: the innermost at level `levels`
  return "{\"a\":" + std::string(levels, '[') + std::string(levels, ']') + "}";
}
}  // namespace

TEST(json_depth_is_counted_as_the_server_counts_it) {
  // The top-level object is level 0; the server accepts up to level 32.
  const std::string ok = nested(32), deep = nested(33);
  CHECK(jsonDepthWithin(ok.data(), ok.size(), kMaxJsonDepth));
  CHECK(!jsonDepthWithin(deep.data(), deep.size(), kMaxJsonDepth));
  // Brackets inside strings, escaped quotes included, do not count.
  const std::string inString = "{\"a\":\"" + std::string(100, '[') + "\\\"" + std::string(100, '{') + "\"}";
  CHECK(jsonDepthWithin(inString.data(), inString.size(), kMaxJsonDepth));
  // A 16 KiB line of '[' is refused by the scan, which has no recursion.
  const std::string line(Device::kMaxLine, '[');
  CHECK(!jsonDepthWithin(line.data(), line.size(), kMaxJsonDepth));
  ServerMessage m;
  CHECK(!m.parse(line.data(), line.size()));
  CHECK_STR(m.error(), "nested deeper than 32 levels, refused unparsed");
  const std::string deepCommand = "{\"type\":\"fromservertonode\",\"action\":\"x\",\"id\":\"c\",\"params\":{\"p\":" +
                                  std::string(40, '[') + std::string(40, ']') + "}}";
  CHECK(!m.parse(deepCommand.data(), deepCommand.size()));
  const std::string fine = "{\"type\":\"pong\",\"x\":" + std::string(31, '[') + std::string(31, ']') + "}";
  CHECK(m.parse(fine.data(), fine.size()) && m.kind == ServerMsg::Pong);
}

TEST(device_refuses_a_deeply_nested_line_and_stays_online) {
  Rig r;
  bringOnline(*r.d, r.p);
  // The largest such line the device takes in: 16 KiB, plain and in base64.
  std::string plain = "{\"a\":" + std::string(Device::kMaxLine - 5, '[');
  r.p.sayPlain(plain);
  std::string forB64 = "{\"a\":" + std::string(Device::kMaxLine / 4 * 3 - 5, '[');
  r.p.say(forB64);
  r.p.say("{\"type\":\"fromservertonode\",\"action\":\"togglerele\",\"id\":\"after\"}");
  run(*r.d, r.p, 200);
  CHECK(r.p.logged("nested deeper than 32 levels"));
  CHECK(r.d->state() == Device::State::Online);
  CHECK(r.p.relay);  // the command after the bad lines still ran
}

// ---------------------------------------------------------------- base64 in place (RAM)

TEST(base64_decodes_in_place) {
  std::mt19937 rng(9);
  bool ok = true;
  for (size_t len = 0; len < 300; ++len) {
    std::string in(len, '\0');
    for (size_t i = 0; i < len; ++i) in[i] = static_cast<char>(rng());
    std::string text = refBase64(in);
    std::vector<char> buf(text.begin(), text.end());
    buf.push_back('\0');
    size_t n = 999;
    if (!b64DecodeInPlace(buf.data(), text.size(), &n) || n != len) ok = false;
    if (std::string(buf.data(), n) != in || buf[n] != '\0') ok = false;
  }
  CHECK(ok);
  char bad[] = "Zm9v!A==";
  size_t n = 0;
  CHECK(!b64DecodeInPlace(bad, 8, &n));
  char odd[] = "Zm9vY";  // not a whole number of groups
  CHECK(!b64DecodeInPlace(odd, 5, &n));
  char padded[] = "Zm8=Zm8=";  // padding in the middle
  CHECK(!b64DecodeInPlace(padded, 8, &n));
}

TEST(device_buffers_are_about_31_KB) {
  // 43 KB before the decode buffer went (issue 16): the line buffer, the
  // resend ring, the recent commands and the send buffers.
  printf("     sizeof(Device) = %lu bytes\n", static_cast<unsigned long>(sizeof(Device)));
  CHECK(sizeof(Device) < 32 * 1024);
  CHECK(layoutMatches());
}

// ---------------------------------------------------------------- clock wrap (defect 4)

TEST(device_reconnects_after_a_long_outage_across_the_clock_wrap) {
  // An outage of 2^32 ms + 0.1 s: a timer compared by elapsed time alone
  // would see 0.1 s and wait out its 0.5 s again; one compared with a stored
  // end time would see it 0.4 s in the future. Kept due all along, it fires
  // at once.
  Rig r;
  r.p.rnd = 0;  // backoff 0.5 s
  r.p.now = 0xFFFF0000u;
  r.p.serverUp = false;
  run(*r.d, r.p, 20);
  CHECK(r.p.connects == 1);
  CHECK(r.d->waitLeftMs() > 400);
  r.p.link = false;
  r.p.serverUp = true;
  const uint64_t outage = (1ULL << 32) + 100;
  for (uint64_t t = 0; t < outage;) {
    r.d->poll();
    const uint64_t step = outage - t < 60000 ? outage - t : 60000;
    r.p.now += static_cast<uint32_t>(step);
    t += step;
  }
  CHECK(r.p.connects == 1);
  r.p.link = true;
  r.d->poll();
  CHECK(r.p.connects == 2);  // at once: the attempt was long due
  CHECK(r.d->state() == Device::State::AwaitWelcome);

  // 30 days without Wi-Fi after a refused try (the range where a stored end
  // time compares as 25 days in the future): the next try still comes at once.
  Rig r2;
  r2.p.now = 0x80000000u;
  r2.p.serverUp = false;
  run(*r2.d, r2.p, 20);
  const int tries = r2.p.connects;
  CHECK(tries == 1);
  r2.p.link = false;
  for (int i = 0; i < 30 * 24 * 60; ++i) {
    r2.d->poll();
    r2.p.now += 60000;
  }
  r2.p.link = true;
  run(*r2.d, r2.p, 100);
  CHECK(r2.p.connects == tries + 1);
}

TEST(device_pause_and_readings_across_the_clock_wrap) {
  Rig r;
  r.p.now = 0xFFFFF000u;
  run(*r.d, r.p, 20);
  r.p.say("{\"type\":\"error\",\"error\":\"unauthorized\"}");
  run(*r.d, r.p, 20);
  CHECK(r.d->state() == Device::State::Rejected);
  const int connects = r.p.connects;
  run(*r.d, r.p, 15 * 60 * 1000 - 1000, 500);  // crosses 2^32 early on
  CHECK(r.p.connects == connects);
  run(*r.d, r.p, 2000, 500);
  CHECK(r.p.connects == connects + 1);
  CHECK(r.d->readingsTaken() >= 180);  // one every 5 s all along
}

// ---------------------------------------------------------------- error codes (defect 5)

TEST(device_unauthorized_pause_has_jitter_so_a_fleet_does_not_return_in_step) {
  uint32_t pauses[3];
  const uint32_t rnds[3] = {0, 123456789u, 0xFFFFFFFFu};
  for (int k = 0; k < 3; ++k) {
    Rig r;
    r.p.rnd = rnds[k];
    run(*r.d, r.p, 20);
    r.p.say("{\"type\":\"error\",\"error\":\"unauthorized\",\"detail\":\"unknown device or wrong token\"}");
    run(*r.d, r.p, 20);
    CHECK(r.d->state() == Device::State::Rejected);
    pauses[k] = r.d->waitLeftMs();
    CHECK(pauses[k] >= 15u * 60 * 1000 - 100 && pauses[k] <= 15u * 60 * 1000 * 3 / 2);
  }
  CHECK(pauses[0] != pauses[1] && pauses[1] != pauses[2]);
}

namespace {
// The server answers the hello with an error, then closes; returns the wait before the next try.
uint32_t answerHelloWith(Rig& r, const char* error) {
  run(*r.d, r.p, 20);
  CHECK(r.d->state() == Device::State::AwaitWelcome);
  r.p.say(error);
  r.p.peerClosed = true;
  run(*r.d, r.p, 10);
  return r.d->waitLeftMs();
}
}  // namespace

TEST(device_unavailable_means_the_normal_backoff_not_the_long_pause) {
  Rig r;
  r.p.rnd = 0;
  const uint32_t wait = answerHelloWith(r, "{\"type\":\"error\",\"error\":\"unavailable\",\"detail\":\"server could not check the token; try again\"}");
  CHECK(r.d->state() == Device::State::Offline);
  CHECK(wait <= 1000);
  CHECK(r.p.logged("could not check our id and token just now (unavailable - server could not check"));
  CHECK(!r.p.logged("refused this device"));
  // It keeps trying with growing pauses: a second and a third answer, still no long pause.
  run(*r.d, r.p, wait + 20);
  CHECK(r.p.connects == 2);
  const uint32_t wait2 = answerHelloWith(r, "{\"type\":\"error\",\"error\":\"unavailable\"}");
  CHECK(wait2 > wait && wait2 <= 2000);
  CHECK(r.d->state() == Device::State::Offline);
}

TEST(device_late_hello_protocol_error_means_the_normal_backoff) {
  Rig r;
  const uint32_t wait = answerHelloWith(r, "{\"type\":\"error\",\"error\":\"protocol\",\"detail\":\"no hello within 10 s\"}");
  CHECK(r.d->state() == Device::State::Offline);
  CHECK(wait <= 1000);
  CHECK(r.p.logged("The server did not take our hello (protocol - no hello within 10 s)"));
  // Once online, a "protocol" reply to one bad line does not end the connection.
  run(*r.d, r.p, wait + 20);
  r.p.take();
  r.p.say("{\"type\":\"welcome\"}");
  run(*r.d, r.p, 20);
  r.p.say("{\"type\":\"error\",\"error\":\"protocol\",\"detail\":\"no command \\\"x\\\" is waiting for an ack\"}");
  run(*r.d, r.p, 20);
  CHECK(r.d->state() == Device::State::Online);
}

TEST(device_going_away_reconnects_after_a_pause) {
  Rig r;
  r.p.rnd = 0;
  bringOnline(*r.d, r.p);
  run(*r.d, r.p, 15000);  // a stable connection: the backoff starts over
  r.p.say("{\"type\":\"error\",\"error\":\"going_away\",\"detail\":\"server is shutting down\"}");
  r.p.peerClosed = true;
  run(*r.d, r.p, 10);
  CHECK(r.d->state() == Device::State::Offline);
  CHECK(r.p.logged("The server is closing this connection (going_away - server is shutting down)"));
  const uint32_t wait = r.d->waitLeftMs();
  CHECK(wait >= 400 && wait <= 1000);  // a pause, not at once, and not the long rest
  const int connects = r.p.connects;
  run(*r.d, r.p, 1100);
  CHECK(r.p.connects == connects + 1);
}

// ---------------------------------------------------------------- out-of-range numbers (defect 6)

TEST(device_out_of_range_numbers_are_refused_without_undefined_behaviour) {
  Rig r;
  bringOnline(*r.d, r.p);
  // The build with -fsanitize=float-cast-overflow (make test) stops here if a
  // double outside the range of an integer type is ever cast to it.
  const char* bad[] = {"1e300", "-1e300", "1.7976931348623157e308", "4294967796", "1e19",
                       "\"1e400\"", "\"-1e400\"", "\"nan\"", "\"inf\"", "\"-inf\"", "\"0x10\"",
                       "9223372036854775808", "\"18446744073709551616\""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    r.p.say(std::string("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"n") +
            char('a' + i) + "\",\"params\":{\"interval_ms\":" + bad[i] + "}}");
    run(*r.d, r.p, 20);
    std::vector<std::string> out = r.p.take();
    CHECK(out.size() == 1);
    if (out.empty()) continue;
    Json a(out[0]);
    CHECK(a.boolean("ok") == 0);
    CHECK(a.str("result", "error").find("interval_ms must be a whole number") == 0);
  }
  CHECK(r.d->intervalMs() == 5000);
  r.p.say("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"big-ok\",\"params\":{\"interval_ms\":8.64e7}}");
  run(*r.d, r.p, 20);
  CHECK(r.d->intervalMs() == 86400000u);
}

// ---------------------------------------------------------------- connect failures (robustness)

TEST(device_says_which_way_a_connect_failed) {
  struct Case {
    ConnectResult result;
    const char* says;
  } cases[] = {
      {ConnectResult::DnsFailed, "Could not look up the server's name \"127.0.0.1\""},
      {ConnectResult::Refused, "refused the connection: nothing listens on that port"},
      {ConnectResult::TimedOut, "No answer from 127.0.0.1:7000 within 5.0 s"},
      {ConnectResult::TlsFailed, "but TLS failed"},
      {ConnectResult::Failed, "Could not connect to 127.0.0.1:7000"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    Rig r;
    r.p.serverUp = false;
    r.p.failure = cases[i].result;
    run(*r.d, r.p, 20);
    CHECK(r.p.logged(cases[i].says));
    CHECK(r.p.logged("Next try in"));
    CHECK(r.p.lastConnectTimeoutMs == 5000);
  }
}

// ---------------------------------------------------------------- power-on state (robustness)

TEST(device_relay_power_on_state_off_on_and_last) {
  {
    DeviceConfig c = testConfig();
    c.powerOn = PowerOn::On;
    Rig r(c);
    CHECK(r.p.relay && r.d->relay());
    CHECK(r.p.logged("relay on (power-on state: on)"));
  }
  {
    Rig r;  // off, the default
    CHECK(!r.p.relay);
    CHECK(r.p.relayWrites == 1);
  }
  {
    DeviceConfig c = testConfig();
    c.powerOn = PowerOn::Last;
    Rig r(c);  // nothing kept yet: off
    CHECK(!r.p.relay);
    CHECK(r.p.logged("power-on state: last; none kept yet"));
    bringOnline(*r.d, r.p);
    r.p.say("{\"type\":\"fromservertonode\",\"action\":\"togglerele\",\"id\":\"t1\"}");
    run(*r.d, r.p, 20);
    CHECK(r.p.haveSaved && r.p.saved && r.p.saves == 1);
    r.p.say("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"t2\",\"params\":{\"relay\":true}}");
    run(*r.d, r.p, 20);
    CHECK(r.p.saves == 1);  // unchanged: no flash write
    r.p.say("{\"type\":\"fromservertonode\",\"action\":\"changesetting\",\"id\":\"t3\",\"params\":{\"relay\":false}}");
    run(*r.d, r.p, 20);
    CHECK(r.p.saves == 2 && !r.p.saved);
  }
  {
    DeviceConfig c = testConfig();
    c.powerOn = PowerOn::Last;
    FakePlatform p;
    p.haveSaved = true;
    p.saved = true;
    alignas(Device) static unsigned char storage[sizeof(Device)];
    Device* d = new (storage) Device(p, c);
    d->begin(8);
    CHECK(p.relay && d->relay() && p.relayWrites == 1);  // straight to on, never off first
    CHECK(p.saves == 0);
    CHECK(p.logged("relay on (power-on state: as before the restart)"));
    d->~Device();
  }
}

// ---------------------------------------------------------------- reboot timeout (robustness)

TEST(device_restarts_after_the_reboot_timeout_without_the_server) {
  DeviceConfig c = testConfig();
  c.rebootTimeoutMs = 15 * 60 * 1000;
  Rig r(c);
  r.p.now = 0xFFFFFF00u;  // and across the clock wrap
  r.d->begin(7);
  r.p.serverUp = false;
  run(*r.d, r.p, 15 * 60 * 1000 - 1000, 100);
  CHECK(r.p.restarts == 0);
  run(*r.d, r.p, 2000, 100);
  CHECK(r.p.restarts == 1);
  CHECK(r.p.logged("No connection to the server for 15.0 min: restarting the board"));

  // Online for an hour: no restart.
  Rig on(c);
  bringOnline(*on.d, on.p);
  for (int i = 0; i < 120; ++i) {
    on.p.say("{\"type\":\"pong\"}");
    run(*on.d, on.p, 30000, 100);
  }
  CHECK(on.p.restarts == 0);

  // Resting after "unauthorized" (a restart cannot fix a token): no restart either.
  DeviceConfig c2 = c;
  c2.rebootTimeoutMs = 60 * 1000;
  Rig rej(c2);
  run(*rej.d, rej.p, 20);
  rej.p.say("{\"type\":\"error\",\"error\":\"unauthorized\"}");
  run(*rej.d, rej.p, 10 * 60 * 1000, 100);
  CHECK(rej.d->state() == Device::State::Rejected);
  CHECK(rej.p.restarts == 0);
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
