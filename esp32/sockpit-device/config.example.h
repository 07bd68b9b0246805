// sockpit-device configuration.
// Copy this file to config.h (in this same folder) and fill in your values.
// config.h is ignored by git, so your Wi-Fi password and token stay private.

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

// The GPIO the relay module's IN pin is wired to.
#define RELAY_PIN 26
// Most cheap relay modules switch on when IN is pulled LOW. If yours clicks
// on at boot and off when the dashboard says "on", flip this to false.
#define RELAY_ACTIVE_LOW true

// Time between readings, in milliseconds (500 .. 86400000). The dashboard's
// changesetting command (interval_ms) can change it until the next reboot.
#define REPORT_INTERVAL_MS 5000
