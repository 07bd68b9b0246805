// sockpit-device configuration.
// Copy this file to config.h (in this same folder) and fill in your values.
// config.h is ignored by git, so your Wi-Fi password and token stay private.
// The dashboard's "Add a device" shows a config.h like this one with the
// server and the device already filled in.
//
// Required: WIFI_SSID, WIFI_PASSWORD, SERVER_HOST, SERVER_PORT, DEVICE_ID and
// DEVICE_TOKEN. Every other setting has a default (the value shown) and may
// be left out.

#pragma once

// Your Wi-Fi network (2.4 GHz: the ESP32 cannot join 5 GHz networks).
#define WIFI_SSID "your-wifi-name"
#define WIFI_PASSWORD "your-wifi-password"

// The computer running the sockpit server, and its device port (DEVICE_PORT,
// 7000 unless changed). Use its LAN address, not "localhost".
#define SERVER_HOST "192.168.1.10"
#define SERVER_PORT 7000

// This device's id and token. Create them on the server with
//   npx sockpit device add my-relay
// (or in the dashboard, as an admin). The token is shown only once.
#define DEVICE_ID "my-relay"
#define DEVICE_TOKEN "paste-the-token-here"

// ---- TLS (optional, and recommended): the device then speaks only TLS, and
// the token never crosses the network in clear text. Paste the server's CA
// (`npx sockpit tls ca` prints it; the dashboard shows it with its
// fingerprint), one line per string, and set SERVER_PORT to the server's
// DEVICE_TLS_PORT (7443 unless changed). SERVER_HOST must be a name in the
// server's certificate (esp32/README.md, "TLS").
/*
#define SERVER_CA_SHA256 "AB:CD:...:EF"
#define SERVER_CA \
  "-----BEGIN CERTIFICATE-----\n" \
  "MIIB...\n" \
  "-----END CERTIFICATE-----\n"
*/
// Longest wait for the TLS handshake, in seconds.
// #define TLS_HANDSHAKE_TIMEOUT_S 10

// ---- Optional settings.

// The GPIO the relay module's IN pin is wired to. Left unset, it is the
// chip's default: 26 on the ESP32, 4 on the ESP32-S2, -S3 and -C3 (the pin
// table in esp32/README.md). A pin that belongs to the flash is refused when
// compiling. A plain number.
// #define RELAY_PIN 26

// Most cheap relay modules switch on when IN is pulled LOW. If yours clicks
// on at boot and off when the dashboard says "on", flip this to false.
#define RELAY_ACTIVE_LOW true

// Time between readings, in milliseconds (500 .. 86400000). The dashboard's
// changesetting command (interval_ms) can change it until the next reboot.
#define REPORT_INTERVAL_MS 5000

// The relay's state when the board powers on, as Tasmota's PowerOnState:
// POWER_ON_OFF, POWER_ON_ON, or POWER_ON_LAST (as it was before the restart,
// kept in flash and written only when it changes).
#define POWER_ON_STATE POWER_ON_OFF

// The last resort, as ESPHome's reboot_timeout: no connection to the server
// for this long, and the board restarts (0: never). Unconfirmed readings,
// kept in RAM, are lost with the restart.
#define REBOOT_TIMEOUT_MS (30UL * 60UL * 1000UL)

// The task watchdog restarts the board when loop() hangs this long (0: off;
// at least 45, since a name lookup may block for 31 s on Arduino-ESP32 2.x).
#define WATCHDOG_TIMEOUT_S 60

// Longest wait for the server to accept a TCP connection, in milliseconds.
#define CONNECT_TIMEOUT_MS 5000

// Advanced, for RAM: readings kept until the server confirms them (default
// 32, about 280 bytes each) and the longest line taken from the server
// (default 16384, the server's own limit). Every file of the sketch sees these
// (src/core/sockpit_config.h).
// #define SOCKPIT_RESEND_SLOTS 32
// #define SOCKPIT_MAX_LINE 16384
