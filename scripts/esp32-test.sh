#!/usr/bin/env bash
# Builds the ESP32 firmware's host program, runs the core's unit tests, then
# the integration test against the real server (which must not skip itself).
# Needs g++, make, libcjson-dev and libmbedtls-dev (valgrind optional).
set -euo pipefail
cd "$(dirname "$0")/.."

make -C esp32 host test
if command -v valgrind >/dev/null 2>&1; then
  make -C esp32 valgrind >/dev/null && echo "valgrind: no leaks or memory errors"
fi
ESP32_HOST_REQUIRED=1 npx jest tests/esp32/host.int.test.ts
