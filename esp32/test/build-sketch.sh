#!/usr/bin/env bash
# Builds the Arduino sketch (sockpit-device.ino, unchanged) for the host
# against the stand-in Arduino headers in esp32/test/arduino/, with a given
# config.h, into a program that runs esp32/test/sketch_test.cpp.
#
#   esp32/test/build-sketch.sh VARIANT CONFIG_H OUT_DIR
#
# VARIANT is CHIP-CORE: CHIP one of esp32 s2 s3 c3 c6, CORE 2x (Arduino-ESP32
# 2.0.x, ESP-IDF 4.4, gnu++11) or 3x (Arduino-ESP32 3.x, ESP-IDF 5, gnu++17).
# The sketch folder is copied first, as the Arduino IDE does, so that the
# copy's config.h is the one every file sees. Prints the compiler's errors
# and exits non-zero when the sketch does not compile. SYNTAX_ONLY=1 only
# checks that the sketch compiles (no program).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
esp32="$(dirname "$here")"
variant="$1" config="$2" out="$3"
chip="${variant%-*}" core="${variant#*-}"

case "$chip" in
  esp32) target=CONFIG_IDF_TARGET_ESP32 ;;
  s2) target=CONFIG_IDF_TARGET_ESP32S2 ;;
  s3) target=CONFIG_IDF_TARGET_ESP32S3 ;;
  c3) target=CONFIG_IDF_TARGET_ESP32C3 ;;
  c6) target=CONFIG_IDF_TARGET_ESP32C6 ;;
  *) echo "build-sketch.sh: unknown chip $chip" >&2; exit 64 ;;
esac
case "$core" in
  2x) flags=(-std=gnu++11 -DFAKE_ARDUINO_MAJOR=2 -DFAKE_IDF_MAJOR=4) ;;
  3x) flags=(-std=gnu++17 -DFAKE_ARDUINO_MAJOR=3 -DFAKE_IDF_MAJOR=5 -I"$here/arduino/idf5") ;;
  *) echo "build-sketch.sh: unknown core $core" >&2; exit 64 ;;
esac

sketch="$out/sockpit-device"
rm -rf "$sketch"
mkdir -p "$sketch/src/core"
cp "$esp32/sockpit-device/sockpit-device.ino" "$sketch/"
cp "$esp32/sockpit-device/src/core/"*.h "$esp32/sockpit-device/src/core/"*.cpp "$sketch/src/core/"
cp "$config" "$sketch/config.h"

CXX="${CXX:-g++}"
if [ "${SYNTAX_ONLY:-}" = 1 ]; then
  exec "$CXX" "${flags[@]}" -D"$target"=1 -Wall -Wextra -Werror -Wno-unused-function -I"$here/arduino" -I"$sketch" \
    -fsyntax-only "$here/sketch_test.cpp"
fi
common=("${flags[@]}" -D"$target"=1 -DCONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU0=1
        -O0 -g -Wall -Wextra -Werror -Wno-unused-function -I"$here/arduino" -I"$sketch")
objs=()
for src in "$sketch/src/core/"*.cpp; do
  obj="$out/$(basename "$src" .cpp).o"
  "$CXX" "${common[@]}" -c "$src" -o "$obj"
  objs+=("$obj")
done
"$CXX" "${common[@]}" "$here/sketch_test.cpp" "${objs[@]}" -lcjson -lmbedcrypto -o "$out/sketch-tests"
