// A config.h for the sketch harness (esp32/test/sketch_test.cpp): the server
// by host name, every optional setting changed from its default.
#pragma once
#define WIFI_SSID "test-net"
#define WIFI_PASSWORD "test-pass"
#define SERVER_HOST "sockpit.lan"
#define SERVER_PORT 7000
#define DEVICE_ID "harness-1"
#define DEVICE_TOKEN "harness-token"
#define RELAY_ACTIVE_LOW true
#define REPORT_INTERVAL_MS 5000
#define POWER_ON_STATE POWER_ON_LAST
#define REBOOT_TIMEOUT_MS (10UL * 60UL * 1000UL)
#define WATCHDOG_TIMEOUT_S 90
// A size override that every translation unit must see (src/core/sockpit_config.h).
#define SOCKPIT_RESEND_SLOTS 8
#define HARNESS_CONFIG_NAME 1
