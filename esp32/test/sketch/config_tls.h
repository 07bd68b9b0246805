// A config.h for the sketch harness (esp32/test/sketch_test.cpp): TLS, the
// server by name, its CA given (a made-up certificate: the stand-in
// WiFiClientSecure does not parse it).
#pragma once
#define WIFI_SSID "test-net"
#define WIFI_PASSWORD "test-pass"
#define SERVER_HOST "sockpit.lan"
#define SERVER_PORT 7443
#define DEVICE_ID "harness-tls"
#define DEVICE_TOKEN "harness-token"
#define SERVER_CA \
  "-----BEGIN CERTIFICATE-----\n" \
  "MIIBdDCCARqgAwIBAgIUUnVubmluZ0luVGhlSGFybmVzc09ubHkwCgYIKoZIzj0E\n" \
  "-----END CERTIFICATE-----\n"
#define SERVER_CA_SHA256 "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
#define HARNESS_CONFIG_TLS 1
