// The Arduino sketch itself (sockpit-device.ino, unchanged), run on the host
// against the stand-in Arduino headers in arduino/: the board layer's own
// behaviour, which the core's tests cannot see. Built by build-sketch.sh once
// per chip and core version (make -C esp32 test); each test runs in a fresh
// child process, so it starts from a board that was just powered on.
//
//   sketch-tests           all tests; the last line reads "N passed, M failed"
//   sketch-tests --smoke   setup() and a few seconds of loop(), log on stdout

#include "sockpit-device.ino"

#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace {

int g_failures = 0;

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      ++g_failures;                                                                   \
      fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);    \
    }                                                                                 \
  } while (0)

#define CHECK_LOGGED(text)                                                                        \
  do {                                                                                            \
    if (!logged(text)) {                                                                          \
      ++g_failures;                                                                               \
      fprintf(stderr, "    %s:%d: the log lacks \"%s\"; it reads:\n%s\n", __FILE__, __LINE__, text, \
              fake::board().serial.c_str());                                                      \
    }                                                                                             \
  } while (0)

bool logged(const char* text) { return fake::board().serial.find(text) != std::string::npos; }

int callIndex(const std::string& what) {
  const std::vector<std::string>& c = fake::board().calls;
  for (size_t i = 0; i < c.size(); ++i)
    if (c[i] == what) return static_cast<int>(i);
  return -1;
}

// Runs loop() (5 ms each, its own delay) until ms have passed on the fake clock.
void runFor(uint32_t ms) {
  const uint32_t start = fake::board().now;
  while (fake::board().now - start < ms) loop();
}

void wifiDisconnected(int reason) {
  fake::radio().status = WL_DISCONNECTED;
  fake::radio().onDisconnected(ARDUINO_EVENT_WIFI_STA_DISCONNECTED, reason);
}

void serverSays(const std::string& json) { fake::net().inbox += json + "\n"; }  // plain JSON is allowed

const int kRelayOnLevel = RELAY_ACTIVE_LOW ? LOW : HIGH;

// ---------------------------------------------------------------- tests

void wifi_storage_is_chosen_before_the_first_mode_call() {
  setup();
  const int persistent = callIndex("persistent(false)");
  const int mode = callIndex("mode(1)");
  CHECK(persistent >= 0 && mode >= 0 && persistent < mode);
  CHECK(fake::radio().storageChosen && !fake::radio().storageInFlash);  // no flash write per boot
  CHECK(callIndex("setAutoReconnect(false)") > mode);
  CHECK(fake::radio().disconnectEventId == ARDUINO_EVENT_WIFI_STA_DISCONNECTED);
}

void relay_pin_defaults_per_chip() {
#if defined(CONFIG_IDF_TARGET_ESP32)
  CHECK(RELAY_PIN == 26);
#else
  CHECK(RELAY_PIN == 4);  // S2, S3 and C3: GPIO 26 is flash/PSRAM or missing
#endif
  setup();
  CHECK(fake::board().pinModes[RELAY_PIN] == OUTPUT);
  CHECK_LOGGED("Relay on GPIO");
}

void watchdog_registers_the_loop_and_is_fed() {
#if FAKE_IDF_MAJOR >= 5
  fake::wdt().initialized = true;  // Arduino-ESP32 3.x starts it at boot
#endif
  setup();
  const fake::Wdt& w = fake::wdt();
  CHECK(w.subscribed);
  CHECK(w.timeoutMs == WATCHDOG_TIMEOUT_S * 1000u);
  CHECK(w.panic);
#if FAKE_IDF_MAJOR >= 5
  CHECK(w.reconfigures == 1 && w.inits == 0);
  CHECK(w.idleMask == 1);  // the idle task it watched (CPU0) stays watched
#else
  CHECK(w.inits == 1);
#endif
  runFor(1000);
  CHECK(w.resets >= 150);
  CHECK(w.resetsUnsubscribed == 0);
  CHECK_LOGGED("Watchdog on: the board restarts if the loop hangs");
}

void watchdog_is_started_when_the_core_did_not() {
  fake::wdt().initialized = false;
  setup();
  CHECK(fake::wdt().subscribed && fake::wdt().inits == 1);
  CHECK(fake::wdt().timeoutMs == WATCHDOG_TIMEOUT_S * 1000u);
}

