#!/usr/bin/env bash
# Builds the ESP32 firmware's host program, runs the core's unit tests and the
# sketch's tests (make test), then the jest tests in tests/esp32/ (which must
# not skip themselves): the host program against the real server and a fake
# one, and the dashboard's config.h compiled with the sketch.
# Needs g++, make, libcjson-dev and libmbedtls-dev (valgrind optional).
set -euo pipefail
cd "$(dirname "$0")/.."

make -C esp32 host test
if command -v valgrind >/dev/null 2>&1; then
  make -C esp32 valgrind >/dev/null && echo "valgrind: no leaks or memory errors"
fi
ESP32_HOST_REQUIRED=1 npx jest tests/esp32
