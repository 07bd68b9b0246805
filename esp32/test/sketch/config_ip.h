// A config.h for the sketch harness (esp32/test/sketch_test.cpp): the server
// by address, only the required settings (every optional one at its default).
#pragma once
#define WIFI_SSID "test-net"
#define WIFI_PASSWORD "test-pass"
#define SERVER_HOST "192.168.1.10"
#define SERVER_PORT 7000
#define DEVICE_ID "harness-2"
#define DEVICE_TOKEN "harness-token"
#define HARNESS_CONFIG_IP 1