void wifi_wrong_password_is_named() {
  setup();
  runFor(100);
  CHECK(fake::radio().begins == 1);
  wifiDisconnected(WIFI_REASON_4WAY_HANDSHAKE_TIMEOUT);
  runFor(100);  // a clear answer: no need to wait out the 15 s
  CHECK_LOGGED("Wi-Fi failed: the router did not accept our key (wrong WIFI_PASSWORD?) (reason 15). Next try in");
  CHECK(!logged("connection lost"));
  runFor(2000);
  CHECK(fake::radio().begins == 2);
  wifiDisconnected(WIFI_REASON_AUTH_FAIL);
  runFor(100);
  CHECK_LOGGED("(wrong WIFI_PASSWORD?) (reason 202)");
}

void wifi_network_not_found_is_named() {
  setup();
  runFor(100);
  wifiDisconnected(WIFI_REASON_NO_AP_FOUND);
  runFor(100);
  CHECK_LOGGED("Wi-Fi failed: network \"test-net\" not found (name right? 2.4 GHz? in range?) (reason 201)");
}

void wifi_lost_after_connecting_says_why() {
  setup();
  runFor(100);
  fake::radio().status = WL_CONNECTED;
  runFor(100);
  CHECK_LOGGED("Wi-Fi connected: IP address 192.168.1.57, signal -58 dBm.");
  wifiDisconnected(WIFI_REASON_BEACON_TIMEOUT);
  runFor(100);
  CHECK_LOGGED("Wi-Fi connection lost: the router stopped answering (switched off, or out of range?) (reason 200); reconnecting.");
  CHECK(fake::radio().begins == 2);  // straight back to trying
}

void wifi_silent_attempt_times_out_after_15_s() {
  setup();
  runFor(14000);
  CHECK(!logged("Wi-Fi failed"));
  runFor(1100);
  CHECK_LOGGED("Wi-Fi failed: not connected after 15 s, and no answer from the router (out of range?).");
  CHECK(callIndex("disconnect") >= 0);
}

void wifi_keeps_retrying_across_the_clock_wrap() {
  fake::board().now = 0xFFFFFFFFu - 20000;
  setup();
  runFor(5 * 60 * 1000);  // 5 minutes: attempts every 15 s + backoff (at most 30 s)
  CHECK(fake::radio().begins >= 7);
  CHECK(fake::board().now < 0x80000000u);  // it did wrap
  const int before = fake::radio().begins;
  runFor(50 * 1000);
  CHECK(fake::radio().begins > before);
}

void server_name_lookups_say_what_failed() {
  setup();
  fake::radio().status = WL_CONNECTED;
  runFor(100);
#if defined(HARNESS_CONFIG_NAME) || defined(HARNESS_CONFIG_TLS)
  CHECK(fake::net().lookups == 1);
  CHECK_LOGGED("Could not look up the server's name \"sockpit.lan\" (the DNS server does not know it)");
  fake::net().dnsMs = 15000;
  const int resetsBefore = fake::wdt().resets;
  runFor(2000);
  CHECK_LOGGED("(no answer from the DNS server in 15.0 s)");
  CHECK(fake::wdt().resets > resetsBefore);
  fake::net().names["sockpit.lan"] = 0xC0A8010A;
  fake::net().dnsMs = 5;
  runFor(5000);
  CHECK(fake::net().connects >= 1);
#if !SOCKPIT_TLS
  CHECK(fake::net().lastIp == static_cast<uint32_t>(IPAddress(192, 168, 1, 10)));
#endif
#else
  CHECK(fake::net().lookups == 0);  // an address needs no lookup
  CHECK(fake::net().connects == 1);
#endif
}

void connect_failures_are_told_apart() {
  fake::net().names["sockpit.lan"] = 0xC0A8010A;
  setup();
  fake::radio().status = WL_CONNECTED;
  fake::net().connectMode = 'r';
  runFor(100);
  CHECK_LOGGED("refused the connection: nothing listens on that port.");
  CHECK(fake::net().lastTimeout == CONNECT_TIMEOUT_MS);
  fake::net().connectMode = 't';
  runFor(3000);
  char expected[120];
  snprintf(expected, sizeof expected, "No answer from %s:%d within 5.0 s: wrong address, machine switched off, or a firewall",
           SERVER_HOST, SERVER_PORT);
  CHECK_LOGGED(expected);
}

void online_hello_goes_out_in_base64() {
  fake::net().names["sockpit.lan"] = 0xC0A8010A;
  setup();
  fake::radio().status = WL_CONNECTED;
  runFor(100);
  CHECK(fake::net().open);
  const std::string sent = fake::net().sent;
  const size_t nl = sent.find('\n');
  CHECK(nl != std::string::npos);
  if (nl != std::string::npos) {
    std::vector<char> json(nl + 1);
    size_t n = 0;
    CHECK(sockpit::b64Decode(sent.data(), nl, json.data(), json.size(), &n));
    CHECK(std::string(json.data(), n).find("\"token\":\"harness-token\"") != std::string::npos);
  }
  serverSays("{\"type\":\"welcome\",\"device\":\"x\",\"time\":1}");
  runFor(100);
  CHECK_LOGGED("The server welcomed us: online.");
  CHECK(device.state() == sockpit::Device::State::Online);
}

void restarts_after_the_reboot_timeout() {
  fake::net().names["sockpit.lan"] = 0xC0A8010A;
  setup();
  fake::radio().status = WL_CONNECTED;
  fake::net().connectMode = 'r';
  runFor(REBOOT_TIMEOUT_MS - 2000);
  CHECK(fake::board().restarts == 0);
  runFor(4000);
  CHECK(fake::board().restarts == 1);
  CHECK_LOGGED("No connection to the server for");
}

void relay_power_on_state() {
#if defined(HARNESS_CONFIG_NAME)
  fake::nvs()["sockpit/relay"] = 1;  // kept "on" before the restart (POWER_ON_LAST)
#endif
  setup();
  const std::vector<std::pair<int, int> >& w = fake::board().pinWrites;
  CHECK(!w.empty());
  if (w.empty()) return;
  CHECK(w[0].first == RELAY_PIN);
#if defined(HARNESS_CONFIG_NAME)
  CHECK(w[0].second == kRelayOnLevel);  // straight to on: never off first
  CHECK(device.relay());
  fake::net().names["sockpit.lan"] = 0xC0A8010A;
  fake::radio().status = WL_CONNECTED;
  runFor(100);
  serverSays("{\"type\":\"welcome\"}");
  serverSays("{\"type\":\"fromservertonode\",\"action\":\"togglerele\",\"id\":\"c1\"}");
  runFor(100);
  CHECK(!device.relay());
  CHECK(fake::nvs()["sockpit/relay"] == 0);  // kept for the next power-on
#else
  CHECK(w[0].second != kRelayOnLevel);  // POWER_ON_STATE defaults to off
  CHECK(fake::nvs().count("sockpit/relay") == 0);
#endif
}

void every_file_sees_the_same_buffer_sizes() {
  CHECK(sockpit::layoutMatches());
#if defined(HARNESS_CONFIG_NAME)
  CHECK(sockpit::ResendBuffer::kSlots == 8);  // set in config.h
  CHECK(sockpit::coreLayout().resendSlots == 8);  // and device_core.cpp saw it too
#else
  CHECK(sockpit::coreLayout().resendSlots == 32);
#endif
  setup();
  CHECK(!logged("Build problem"));
}

void log_lines_take_nothing_from_the_heap() {
  setup();
  runFor(60 * 1000);  // Wi-Fi attempts and offline readings: long lines
  CHECK(logged("Offline: kept for later"));
  CHECK(fake::board().heapBlocksForLogs == 0);
}

void the_reset_reason_is_logged() {
  fake::board().resetReason = ESP_RST_TASK_WDT;
  setup();
  CHECK_LOGGED("Last reset: the watchdog (the loop hung).");
}

#if SOCKPIT_TLS
void tls_only_with_the_ca_and_the_servers_name() {
  fake::net().names["sockpit.lan"] = 0xC0A8010A;
  setup();
  CHECK(fake::net().ca != nullptr && !strcmp(fake::net().ca, SERVER_CA));
  CHECK(fake::net().handshakeS == 10);
  CHECK_LOGGED("TLS only: the server must show a certificate for \"sockpit.lan\" from the CA with SHA-256 AB:CD:EF:01");
  fake::radio().status = WL_CONNECTED;
  runFor(100);
  CHECK(fake::net().tlsConnects == 1);
  CHECK(fake::net().tlsHost == SERVER_HOST);  // the name the certificate must carry
  CHECK(fake::net().plainConnects == 0);
  CHECK_LOGGED("Connecting to the sockpit server at sockpit.lan:7443 (TLS) ...");
  CHECK_LOGGED("Connected over TLS, the server's certificate checked. Saying hello");
  CHECK(fake::net().sent.find('\n') != std::string::npos);
}

void tls_refused_certificate_sends_nothing() {
  fake::net().names["sockpit.lan"] = 0xC0A8010A;
  fake::net().tlsError = -0x2700;
  setup();
  fake::radio().status = WL_CONNECTED;
  runFor(3000);
  CHECK(fake::net().tlsConnects >= 1);
  CHECK_LOGGED("Reached sockpit.lan:7443, but TLS failed (the server's certificate was refused: not from this CA, or not for this name)");
  CHECK(fake::net().sent.empty());
  CHECK(fake::net().plainConnects == 0);
  CHECK(!logged("Saying hello"));
}

void tls_plain_server_on_the_port_is_named() {
  fake::net().names["sockpit.lan"] = 0xC0A8010A;
  fake::net().tlsError = -0x7200;
  setup();
  fake::radio().status = WL_CONNECTED;
  runFor(100);
  CHECK_LOGGED("TLS failed (not a TLS server; is SERVER_PORT the TLS port?)");
  CHECK(fake::net().sent.empty());
}
#endif

struct Test {
  const char* name;
  void (*fn)();
};

const Test kTests[] = {
    {"wifi_storage_is_chosen_before_the_first_mode_call", wifi_storage_is_chosen_before_the_first_mode_call},
    {"relay_pin_defaults_per_chip", relay_pin_defaults_per_chip},
    {"watchdog_registers_the_loop_and_is_fed", watchdog_registers_the_loop_and_is_fed},
    {"watchdog_is_started_when_the_core_did_not", watchdog_is_started_when_the_core_did_not},
    {"wifi_wrong_password_is_named", wifi_wrong_password_is_named},
    {"wifi_network_not_found_is_named", wifi_network_not_found_is_named},
    {"wifi_lost_after_connecting_says_why", wifi_lost_after_connecting_says_why},
    {"wifi_silent_attempt_times_out_after_15_s", wifi_silent_attempt_times_out_after_15_s},
    {"wifi_keeps_retrying_across_the_clock_wrap", wifi_keeps_retrying_across_the_clock_wrap},
    {"server_name_lookups_say_what_failed", server_name_lookups_say_what_failed},
    {"connect_failures_are_told_apart", connect_failures_are_told_apart},
    {"online_hello_goes_out_in_base64", online_hello_goes_out_in_base64},
    {"restarts_after_the_reboot_timeout", restarts_after_the_reboot_timeout},
    {"relay_power_on_state", relay_power_on_state},
    {"every_file_sees_the_same_buffer_sizes", every_file_sees_the_same_buffer_sizes},
    {"log_lines_take_nothing_from_the_heap", log_lines_take_nothing_from_the_heap},
    {"the_reset_reason_is_logged", the_reset_reason_is_logged},
#if SOCKPIT_TLS
    {"tls_only_with_the_ca_and_the_servers_name", tls_only_with_the_ca_and_the_servers_name},
    {"tls_refused_certificate_sends_nothing", tls_refused_certificate_sends_nothing},
    {"tls_plain_server_on_the_port_is_named", tls_plain_server_on_the_port_is_named},
#endif
};

int smoke() {
  setup();
  fake::radio().status = WL_CONNECTED;
  fake::net().connectMode = 'r';
  runFor(3000);
  fputs(fake::board().serial.c_str(), stdout);
  return logged("starting (firmware") && !logged("Build problem") ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && !strcmp(argv[1], "--smoke")) return smoke();
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof kTests / sizeof kTests[0]; ++i) {
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
      kTests[i].fn();
      _exit(g_failures == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    printf("%s %s\n", ok ? "ok  " : "FAIL", kTests[i].name);
    (ok ? passed : failed)++;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
